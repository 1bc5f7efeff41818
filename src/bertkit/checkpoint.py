"""Checkpoints that lose nothing, and files that are never half written.

Every file bertkit writes (weights, configs, tokenizers, embeddings, training checkpoints) goes
through `atomic_write`: the data goes to a temporary file in the same folder, is flushed to disk,
and only then renamed over the target. A kill at any moment leaves either the old file or the new.

A training checkpoint (out/checkpoints/step-NNNNNNN.pt) holds the model, optimizer and scheduler
states, every RNG state, and the step, which is the data position: the training data of a step is
a function of the step number (see train/loop.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer, scheduler, keep: int) -> Path:
    """Write out/checkpoints/step-NNNNNNN.pt atomically and keep only the newest `keep`."""
    folder = out / "checkpoints"
    path = folder / f"step-{step:07d}.pt"
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": _rng_state()}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Restore every state saved by `save_checkpoint`; returns the step it was saved after."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["step"]


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*.pt"))
    return found[-1] if found else None
