"""The README's figures for contextual embeddings (all-MiniLM-L6-v2, fp32):

- anisotropy, self- and intra-sentence similarity and rogue dimensions per layer, on 2,000 random
  sentences of WikiText-2 valid (Punkt-split from its paragraphs, headings left out);
- STS-B dev Spearman of mean-pooled embeddings per layer (1..6), as they are and after each
  post-processing method fitted on the STS-B train sentences (never on dev).

    python benchmarks/embedding_geometry.py anisotropy
    python benchmarks/embedding_geometry.py postprocess
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, machine, minilm_dir  # noqa: E402

import bertkit  # noqa: E402
from bertkit.data.batches import in_length_order  # noqa: E402
from bertkit.data.corpus import paragraphs, train_sentence_splitter  # noqa: E402
from bertkit.heads import pool  # noqa: E402
from bertkit.postprocess import METHODS, fit_postprocess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SPLITS = ROOT / "runs" / "data"
WIKITEXT = DATA / "wikitext2" / "raw" / "wiki.valid.raw"


def wikitext_sentences() -> Path:
    """runs/data/wikitext2-valid-sentences.txt: WikiText-2 valid's paragraphs split by Punkt."""
    out = SPLITS / "wikitext2-valid-sentences.txt"
    splitter = train_sentence_splitter([WIKITEXT], "strict")
    sentences = [s for _, p in paragraphs(WIKITEXT, "strict") if not p.startswith("=")
                 for s in splitter.tokenize(p) if len(s.split()) >= 3]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return out


def anisotropy() -> None:
    text = wikitext_sentences()
    out = RESULTS / "anisotropy-minilm.json"
    subprocess.run([sys.executable, "-m", "bertkit.cli", "analyze", "anisotropy", "--model", str(minilm_dir()),
                    "--input", str(text), "--sentences", "2000", "--output", str(out), "--dtype", "fp32"],
                   cwd=ROOT, check=True)


def sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    rows = [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8")]
    return [r[5] for r in rows], [r[6] for r in rows], np.array([float(r[4]) for r in rows])


@torch.no_grad()
def pooled_by_layer(encoder, tokenizer, texts: list[str]) -> dict[int, np.ndarray]:
    """Mean-pooled sentence vectors of every layer 1..L from one pass."""
    layers = list(range(1, len(encoder.layers) + 1))
    encoded = tokenizer.encode(texts, max_length=encoder.config.max_length)
    out = {layer: np.empty((len(texts), encoder.config.hidden_size), dtype=np.float32) for layer in layers}
    for rows in in_length_order(encoded.lengths, 64):
        batch = encoded.tensors(rows, tokenizer.pad_id)
        states = encoder(**batch, output_layers=layers).layers
        for layer in layers:
            out[layer][rows] = pool(states[layer], batch["attention_mask"], "mean").numpy()
    return out


def spearman(a: np.ndarray, b: np.ndarray, gold: np.ndarray) -> float:
    from scipy.stats import spearmanr
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(spearmanr((a * b).sum(1), gold).statistic)


def postprocess() -> None:
    encoder, tokenizer = bertkit.load_pretrained(minilm_dir()).eval(), bertkit.Tokenizer.from_pretrained(minilm_dir())
    train_a, train_b, _ = sts(DATA / "stsb" / "sts-train.csv")
    dev_a, dev_b, gold = sts(DATA / "stsb" / "sts-dev.csv")
    fit_texts = list(dict.fromkeys(train_a + train_b))
    fit = pooled_by_layer(encoder, tokenizer, fit_texts)
    a, b = pooled_by_layer(encoder, tokenizer, dev_a), pooled_by_layer(encoder, tokenizer, dev_b)
    table = {}
    for layer in fit:
        row = {"none": spearman(a[layer], b[layer], gold)}
        for method in METHODS:
            fitted = fit_postprocess(fit[layer], method)
            row[method] = spearman(fitted(a[layer]), fitted(b[layer]), gold)
        table[layer] = row
    payload = {"machine": machine(), "model": "all-MiniLM-L6-v2", "precision": "fp32", "pooling": "mean",
               "fitted_on": f"STS-B train sentences ({len(fit_texts)} distinct)", "evaluated_on": "STS-B dev",
               "spearman": table}
    (RESULTS / "postprocess-stsb.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("| layer | as is | " + " | ".join(METHODS) + " |\n|---:|---:|" + "---:|" * len(METHODS))
    for layer, row in table.items():
        print(f"| {layer} | {row['none']:.3f} | " + " | ".join(f"{row[m]:.3f}" for m in METHODS) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["anisotropy", "postprocess"])
    {"anisotropy": anisotropy, "postprocess": postprocess}[parser.parse_args().figure]()


if __name__ == "__main__":
    main()
