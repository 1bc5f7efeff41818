"""Count process starts whose first exp on two threads is off: oneMKL's first-call race (bertkit.precision).

Each start is a fresh Python process that sets two torch threads and computes the numerators of a softmax
(exp of 64 heads x 15 x 15 attention scores less their row's maximum), either right after importing torch
or after importing bertkit, which settles oneMKL's kernels first (`precision.settle_vector_maths`). Two processes
beside them switch a busy loop on and off, as a loaded machine would. A start is off when its result
differs from this process's by any bit. Exits 1 if any start after importing bertkit is off (or fails).

    python tests/vml_first_calls.py [--starts 60]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import subprocess
import sys

import torch


def softmax_numerators() -> torch.Tensor:
    """exp(scores - their row's maximum) of 64 heads x 15 x 15 attention scores, the last key masked."""
    scores = torch.randn(64, 15, 15, generator=torch.Generator().manual_seed(0)) * 0.1
    scores[:, :, -1] = float("-inf")
    return scores.sub_(scores.amax(-1, keepdim=True)).exp_()


CHILD = """
import sys, hashlib, torch
torch.set_num_threads(2)
if sys.argv[1] == "bertkit":
    import bertkit
print(hashlib.sha256(softmax_numerators().numpy().tobytes()).hexdigest())
"""

BUSY = """
import random, sys, time
random.seed(int(sys.argv[1]))
while True:
    end = time.time() + random.uniform(0.001, 0.05)
    while time.time() < end:
        pass
    time.sleep(random.uniform(0.001, 0.05))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=60, help="process starts of each kind")
    args = parser.parse_args()
    import bertkit  # noqa: F401  (settles oneMKL's kernels in this process)
    torch.set_num_threads(2)  # the children's threads: the same chunks
    expected = hashlib.sha256(softmax_numerators().numpy().tobytes()).hexdigest()
    child = "import torch\n" + inspect.getsource(softmax_numerators) + CHILD
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(seed)]) for seed in (1, 2)]
    off = {"torch": 0, "bertkit": 0}
    try:
        for start in range(args.starts):
            for kind in (("torch", "bertkit") if start % 2 else ("bertkit", "torch")):
                got = subprocess.run([sys.executable, "-c", child, kind], capture_output=True, text=True)
                if got.returncode:
                    sys.exit(f"a start after importing {kind} failed:\n{got.stderr}")
                off[kind] += got.stdout.strip() != expected
    finally:
        for process in busy:
            process.kill()
            process.wait()
    for kind, count in off.items():
        print(f"first exp after importing {kind}: {count} of {args.starts} starts off")
    if not off["torch"]:
        print("no start was off after importing torch alone either: the race did not show in this run")
    sys.exit(1 if off["bertkit"] else 0)


if __name__ == "__main__":
    main()
