"""bertkit fine-tuning with glibc keeping freed memory (`reuse_freed_memory`, which the `bertkit`
command sets) against the C library's own settings (BERTKIT_SYSTEM_MALLOC=1), side by side.

Both runs are `bertkit finetune classify --multi-label` with the Reuters-21578 recipe
(configs/finetune/reuters.yaml: 256-token windows, batch 32, bf16 where fast) for one epoch over the
first ARTICLES training articles, each in its own process, alternating. Reported: wall time,
user and kernel CPU seconds (the cost that reuse removes is the kernel's page faults), model
FLOPs per second (3 x forward over the real tokens of every window) against the matmul peak.

    python benchmarks/bench_allocator.py [--articles 1280] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, alternate, matmul_peak, median, minilm_dir, write_results  # noqa: E402

from bertkit import Tokenizer, load_pretrained  # noqa: E402
from bertkit.allocator import OPT_OUT  # noqa: E402
from bertkit.config import FinetuneConfig, TrainConfig, load_sections  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.tasks import encode_examples, read_examples  # noqa: E402
from bertkit.train.finetune import task_spec  # noqa: E402

RECIPE = ROOT / "configs" / "finetune" / "reuters.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bertkit-bench-allocator-"))
    train = work / "train.jsonl"
    lines = (DATA / "reuters21578" / "training.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(lines[:args.articles]), encoding="utf-8")
    model = minilm_dir()

    given = {"finetune": {"model": str(model), "train": str(train), "out": str(work)}}
    recipe = load_sections(str(RECIPE), {"finetune": FinetuneConfig, "train": TrainConfig}, direct=given)["finetune"]
    examples = read_examples(recipe.train, recipe.task, recipe.reader)
    lengths = encode_examples(examples, Tokenizer.from_pretrained(model), task_spec(recipe, examples, [])).lengths
    flops = 3 * forward_flops(load_pretrained(model).config, lengths.tolist())

    cpu: dict[str, list[tuple[float, float]]] = {"reuse": [], "system": []}

    def timed_run(name: str):
        env = {k: v for k, v in os.environ.items() if k != OPT_OUT} | ({OPT_OUT: "1"} if name == "system" else {})
        command = [sys.executable, "-m", "bertkit.cli", "finetune", "classify", "--multi-label", "--config",
                   str(RECIPE), "--model", str(model), "--train", str(train), "--out", str(work / name),
                   "--finetune.epochs=1", "--train.checkpoint_every=100000", "--overwrite"]

        def run() -> None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
        return run

    peak = matmul_peak(torch.bfloat16)
    times = alternate({"reuse": timed_run("reuse"), "system": timed_run("system")}, args.repeats)
    peak = max(peak, matmul_peak(torch.bfloat16))
    rows = {}
    for name in times:
        seconds = median(times[name])
        rows[name] = {"seconds": seconds, "user_cpu_s": median([u for u, _ in cpu[name]]),
                      "kernel_cpu_s": median([s for _, s in cpu[name]]), "model_gflops_per_s": flops / seconds / 1e9,
                      "fraction_of_matmul_peak": flops / seconds / peak}
    ratio = rows["system"]["seconds"] / rows["reuse"]["seconds"]
    command = "python benchmarks/bench_allocator.py " + " ".join(sys.argv[1:])
    table = "\n".join([
        f"One epoch over the first {args.articles} Reuters-21578 training articles ({len(lengths)} windows, "
        f"{int(lengths.sum())} real tokens), `bertkit finetune` with configs/finetune/reuters.yaml, one process per "
        f"run, alternating, median of {args.repeats}; bf16 matmul peak measured now: {peak / 1e9:.0f} GFLOP/s. "
        "Times are end to end (model loading and saving included).", "",
        "| malloc | wall s | user CPU s | kernel CPU s | model GFLOP/s | of bf16 matmul peak |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {'freed memory kept (default)' if n == 'reuse' else f'glibc defaults ({OPT_OUT}=1)'} | "
          f"{r['seconds']:.1f} | {r['user_cpu_s']:.1f} | {r['kernel_cpu_s']:.1f} | {r['model_gflops_per_s']:.0f} | "
          f"{r['fraction_of_matmul_peak']:.0%} |" for n, r in rows.items()),
        "", f"Speed-up from keeping freed memory: **{ratio:.2f}x**."])
    print(table)
    payload = {"articles": args.articles, "windows": len(lengths), "real_tokens": int(lengths.sum()),
               "repeats": args.repeats, "matmul_peak_flops": peak, "runs": rows, "ratio": ratio, "times": times}
    write_results("allocator", command, payload, table)


if __name__ == "__main__":
    main()
