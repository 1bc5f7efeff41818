"""ELECTRA's replaced-token detection on held-out text: is the discriminator better than calling every
token original after 20 minutes?

bert-mini pretrained with `configs/electra.yaml` on 14 of the 15 Gutenberg books for 20 minutes (the
objectives study's schedule: 1,500 steps at most, 100 warm-up, batch 32 x 128, lr 1e-4, seed 0, its
WordPiece vocabulary), the generator's samples drawn at `--temperature` (3 by default: the setting
whose discriminator ranked replacements best in the study). One book, Austen's Persuasion, is held
out, and the discriminator's detection is measured on it (text of the training domain that the run
never saw) and on WikiText-2 valid (another domain), each with the recipe's held-out evaluation:
fixed masks and generator samples, accuracy against the all-original baseline, recall of the
replaced tokens, ROC AUC. The vocabulary was trained on all 15 books (the study's), so it has seen
the held-out book's words, not its text.

    python benchmarks/electra_held_out.py [--temperature 3]   # about 22 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, write_results  # noqa: E402
from objectives_study import MINUTES, SEED, STEPS, tokenizer_dir  # noqa: E402

from bertkit import Tokenizer, load_pretrained  # noqa: E402
from bertkit.config import PretrainConfig  # noqa: E402
from bertkit.precision import resolve  # noqa: E402
from bertkit.train.electra import Electra  # noqa: E402
from bertkit.train.pretrain import evaluate, held_out_batches  # noqa: E402

CORPUS = DATA / "gutenberg_nltk"
HELD_OUT = CORPUS / "austen-persuasion.txt"
EVAL = {"held-out book (austen-persuasion)": HELD_OUT, "WikiText-2 valid": DATA / "wikitext2" / "raw" / "wiki.valid.raw"}


def pretrained(out: Path, temperature: float) -> Path:
    """The run's directory, pretrained first if it holds no final model."""
    if not (out / "model.safetensors").exists():
        books = [f for f in sorted(CORPUS.glob("*.txt")) if f != HELD_OUT]
        subprocess.run([sys.executable, "-m", "bertkit.cli", "pretrain", "--config", str(ROOT / "configs" / "electra.yaml"),
                        *[arg for f in books for arg in ("--corpus", str(f))], "--tokenizer", str(tokenizer_dir()),
                        "--preset", "mini", "--max-steps", str(STEPS), "--max-minutes", str(MINUTES),
                        "--seed", str(SEED), "--out", str(out), "--overwrite", "--train.warmup_steps=100",
                        "--train.eval_every=250", "--train.checkpoint_every=250",
                        f"--pretrain.sample_temperature={temperature:g}", f"--pretrain.eval_corpus={HELD_OUT}"],
                       cwd=ROOT, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperature", type=float, default=3.0, help="the generator's sample temperature")
    args = parser.parse_args()
    out = pretrained(ROOT / "runs" / f"electra-heldout-t{args.temperature:g}", args.temperature)
    settings = json.loads((out / "pretrain_config.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    last = [r for r in log if "tokens_per_s" in r][-1]
    steps, tokens_per_s = last["step"] + 1, last["tokens_per_s"]
    config = PretrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings["pretrain"].items()})
    tokenizer = Tokenizer.from_pretrained(out)
    model = Electra(load_pretrained(out), load_pretrained(out / "generator"), config.rtd_weight,
                    config.sample_temperature).eval()
    dtype = resolve(settings["train"]["precision"])
    rows = {name: evaluate(model, held_out_batches(replace(config, eval_corpus=str(path)), tokenizer), dtype)
            for name, path in EVAL.items()}
    table = [f"bert-mini ELECTRA (generator 1/4 wide, samples at temperature {args.temperature:g}), "
             f"{steps} steps at {tokens_per_s:,.0f} tokens/s on 14 Gutenberg books, seed {SEED}; the final discriminator "
             f"on 256 held-out blocks of 128 tokens each.\n",
             "| held-out text | RTD accuracy | all-original baseline | difference | recall of replaced | ROC AUC | "
             "generator MLM accuracy |", "|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {name} | {r['rtd_accuracy']:.4f} | {r['rtd_baseline']:.4f} | "
              f"{r['rtd_accuracy'] - r['rtd_baseline']:+.4f} | {r['rtd_recall']:.3f} | {r['rtd_auc']:.3f} | "
              f"{r['mlm_accuracy']:.3f} |" for name, r in rows.items()]
    text = "\n".join(table)
    print(text)
    write_results(f"electra-held-out-t{args.temperature:g}", f"python benchmarks/electra_held_out.py --temperature {args.temperature:g}",
                  {"run": str(out.relative_to(ROOT)), "steps": steps, "tokens_per_s": tokens_per_s, "results": rows}, text)


if __name__ == "__main__":
    main()
