"""commits: bertkit against an earlier bertkit. Fine-tuning speed and losses of two checkouts, alternating.

A change that should not change what training computes (a restructure) must leave every loss as it
was and the speed within noise. This runs `bertkit finetune` from each checkout (its src/ first on
PYTHONPATH), one process per run, alternating before/after, on all-MiniLM-L6-v2: CoNLL-2003 tagging
(110 steps, a quarter epoch; greedy and CRF) and SST-2 classification (200 steps), batch 32, lr 5e-5,
seed 0, fp32 (the precision every CPU computes natively). It reports each run's loop tokens/s (from
its log), end-to-end seconds, and its last logged loss, which must be equal.

    git worktree add /tmp/before 430057c
    python benchmarks/bench_commits.py --before /tmp/before --after . --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, commit_of, minilm_dir, write_results  # noqa: E402

RUNS = {  # name -> the `bertkit finetune` arguments that differ
    "greedy": ["tag", "--train", str(DATA / "conll2003" / "eng.train"), "--epochs", str(110 / 439)],
    "crf": ["tag", "--train", str(DATA / "conll2003" / "eng.train"), "--epochs", str(110 / 439), "--decoder", "crf"],
    "sst2": ["classify", "--train", str(DATA / "sst2" / "train.tsv"), "--text-column", "sentence", "--label-column",
             "label", "--epochs", str(200 / 2105), "--finetune.max_length=128"],
}


def run_once(tree: Path, run: str, out: Path) -> dict:
    """One fine-tuning run of checkout `tree`: its loop tokens/s, seconds and last logged loss."""
    shutil.rmtree(out, ignore_errors=True)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bertkit.cli", "finetune", *RUNS[run], "--model", str(minilm_dir()),
                    "--out", str(out), "--batch-size", "32", "--lr", "5e-5", "--dtype", "fp32", "--seed", "0",
                    "--train.log_every=50"], env={**os.environ, "PYTHONPATH": str(tree / "src")}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - began
    last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "tokens_per_s" in line][-1]
    return {"tokens_per_s": last["tokens_per_s"], "seconds": seconds, "loss": last["loss"], "step": last["step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="the earlier checkout (a git worktree)")
    parser.add_argument("--after", required=True, type=Path, help="the later checkout")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--runs", default="greedy,crf,sst2", help=f"comma-separated, of {', '.join(RUNS)}")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    commits = {k: commit_of(t) for k, t in trees.items()}
    figures: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for run in args.runs.split(","):
                for side, tree in trees.items():
                    figures.setdefault(f"{run} {side}", []).append(run_once(tree, run, Path(work) / f"{run}-{side}"))
                    print(run, side, figures[f"{run} {side}"][-1], file=sys.stderr, flush=True)
    rows = {name: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                   "seconds": statistics.median(r["seconds"] for r in runs), "losses": [r["loss"] for r in runs],
                   "each": runs} for name, runs in figures.items()}
    table = [f"bertkit {commits['after']} against {commits['before']}: all-MiniLM-L6-v2, batch 32, fp32, one process per "
             f"run, alternating, median of {args.repeats}.\n",
             "| run | before tokens/s | after tokens/s | after / before | before s | after s | last loss equal |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for run in args.runs.split(","):
        b, a = rows[f"{run} before"], rows[f"{run} after"]
        table.append(f"| {run} | {b['tokens_per_s']:.0f} | {a['tokens_per_s']:.0f} | "
                     f"{a['tokens_per_s'] / b['tokens_per_s']:.3f} | {b['seconds']:.1f} | {a['seconds']:.1f} | "
                     f"{'yes' if a['losses'] == b['losses'] else 'NO'} |")
    text = "\n".join(table)
    print(text)
    write_results("commits", "python benchmarks/bench_commits.py " + " ".join(sys.argv[1:]),
                  {"commits": commits, "repeats": args.repeats, "runs": rows}, text)


if __name__ == "__main__":
    main()
