"""Continued (domain-adaptive) pretraining of all-MiniLM-L6-v2: the README's figures.

all-MiniLM-L6-v2 ships without an MLM head, so `bertkit pretrain --init` adds one, and the model
before adaptation has no masked-LM figures of its own. The comparison is therefore between two runs of
the same recipe (configs/adapt.yaml) and the same budget (20 minutes) from the same checkpoint: one on
general text (the Gutenberg books), one on the biomedical domain (the sentences of the GENIA training
documents, without their labels). Each is scored on held-out text of both kinds (the GENIA test
documents, WikiText-2 valid) with the same masked batches: what the domain gained, and what general
text lost. The GENIA span classifier is then fine-tuned from the adapted encoder with the same recipe
as from the original one (`finetune_runs.py genia-span genia-span-adapted`).

    python benchmarks/domain_adaptation.py adapt general   # 20 minutes each on 2 cores
    python benchmarks/domain_adaptation.py adapt genia
    python benchmarks/finetune_runs.py genia-span genia-span-adapted
    python benchmarks/domain_adaptation.py table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, machine, minilm_dir  # noqa: E402
from splits import first_documents  # noqa: E402

import bertkit  # noqa: E402
from bertkit import precision  # noqa: E402
from bertkit.config import PretrainConfig  # noqa: E402
from bertkit.fill_mask import fill_mask  # noqa: E402
from bertkit.train.pretrain import Pretrainer, evaluate, held_out_batches  # noqa: E402

SPLITS = ROOT / "runs" / "data"
ADAPTED = ROOT / "runs" / "adapt"
RESULTS = ROOT / "benchmarks" / "results"
GENIA = DATA / "genia_nested" / "dev.jsonlines"
WIKITEXT = DATA / "wikitext2" / "raw" / "wiki.valid.raw"
CORPORA = {  # run -> (training text, held-out text in its log, what a document is)
    "general": (DATA / "gutenberg_nltk", WIKITEXT, "file"),
    "genia": (SPLITS / "genia-train.txt", SPLITS / "genia-test.txt", "blank_line"),
}
PROBES = ["Activation of the [MASK] requires phosphorylation of I kappa B alpha .",
          "The transcription factor binds to the [MASK] of the IL-2 gene .",
          "She walked into the [MASK] and sat down by the fire ."]


def genia_text() -> None:
    """runs/data/genia-{train,test}.txt: the sentences (tokens joined by spaces) of the GENIA documents,
    split as finetune_runs.py splits them (first 80% of documents train), a blank line between documents."""
    rows = [json.loads(line) for line in GENIA.read_text(encoding="utf-8").splitlines()]
    train = first_documents(rows, 0.8)
    SPLITS.mkdir(parents=True, exist_ok=True)
    for name, keep in (("train", True), ("test", False)):
        lines, last = [], None
        for r in (r for r in rows if (r["doc_id"] in train) == keep):
            if last is not None and r["doc_id"] != last:
                lines.append("")
            lines.append(" ".join(r["tokens"]))
            last = r["doc_id"]
        (SPLITS / f"genia-{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def adapt(name: str, minutes: float) -> None:
    genia_text()
    corpus, held_out, documents = CORPORA[name]
    command = [sys.executable, "-m", "bertkit.cli", "pretrain", "--config", "configs/adapt.yaml",
               "--init", str(minilm_dir()), "--corpus", str(corpus), f"--pretrain.eval_corpus={held_out}",
               f"--pretrain.documents={documents}", "--max-minutes", str(minutes), "--out", str(ADAPTED / name),
               "--overwrite"]
    print(" ".join(command[2:]), file=sys.stderr)
    subprocess.run(command, cwd=ROOT, check=True)


def held_out(model: Path, text: Path) -> dict[str, float]:
    """MLM loss and accuracy on `text`, with the masked batches every model here is scored on."""
    encoder, tokenizer = bertkit.load_pretrained(model), bertkit.Tokenizer.from_pretrained(model)
    config = PretrainConfig(recipe="roberta", corpus=(str(text),), eval_corpus=str(text), max_length=128,
                            eval_blocks=256, encoding_errors="replace", cache=str(ROOT / ".bertkit-cache"))
    return evaluate(Pretrainer(encoder), held_out_batches(config, tokenizer), precision.resolve("fp32"))


def table() -> None:
    genia_text()
    rows = {}
    for name in CORPORA:
        model = ADAPTED / name
        log = [json.loads(x) for x in (model / "log.jsonl").read_text().splitlines()]
        encoder, tokenizer = bertkit.load_pretrained(model), bertkit.Tokenizer.from_pretrained(model)
        rows[name] = {"steps": 1 + max(r["step"] for r in log if "loss" in r),
                      "genia_test": held_out(model, SPLITS / "genia-test.txt"),
                      "wikitext2_valid": held_out(model, WIKITEXT),
                      "fill_mask": {p: [c.token for c in fill_mask(encoder, tokenizer, p, 5)[0]] for p in PROBES}}
    runs = json.loads((RESULTS / "finetune-runs.json").read_text())
    spans = {name: runs[name]["metrics"]["f1"] for name in ("genia-span", "genia-span-adapted") if name in runs}
    payload = {"machine": machine(), "models": rows, "genia_span_f1": spans}
    (RESULTS / "domain-adaptation.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("| continued on (20 min) | steps | GENIA test MLM loss / acc | WikiText-2 valid MLM loss / acc |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        g, w = row["genia_test"], row["wikitext2_valid"]
        print(f"| {name} | {row['steps']} | {g['mlm_loss']:.3f} / {g['mlm_accuracy']:.3f} "
              f"| {w['mlm_loss']:.3f} / {w['mlm_accuracy']:.3f} |")
    for probe in PROBES:
        print(f"\n{probe}\n" + "\n".join(f"  {name}: {', '.join(row['fill_mask'][probe])}" for name, row in rows.items()))
    print(f"\nGENIA span F1: {spans}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("adapt", help="continue pretraining all-MiniLM-L6-v2 on one corpus")
    p.add_argument("corpus", choices=list(CORPORA))
    p.add_argument("--minutes", type=float, default=20)
    sub.add_parser("text", help="write the GENIA sentences as text (runs/data/genia-{train,test}.txt)")
    sub.add_parser("table", help="score both adapted models; write benchmarks/results/domain-adaptation.json")
    args = parser.parse_args()
    if args.command == "adapt":
        adapt(args.corpus, args.minutes)
    elif args.command == "text":
        genia_text()
    else:
        table()


if __name__ == "__main__":
    main()
