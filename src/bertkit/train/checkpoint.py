"""Training-state checkpoints that lose nothing, written atomically (`files.atomic_write`).

A training checkpoint (out/checkpoints/step-NNNNNNN.pt) holds the model, optimizer and scheduler
states, every RNG state, and the step, which is the data position: the training data of a step is
a function of the step number (see train/loop.py).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

from ..files import atomic_write
from . import distributed

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer, scheduler, keep: int) -> Path | None:
    """Write out/checkpoints/step-NNNNNNN.pt atomically and keep only the newest `keep`.

    Under torch.distributed every rank calls it: the full (unsharded) model and optimizer states and
    every rank's RNG states are gathered, and rank 0 writes. Works alike for a plain module, DDP's
    module and an FSDP-sharded one.
    """
    model_state, optimizer_state = get_state_dict(model, optimizer, options=FULL_STATE)
    rngs = distributed.gather_objects(_rng_state())
    if distributed.rank() != 0:
        return None
    folder = out / "checkpoints"
    path = folder / f"step-{step:07d}.pt"
    state = {"step": step, "model": model_state, "optimizer": optimizer_state,
             "scheduler": scheduler.state_dict(), "rng": rngs}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    for old in sorted(folder.glob("step-*.pt"))[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Restore every state saved by `save_checkpoint` (each rank its own RNG states); returns the
    step it was saved after. Every rank reads the file: keep checkpoints on shared storage."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    if len(rngs) != distributed.world_size():
        raise ValueError(f"{path} was written by {len(rngs)} processes, this run has {distributed.world_size()}: "
                         "resume with the same number of processes")
    _set_rng_state(rngs[distributed.rank()])
    return state["step"]


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step-*.pt"))
    return found[-1] if found else None


def save_model_state(path: Path, model: nn.Module) -> None:
    """Write the model's full (gathered) state dict to `path` atomically; rank 0 writes."""
    state = full_model_state(model)
    if distributed.rank() == 0:
        with atomic_write(path) as tmp:
            torch.save(state, tmp)
    distributed.barrier()


def load_model_state(path: Path, model: nn.Module) -> None:
    """Load a state dict written by `save_model_state` into `model` (plain, DDP or FSDP)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's full (unsharded) state dict on the CPU: a plain module's, DDP's module's, or an
    FSDP-sharded one's gathered. A collective under torch.distributed: every rank calls it."""
    return get_model_state_dict(model, options=FULL_STATE)
