"""The learned metric, BLEURT's recipe on bertkit: synthetic pairs to pre-train on, and the STS-B table.

A learned metric is a regression cross-encoder on (reference, candidate) pairs fine-tuned on human
ratings (STS-B train, `bertkit finetune regress`). BLEURT first pre-trains it on synthetic pairs:
perturbed sentences (mask-and-fill, word drops; swaps here in place of back-translation) labelled
by automatic signals. Here the label is 5 x the mean of sentence BLEU / 100 (sacrebleu) and
BERTScore F1 rescaled to its baseline and clipped to [0, 1] (all-MiniLM-L6-v2, its default layer),
on STS-B's 0-5 scale, so the regression head moves from one task to the next unchanged.

    python benchmarks/learned_metric.py pairs --mlm runs/bert-mini [--sentences 20000]
    python benchmarks/finetune_runs.py stsb stsb-1000 synthetic stsb-synthetic stsb-1000-synthetic
    python benchmarks/learned_metric.py table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, minilm_dir  # noqa: E402

import bertkit  # noqa: E402
from bertkit.bertscore import bertscore, compute_baseline, default_layer, rescale  # noqa: E402
from bertkit.data.corpus import paragraphs, train_sentence_splitter  # noqa: E402
from bertkit.perturb import perturbed_pairs  # noqa: E402
from bertkit.textfiles import text_files  # noqa: E402

SPLITS = ROOT / "runs" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "finetune-runs.json"  # written by benchmarks/finetune_runs.py
LEARNED = {"stsb": "learned, STS-B train (5,749 ratings)", "stsb-1000": "learned, 1,000 STS-B ratings",
           "synthetic": "learned, synthetic pairs only (no ratings)",
           "stsb-synthetic": "learned, synthetic pre-training + STS-B train",
           "stsb-1000-synthetic": "learned, synthetic pre-training + 1,000 ratings"}


def gutenberg_sentences(count: int, seed: int) -> list[str]:
    """`count` sentences of 6 to 40 words drawn at random from the Gutenberg books, Punkt-split."""
    files = text_files(DATA / "gutenberg_nltk")
    splitter = train_sentence_splitter(files, "replace")
    sentences = [s for f in files for _, paragraph in paragraphs(f, "replace") for s in splitter.tokenize(paragraph)
                 if 6 <= len(s.split()) <= 40 and "\t" not in s]
    picked = np.random.default_rng(seed).choice(len(sentences), size=min(count, len(sentences)), replace=False)
    return [sentences[i] for i in picked]


def synthetic_pairs(mlm: Path, count: int, seed: int) -> None:
    """runs/data/synthetic-{train,dev}.tsv in STS-B's layout (reference, candidate, score), 95% / 5%."""
    from sacrebleu import sentence_bleu

    sentences = gutenberg_sentences(count, seed)
    pairs = perturbed_pairs(sentences, bertkit.load_pretrained(mlm), bertkit.Tokenizer.from_pretrained(mlm), seed)
    encoder, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    layer, _ = default_layer(encoder, minilm_dir())
    baseline = compute_baseline(encoder, tokenizer, gutenberg_sentences(5000, seed + 1), pairs=5000)
    candidates, references = [p["candidate"] for p in pairs], [p["reference"] for p in pairs]
    f1 = rescale(bertscore(encoder, tokenizer, candidates, references, layer=layer), baseline).f1
    bleu = np.array([sentence_bleu(c, [r]).score / 100 for c, r in zip(candidates, references)])
    scores = 5 * (bleu + np.clip(f1, 0, 1)) / 2
    # STS-B's columns (genre, source, year, id, score, sentence 1, sentence 2): its recipe reads both
    rows = [f"synthetic\tgutenberg\t-\t{i:06d}\t{s:.4f}\t{r}\t{c}\n"
            for i, (r, c, s) in enumerate(zip(references, candidates, scores))]
    SPLITS.mkdir(parents=True, exist_ok=True)
    cut = round(0.95 * len(rows))
    (SPLITS / "synthetic-train.tsv").write_text("".join(rows[:cut]), encoding="utf-8")
    (SPLITS / "synthetic-dev.tsv").write_text("".join(rows[cut:]), encoding="utf-8")
    kinds = {k: sum(p["perturbation"] == k for p in pairs) for k in ("mask_fill", "drop", "swap")}
    print(f"wrote {cut} + {len(rows) - cut} synthetic pairs ({kinds}); label mean {scores.mean():.2f}, "
          f"BLEU mean {bleu.mean():.3f}, rescaled BERTScore F1 mean {f1.mean():.3f}")


def correlations(predicted, gold) -> dict:
    from scipy.stats import pearsonr, spearmanr
    return {"pearson": float(pearsonr(predicted, gold)[0]), "spearman": float(spearmanr(predicted, gold)[0])}


def table() -> str:
    dev = [line.rstrip("\n").split("\t") for line in open(DATA / "stsb" / "sts-dev.csv", encoding="utf-8")]
    first, second, gold = [c[5] for c in dev], [c[6] for c in dev], [float(c[4]) for c in dev]
    encoder, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    a = bertkit.embed(encoder, tokenizer, first, normalize=True, precision="fp32")
    b = bertkit.embed(encoder, tokenizer, second, normalize=True, precision="fp32")
    layer, _ = default_layer(encoder, minilm_dir())
    rows = {"cosine of all-MiniLM-L6-v2 embeddings": correlations((a * b).sum(1), gold),
            f"BERTScore F1, all-MiniLM-L6-v2 layer {layer}": correlations(
                bertscore(encoder, tokenizer, second, first, layer=layer, precision="fp32").f1, gold)}
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name, label in LEARNED.items():
        if "metrics" in runs.get(name, {}):  # STS-B dev for every run (synthetic: scored on it after training)
            rows[label] = {k: runs[name]["metrics"][k] for k in ("pearson", "spearman")}
    lines = ["| metric | STS-B dev Pearson | Spearman |", "|---|---:|---:|"]
    lines += [f"| {name} | {r['pearson']:.3f} | {r['spearman']:.3f} |" for name, r in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=["pairs", "table"])
    parser.add_argument("--mlm", type=Path, help="a bertkit-pretrained model with its MLM head (pairs)")
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.job == "pairs":
        if args.mlm is None:
            parser.error("pairs needs --mlm, a model with an MLM head for mask-and-fill")
        synthetic_pairs(args.mlm, args.sentences, args.seed)
    else:
        print(table())


if __name__ == "__main__":
    main()
