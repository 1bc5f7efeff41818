"""Which objective wins at equal compute: bert-mini pretrained on the Gutenberg books for the same
wall-clock budget (20 minutes each, seed 0) with each objective, then fine-tuned with one fixed
recipe on SST-2 (dev accuracy) and CoNLL-2003 (dev entity F1), one epoch each; a random
initialisation is the floor.

Every variant shares one WordPiece vocabulary (trained once on the corpus) and the schedule
(1,500 steps, 100 warm-up, batch 32 x 128 tokens, its recipe's learning rate for bert-mini); a
variant slower per step stops at 20 minutes before its schedule ends, which is the point of an
equal-compute comparison. The ARLM model is fine-tuned with its attention made bidirectional
(`Encoder.set_causal(False)`, the same weights): a classifier reading [CLS] through causal
attention would see nothing but [CLS]. ELECTRA is fine-tuned from its discriminator; it runs twice, at
its recipe's learning rate (1e-4) and at the others' (5e-4), since the two differ.

Each pretraining and fine-tuning run is kept in runs/objectives/ and skipped when done, so the
study can be run in parts (`python benchmarks/objectives_study.py MLM ELECTRA`) and resumed.

    python benchmarks/objectives_study.py [VARIANT ...]   # all by default: about 4 hours on 2 cores
    python benchmarks/objectives_study.py --table         # the README's table and plot from the results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, ROOT, machine  # noqa: E402

from bertkit import Encoder, Tokenizer, add_pretraining_heads, load_pretrained, preset, save_pretrained  # noqa: E402
from bertkit.config import FinetuneConfig  # noqa: E402
from bertkit.files import write_text  # noqa: E402
from bertkit.textfiles import read_texts, text_files  # noqa: E402

RUNS = ROOT / "runs" / "objectives"
OUT = RESULTS / "objectives-study.json"
CORPUS = DATA / "gutenberg_nltk"
MINUTES, STEPS, SEED = 20, 1500, 0
VARIANTS = {  # variant -> pretraining recipe (configs/RECIPE.yaml); None: no pretraining
    "random init": None, "MLM": "roberta", "MLM + NSP": "bert", "SpanBERT": "spanbert", "ELECTRA": "electra",
    "PLM": "plm", "ARLM": "arlm", "ELECTRA (lr 5e-4)": "electra", "ELECTRA (sample temperature 2)": "electra",
    "ELECTRA (sample temperature 3)": "electra"}
SETTINGS = {  # variant -> its settings beyond the recipe's: ELECTRA at the other recipes' learning rate,
    # and with its generator's samples drawn from softmax(logits / t) for t = 1 (the paper's; the rows measured
    # before bert-mini's recipe took t = 3), 2 and 3
    "ELECTRA": ["--pretrain.sample_temperature=1"],
    "ELECTRA (lr 5e-4)": ["--train.lr=5e-4", "--pretrain.sample_temperature=1"],
    "ELECTRA (sample temperature 2)": ["--pretrain.sample_temperature=2"],
    "ELECTRA (sample temperature 3)": ["--pretrain.sample_temperature=3"]}
FINETUNE = {  # one fixed recipe per data set: bertkit finetune TASK --config configs/finetune/NAME.yaml, 1 epoch, lr 1e-4
    "SST-2": ("classify", "sst2", DATA / "sst2" / "train.tsv", DATA / "sst2" / "dev.tsv", "accuracy"),
    "CoNLL-2003": ("tag", "conll2003", DATA / "conll2003" / "eng.train", DATA / "conll2003" / "eng.testa", "f1"),
}


def folder(variant: str) -> Path:
    return RUNS / variant.lower().replace(" + ", "-").replace(" (", "-").replace(")", "").replace(" ", "-")


def tokenizer_dir() -> Path:
    """One WordPiece vocabulary for every variant, trained once on the corpus."""
    out = RUNS / "tokenizer"
    if not (out / "tokenizer.json").exists():
        files = text_files(CORPUS)
        Tokenizer.train(read_texts(files, "replace"), vocab_size=30522).save(out)
    return out


def pretrained(variant: str) -> Path:
    """The model directory to fine-tune for `variant`, pretrained first if it is not there yet."""
    out, recipe = folder(variant), VARIANTS[variant]
    if recipe is None:
        if not (out / "config.json").exists():
            tokenizer = Tokenizer.from_pretrained(tokenizer_dir())
            torch.manual_seed(SEED)
            encoder = Encoder(preset("mini", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id))
            save_pretrained(add_pretraining_heads(encoder, mlm=True), out)
            tokenizer.save(out)
        return out
    if not (out / "config.json").exists():
        subprocess.run([sys.executable, "-m", "bertkit.cli", "pretrain", "--config", str(ROOT / "configs" / f"{recipe}.yaml"),
                        "--corpus", str(CORPUS), "--tokenizer", str(tokenizer_dir()), "--preset", "mini",
                        "--max-steps", str(STEPS), "--max-minutes", str(MINUTES), "--seed", str(SEED),
                        "--out", str(out), "--overwrite", "--train.warmup_steps=100", "--train.eval_every=250",
                        "--train.checkpoint_every=250", *SETTINGS.get(variant, [])], cwd=ROOT, check=True)
    if recipe != "arlm":
        return out
    bidirectional = out.with_name(out.name + "-bidirectional")
    if not (bidirectional / "config.json").exists():
        save_pretrained(load_pretrained(out).set_causal(False), bidirectional)
        Tokenizer.from_pretrained(out).save(bidirectional)
    return bidirectional


def finetuned(variant: str, data: str) -> dict:
    task, recipe, train, dev, metric = FINETUNE[data]
    out = folder(variant).with_name(f"{folder(variant).name}-{recipe}")
    if not (out / "dev_metrics.json").exists():
        model = pretrained(variant)
        # the causal LM has positions for its 128-token training windows only: a longer sentence is
        # split into windows of 128 (with this vocabulary, 1 of CoNLL-2003's training sentences and
        # 4 of its dev sentences), where the others take fine-tuning's default of 512 at once
        positions = json.loads((model / "config.json").read_text())["max_position_embeddings"]
        subprocess.run([sys.executable, "-m", "bertkit.cli", "finetune", task, "--config",
                        str(ROOT / "configs" / "finetune" / f"{recipe}.yaml"), "--model", str(model),
                        "--train", str(train), "--dev", str(dev), "--out", str(out), "--overwrite",
                        "--epochs", "1", "--lr", "1e-4", "--seed", str(SEED),
                        *([f"--finetune.max_length={positions}"] if positions < FinetuneConfig.max_length else [])],
                       cwd=ROOT, check=True)
    return {"metric": metric, "value": json.loads((out / "dev_metrics.json").read_text())[metric]}


def pretraining_summary(variant: str) -> dict:
    log = folder(variant) / "log.jsonl"
    if not log.exists():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    evaluation = [r for r in records if any(k.startswith("eval_") for k in r)]
    return {"steps": trained[-1]["step"] + 1, "tokens_per_s": trained[-1]["tokens_per_s"],
            "held_out": {k[5:]: v for k, v in evaluation[-1].items() if k.startswith("eval_")} if evaluation else {}}


def table(results: dict) -> str:
    lines = [f"bert-mini, {MINUTES} minutes of pretraining each on the Gutenberg books (seed {SEED}), then one epoch "
             "of fine-tuning (lr 1e-4, batch 32, seed 0).\n",
             "| objective | pretraining steps | SST-2 dev accuracy | CoNLL-2003 dev F1 |", "|---|---:|---:|---:|"]
    for variant, r in results.items():
        steps = r.get("pretraining", {}).get("steps", "-")
        lines.append(f"| {variant} | {steps} | {r['SST-2']['value']:.4f} | {r['CoNLL-2003']['value']:.4f} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, data in zip(axes, FINETUNE):
        ax.barh(names, [results[n][data]["value"] for n in names], color="tab:blue")
        ax.set_title(f"{data} dev {FINETUNE[data][-1]}")
        ax.invert_yaxis()
    fig.suptitle(f"bert-mini, {MINUTES} min of pretraining per objective, 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help=f"some of: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--table", action="store_true", help="only print the table of the results so far")
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose among: {', '.join(VARIANTS)}")
    results = json.loads(OUT.read_text())["results"] if OUT.exists() else {}
    for variant in ([] if args.table else args.variants or VARIANTS):
        results[variant] = {data: finetuned(variant, data) for data in FINETUNE}
        results[variant]["pretraining"] = pretraining_summary(variant)
        write_text(OUT, json.dumps({"machine": machine(), "minutes": MINUTES, "steps": STEPS, "seed": SEED,
                                    "results": results}, indent=2))
    ordered = {v: results[v] for v in VARIANTS if v in results}
    print(table(ordered))
    if ordered:
        plot(ordered, RESULTS / "objectives-study.png")


if __name__ == "__main__":
    main()
