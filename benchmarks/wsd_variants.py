"""Word sense disambiguation with all-MiniLM-L6-v2 gloss embeddings: every variant on SemEval-2007
(the framework's dev set, which alone picks the variant) and Senseval-2, against WordNet's first
sense (55.2 / 66.8). Variants: the hidden states summed (layers), standardization of the vectors
("none"; "center": minus the senses' mean; "z": z-scores with the senses' statistics; "z-each":
senses with theirs, instances with the data set's), a context-gloss sentence similarity (beta x the
cosine of the mean-pooled sentence embeddings), the SemCor prior (weight x the sense's share of its
lemma's counts, add-one, or its log), one sense per discourse. fp32. Writes
benchmarks/results/wsd-variants.json (F1 of every variant on both sets).

    python benchmarks/wsd_variants.py      # about 10 minutes on 2 cores
"""
import itertools, json, sys, numpy as np
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, machine, minilm_dir
import bertkit
from bertkit.analysis.wsd import (candidates, gloss_words, read_instances, read_key, score, sense_counts, wordnet)
from bertkit.analysis.vectors import word_vectors
from bertkit import embed
wn, counts = wordnet(DATA / "wordnet3"), sense_counts(DATA / "wordnet3")
enc, tok = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
F = DATA / "wsd_raganato" / "Evaluation_Datasets"
sets = {n: (read_instances(F / n / f"{n}.data.xml"), read_key(F / n / f"{n}.gold.key.txt")) for n in ("semeval2007", "senseval2")}
keys = sorted({k for ins, _ in sets.values() for i in ins for k in candidates(wn, i.lemma, i.pos)})
print(len(keys), "senses", flush=True)
gl = [gloss_words(wn, k) for k in keys]
L = 7
f = word_vectors(enc, tok, [w for w, _ in gl], layers=list(range(L)), combine="concat", split_into_words=True, precision="fp32", progress=False)
SV = np.stack([x.vectors[:n].mean(0).reshape(L, -1) for x, (_, n) in zip(f, gl)])  # (S, L, D)
SS = embed(enc, tok, [" ".join(w) for w, _ in gl], normalize=True, precision="fp32", progress=False)
row = {k: i for i, k in enumerate(keys)}
inst = {}
for n, (ins, gold) in sets.items():
    sents = list(dict.fromkeys(i.words for i in ins))
    wv = dict(zip(sents, word_vectors(enc, tok, [list(s) for s in sents], layers=list(range(L)), combine="concat", split_into_words=True, precision="fp32", progress=False)))
    se = dict(zip(sents, embed(enc, tok, [" ".join(s) for s in sents], normalize=True, precision="fp32", progress=False)))
    inst[n] = {}
    for i in ins:
        s = wv[i.words]
        if i.index in s.positions:
            inst[n][i.id] = (s.vectors[s.positions.index(i.index)].reshape(L, -1), se[i.words])
print("encoded", flush=True)
LAYERS = {"6": [6], "5+6": [5, 6], "4-6": [4, 5, 6], "3-6": [3, 4, 5, 6], "5": [5], "4": [4], "3": [3], "all": list(range(7))}
def unit(x): return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
results = {}
for lname, ls in LAYERS.items():
    raw_s = SV[:, ls].sum(1)
    raw_i = {n: {k: v[ls].sum(0) for k, (v, _) in inst[n].items()} for n in sets}
    mu, sd = raw_s.mean(0), np.maximum(raw_s.std(0), 1e-6)  # layer 6 has constant dimensions
    for z in ("none", "center", "z", "z-each"):
        if z == "none": sv = unit(raw_s); fi = {n: (lambda x: unit(x)) for n in sets}
        elif z == "center": sv = unit(raw_s - mu); fi = {n: (lambda x: unit(x - mu)) for n in sets}
        elif z == "z": sv = unit((raw_s - mu) / sd); fi = {n: (lambda x: unit((x - mu) / sd)) for n in sets}
        else:
            sv = unit((raw_s - mu) / sd); fi = {}
            for n in sets:
                M = np.stack(list(raw_i[n].values())); m2, s2 = M.mean(0), np.maximum(M.std(0), 1e-6)
                fi[n] = (lambda x, m2=m2, s2=s2: unit((x - m2) / s2))
        for n, (ins, gold) in sets.items():
            cache = []
            for i in ins:
                ks = candidates(wn, i.lemma, i.pos)
                if not ks or i.id not in inst[n]:
                    cache.append((i, ks, None)); continue
                r = [row[k] for k in ks]
                c = np.array([counts.get(k, 0) + 1.0 for k in ks])
                cache.append((i, ks, (sv[r] @ fi[n](raw_i[n][i.id]), SS[r] @ inst[n][i.id][1], c / c.sum(), np.log(c / c.sum()))))
            for beta, prior, form, ospd in itertools.product((0, 0.5, 1.0), (0, 0.1, 0.2, 0.3, 0.5, 1), ("share", "log"), (False, True)):
                scored, answers = {}, {}
                for i, ks, feats in cache:
                    if feats is None:
                        if ks: answers[i.id] = ks[0]
                        continue
                    cw, cs, share, logs = feats
                    scored[i.id] = (ks, cw + beta * cs + prior * (share if form == "share" else logs))
                if ospd:
                    groups = {}
                    for i, ks, feats in cache:
                        if i.id in scored: groups.setdefault((i.document, i.lemma, i.pos), []).append(i.id)
                    for ids in groups.values():
                        tot = sum(scored[j][1] for j in ids)
                        answers.update({j: scored[ids[0]][0][int(tot.argmax())] for j in ids})
                else:
                    answers.update({j: ks[int(sc.argmax())] for j, (ks, sc) in scored.items()})
                results[(lname, z, beta, prior, form, ospd, n)] = score(answers, gold)["f1"]
    print(lname, "done", flush=True)
cfgs = sorted({k[:6] for k in results})
best = max(cfgs, key=lambda c: (results[c + ("semeval2007",)], ))
print("best on SE07", best, results[best + ("semeval2007",)], "-> SE2", results[best + ("senseval2",)])
top = sorted(cfgs, key=lambda c: -results[c + ("semeval2007",)])[:15]
for c in top: print(c, round(100*results[c + ("semeval2007",)], 1), round(100*results[c + ("senseval2",)], 1))
print("gloss only per layer:", {(l, z): (round(100*results[(l,z,0,0,"share",False,"semeval2007")],1), round(100*results[(l,z,0,0,"share",False,"senseval2")],1)) for l in LAYERS for z in ("none","center","z","z-each")})
print("oracle SE2 best:", max(results[c + ("senseval2",)] for c in cfgs))
(ROOT / "benchmarks" / "results" / "wsd-variants.json").write_text(json.dumps(
    {"machine": machine(), "picked_on_semeval2007": "|".join(map(str, best)),
     "senseval2_f1_of_picked": results[best + ("senseval2",)],
     "f1": {"|".join(map(str, k)): v for k, v in results.items()}}, indent=1) + "\n")
