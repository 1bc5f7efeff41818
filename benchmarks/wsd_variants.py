"""Word sense disambiguation with all-MiniLM-L6-v2: every combination of `bertkit analyze wsd`'s
options, scored on SemEval-2007 (the framework's dev set, which alone picks the variant) and on
Senseval-2, against WordNet's first sense (55.2 / 66.8). Options: the hidden states summed
(`--layers`: the last, the last four as LMMS sums them, all), `--standardize`, the weight of the
WordNet example embeddings (`--examples`, 0 = gloss embeddings alone), the SemCor prior (`--prior`),
`--one-sense-per-discourse`. Each variant runs `disambiguate`, the command's own code, so a row of
the table is what the command prints. fp32. Sense embeddings come from (and go to) the command's
cache. Writes benchmarks/results/wsd-variants.json and the table in BENCHMARKS.md.

    python benchmarks/wsd_variants.py      # about 10 minutes on 2 cores the first time
"""
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, minilm_dir, write_results  # noqa: E402

import bertkit  # noqa: E402
from bertkit.analysis.wsd import (SenseVectors, disambiguate, first_sense, instance_vectors, read_instances,  # noqa: E402
                                  read_key, score, score_by_pos, sense_counts, wordnet)

LAYERS = {"-1": [6], "3,4,5,6": [3, 4, 5, 6], "0,1,2,3,4,5,6": list(range(7))}
WEIGHTS, PRIORS = (0, 0.5, 1, 2), (0, 0.1, 0.2, 0.3, 0.5, 1)
SETS = ("semeval2007", "senseval2")
CACHE = Path.home() / ".cache" / "bertkit" / "sense-vectors"


def main() -> None:
    wn, counts = wordnet(DATA / "wordnet3"), sense_counts(DATA / "wordnet3")
    model, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    folder = DATA / "wsd_raganato" / "Evaluation_Datasets"
    sets = {n: (read_instances(folder / n / f"{n}.data.xml"), read_key(folder / n / f"{n}.gold.key.txt"))
            for n in SETS}
    f1, by_pos = {}, {}
    for n, (instances, gold) in sets.items():
        answers, _ = first_sense(wn, instances)
        f1[("first sense", n)] = score(answers, gold)["f1"]
        by_pos[("first sense", n)] = score_by_pos(answers, gold, instances)
    for layers_name, layers in LAYERS.items():
        glosses = SenseVectors(model, tokenizer, wn, CACHE, layers, precision="fp32")
        examples = SenseVectors(model, tokenizer, wn, CACHE, layers, precision="fp32", source="examples")
        for n, (instances, gold) in sets.items():
            vectors = instance_vectors(model, tokenizer, instances, layers, "fp32")
            for standardize, weight, prior, discourse in itertools.product((False, True), WEIGHTS, PRIORS, (False, True)):
                answers, _ = disambiguate(wn, instances, vectors, glosses, counts, prior, discourse, standardize,
                                          examples if weight else None, weight)
                variant = (layers_name, standardize, weight, prior, discourse)
                f1[variant + (n,)] = score(answers, gold)["f1"]
                by_pos[variant + (n,)] = score_by_pos(answers, gold, instances)
        print("layers", layers_name, "done", flush=True)
    variants = sorted({k[:-1] for k in f1 if len(k) == 6})

    def on_dev(v: tuple) -> tuple:
        """SemEval-2007 F1, then fewer options turned on: equals on the dev set go to the simpler variant."""
        layers, standardize, weight, prior, discourse = v
        return f1[v + ("semeval2007",)], -sum([layers != "-1", standardize, weight > 0, prior > 0, discourse])

    picked = max(variants, key=on_dev)  # then the first in sorted order
    tied = [v for v in variants if f1[v + ("semeval2007",)] == f1[picked + ("semeval2007",)]]

    def row(name: str, v: tuple) -> str:
        pos = by_pos[v + ("senseval2",)]
        return (f"| {name} | {100 * f1[v + ('semeval2007',)]:.1f} | {100 * f1[v + ('senseval2',)]:.1f} | "
                + " / ".join(f"{100 * pos[p]['f1']:.1f}" for p in ("NOUN", "VERB", "ADJ", "ADV")) + " |")

    def best(**fixed) -> tuple:
        names = ("layers", "standardize", "weight", "prior", "discourse")
        chosen = [v for v in variants if all(v[names.index(k)] == x for k, x in fixed.items())]
        return max(chosen, key=on_dev)

    def options(v: tuple) -> str:
        layers, standardize, weight, prior, discourse = v
        return " ".join([f"--layers {layers}"] + ["--standardize"] * standardize + [f"--examples {weight:g}"] * bool(weight)
                        + [f"--prior {prior:g}"] * bool(prior) + ["--one-sense-per-discourse"] * discourse)

    lines = [f"all-MiniLM-L6-v2, fp32; {len(variants)} variants of `bertkit analyze wsd --method gloss` (layers "
             f"{', '.join(LAYERS)}; --standardize or not; --examples {', '.join(map(str, WEIGHTS))}; --prior "
             f"{', '.join(map(str, PRIORS))}; one sense per discourse or not); each row the best on SemEval-2007 "
             "under its constraint (equals: fewer options); F1 x 100, Senseval-2 per part of speech.", "",
             "| variant | SemEval-2007 | Senseval-2 | Senseval-2 nouns / verbs / adjectives / adverbs |",
             "|---|---:|---:|---|", row("WordNet first sense", ("first sense",))]
    for name, v in [("gloss embeddings only", best(weight=0, prior=0, discourse=False)),
                    ("gloss + example embeddings", best(prior=0, discourse=False)),
                    ("gloss + prior", best(weight=0, discourse=False)),
                    ("gloss + prior + one sense per discourse", best(weight=0, discourse=True)),
                    ("gloss + examples + prior", best(discourse=False)),
                    ("gloss + examples + prior + one sense per discourse", best(discourse=True)),
                    ("**best on SemEval-2007**", picked)]:
        lines.append(row(f"{name}: `{options(v)}`", v))
    first = f1[("first sense", "senseval2")]
    gain = 100 * (f1[picked + ("senseval2",)] - first)
    top = sorted(variants, key=on_dev, reverse=True)[:12]
    on_test = sorted(100 * f1[v + ("senseval2",)] for v in top)
    lines += ["", f"Picked on SemEval-2007: `{options(picked)}`; Senseval-2 {gain:+.2f} F1 over the first sense "
              f"(target: +1.0). {len(tied)} variants share its SemEval-2007 F1 (equals go to the one with fewer "
              "options); their Senseval-2 gains: "
              + ", ".join(f"{100 * (f1[v + ('senseval2',)] - first):+.2f} (`{options(v)}`)" for v in tied)
              + f". The 12 best variants on SemEval-2007 give Senseval-2 {on_test[0]:.1f} to {on_test[-1]:.1f} "
              f"(median {statistics.median(on_test):.2f}). The best variant on Senseval-2 itself "
              f"({100 * max(f1[v + ('senseval2',)] for v in variants):.1f}) is tuned on the test set: not a result."]
    table = "\n".join(lines)
    print(table)
    write_results("wsd-variants", "python benchmarks/wsd_variants.py",
                  {"picked_on_semeval2007": options(picked), "senseval2_gain_over_first_sense": gain,
                   "tied_on_semeval2007": [options(v) for v in tied],
                   "f1": {"|".join(map(str, k)): v for k, v in f1.items()}}, table)


if __name__ == "__main__":
    main()
