"""Which layer of all-MiniLM-L6-v2 BERTScore should use: Spearman correlation of each layer's F1
(and P, R) with the STS-B dev human scores, without and with idf (idf from the 1,500 references).
One encoder pass scores every layer. Writes benchmarks/results/bertscore-layers.json and prints the
README table.

    python benchmarks/bertscore_layers.py
"""

from __future__ import annotations

import json
import sys

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from bench_bertscore import sts_dev_pairs  # noqa: E402
from common import DATA, RESULTS, machine, minilm_dir  # noqa: E402

import bertkit  # noqa: E402
from bertkit.bertscore import score_layers  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    cands, refs = sts_dev_pairs()
    gold = [float(line.split("\t")[4]) for line in open(DATA / "stsb" / "sts-dev.csv", encoding="utf-8")]
    path = minilm_dir()
    model, tokenizer = bertkit.load_pretrained(path), bertkit.Tokenizer.from_pretrained(path)
    layers = list(range(model.config.num_layers + 1))
    result = {}
    for idf in (False, True):
        scores = score_layers(model, tokenizer, cands, refs, layers=layers, idf=idf, precision="fp32")
        result["idf" if idf else "no idf"] = {
            layer: {name: float(spearmanr(getattr(s, name), gold).statistic) for name in ("precision", "recall", "f1")}
            for layer, s in scores.items()}
    lines = ["| layer | F1 | F1 with idf | P | R |", "|---:|---:|---:|---:|---:|"]
    for layer in layers:
        plain, idf = result["no idf"][layer], result["idf"][layer]
        lines.append(f"| {layer} | {plain['f1']:.3f} | {idf['f1']:.3f} | {plain['precision']:.3f} | {plain['recall']:.3f} |")
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bertscore-layers.json").write_text(json.dumps(
        {"benchmark": "bertscore-layers", "command": "python benchmarks/bertscore_layers.py", "machine": machine(),
         "pairs": len(cands), "spearman": result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
