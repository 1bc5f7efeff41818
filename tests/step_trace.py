"""Fingerprints of what each training step starts from, so that a test which finds a step's loss off can
say whether that step began from other weights, another batch or another generator state, or from the
same ones (then its arithmetic differed).

`trace(path, run)` wraps the training loop's `train_step` in this process; `python tests/step_trace.py
TRACE RUN ARGS...` runs `bertkit ARGS...` traced. Each optimizer step appends one JSON line to TRACE: the
run's name, the step, SHA-256 prefixes of the weights, the batch and the generator state it started
from, and its loss.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from bertkit.train import loop


def fingerprint(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


UNTRACED = loop.train_step


def trace(path: Path, run: str) -> None:
    """Make `loop.train_step` append each step's record, in the name of `run`, to `path` (again with a
    new name: it replaces the last tracing)."""

    def traced(step_fn, model, micro, optimizer, scheduler, *args):
        record = {"run": run, "step": scheduler.last_epoch,  # the schedule has advanced once a step
                  "weights": fingerprint(model.state_dict().values()),
                  "batch": fingerprint(v for b in micro for v in b.values() if isinstance(v, torch.Tensor)),
                  "generator": fingerprint([torch.get_rng_state()])}
        losses, grad_norm = UNTRACED(step_fn, model, micro, optimizer, scheduler, *args)
        with open(path, "a") as f:
            f.write(json.dumps({**record, "loss": losses["loss"]}) + "\n")
        return losses, grad_norm

    loop.train_step = traced


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


if __name__ == "__main__":
    from bertkit.cli import main
    trace(Path(sys.argv[1]), sys.argv[2])
    sys.exit(main(sys.argv[3:]))
