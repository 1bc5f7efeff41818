"""Training-state checkpoints that lose nothing, and whose loading can run no code.

A checkpoint is a folder, out/checkpoints/step-NNNNNNN/, written whole under a temporary name and
renamed when complete, so a kill leaves either no checkpoint or a whole one:
- model.safetensors, optimizer.safetensors, rng.safetensors: every tensor (the full, unsharded
  model and optimizer states, and each rank's generator states);
- state.json, written last: the step (which is the data position: a step's training data is a
  function of its number, see train/loop.py), the scheduler state, the optimizer's settings, the
  Python and NumPy generator positions, and each file's size and SHA-256.
Nothing is unpickled: safetensors and JSON hold data only. Resuming takes the newest checkpoint
whose files match their recorded sizes and digests, and reports (and removes) any newer one it skips.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

from ..files import write_safetensors, write_text
from . import distributed

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")  # beside state.json


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, from an older bertkit, or from another setup."""


class DiskFullError(OSError):
    """Writing a checkpoint ran out of space; the message names the checkpoint still intact."""


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's full (unsharded) state dict on the CPU: a plain module's, DDP's module's, or an
    FSDP-sharded one's gathered. A collective under torch.distributed: every rank calls it."""
    return get_model_state_dict(model, options=FULL_STATE)


def gathered(model: nn.Module, empty: Callable[[], nn.Module], prefix: str = "") -> nn.Module | None:
    """The part of `model` under `prefix` (the whole model for ""), whole, on the CPU of rank 0:
    loaded into `empty()`, a new module of its shape (FSDP shards are gathered: a collective, every
    rank calls it). None on the other ranks. A decoder tied to the embeddings may be left out of
    the state; the module ties it again."""
    state = full_model_state(model)
    if distributed.rank() != 0:
        return None
    part = empty()
    missing, unexpected = part.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()
                                                if k.startswith(prefix)}, strict=False)
    missing = [k for k in missing if not k.endswith("mlm_head.decoder.weight")]
    if missing or unexpected:
        raise RuntimeError(f"gathering the trained model failed: missing {missing}, unexpected {unexpected}")
    return part


def write_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    """Tensors to a safetensors file; tensors that share memory (a tied decoder) are stored once,
    and the file's metadata names the others, which `read_tensors` restores."""
    stored, aliases, seen = {}, {}, {}
    for name, t in tensors.items():
        view = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if view in seen:
            aliases[name] = seen[view]
        else:
            seen[view] = name
            shared = any(v[0] == view[0] for v in seen if v != view)
            stored[name] = t.detach().clone() if shared else t.detach().contiguous()
    write_safetensors(path, stored, metadata={"aliases": json.dumps(aliases)})


def read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors `write_tensors` wrote, tied ones restored as the same tensor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read its tensors ({e})") from None
    return {**tensors, **{name: tensors[source] for name, source in aliases.items()}}


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ------------------------------------------------------------------------------ generators


def _rng_state() -> tuple[dict[str, Tensor], dict]:
    """This process's generator states: tensors, and what JSON holds."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return tensors, {"numpy": [kind, pos, has_gauss, gauss], "python": [version, list(internal), gauss_next]}


def _set_rng_state(tensors: dict[str, Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    kind, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))
    cuda = sorted(k for k in tensors if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


# ------------------------------------------------------------------------------ writing


def save_checkpoint(out: Path, step: int, model: nn.Module, optimizer, scheduler, keep: int) -> Path | None:
    """Write out/checkpoints/step-NNNNNNN/ (see the module docstring) and keep only the newest `keep`.
    Every rank calls it (a plain, DDP or FSDP model alike): the full (unsharded) model and optimizer
    states and every rank's generator states are gathered, and rank 0 writes.

    Raises:
        DiskFullError: the disk filled up; the message names the newest intact checkpoint.
    """
    model_state, optimizer_state = get_state_dict(model, optimizer, options=FULL_STATE)
    rngs = distributed.gather_objects(_rng_state())
    if distributed.rank() != 0:
        return None
    folder = out / "checkpoints"
    path = folder / f"step-{step:07d}"
    tmp = folder / f".{path.name}.tmp"
    try:
        _write(tmp, step, model_state, optimizer_state, scheduler.state_dict(), rngs)
        shutil.rmtree(path, ignore_errors=True)  # a checkpoint of this step from before a resume
        tmp.rename(path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in DISK_FULL:
            intact = next((c for c in reversed(checkpoints(out)) if _verifies(c)), None)
            kept = f"the newest intact checkpoint is {intact}" if intact else "no checkpoint is intact"
            raise DiskFullError(f"no room to write {path} ({os.strerror(e.errno)}: the disk is full, or a file "
                                f"size limit is reached); {kept}: free space, then resume") from None
        raise
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return path


def _write(folder: Path, step: int, model_state: dict, optimizer_state: dict, scheduler_state: dict,
           rngs: list[tuple[dict, dict]]) -> None:
    """The checkpoint's files into `folder`, state.json last (with the others' sizes and digests)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    entries = {f"{name}/{key}": v for name, per_param in optimizer_state["state"].items()
               for key, v in per_param.items()}
    moments = {k: v for k, v in entries.items() if isinstance(v, Tensor)}  # the plain numbers go to JSON
    scalars = {k: v for k, v in entries.items() if not isinstance(v, Tensor)}
    write_tensors(folder / "model.safetensors", model_state)
    write_tensors(folder / "optimizer.safetensors", moments)
    write_tensors(folder / "rng.safetensors", {f"{r}.{k}": v for r, (t, _) in enumerate(rngs) for k, v in t.items()})
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in sorted(folder.glob("*.safetensors"))}
    state = {"step": step, "scheduler": scheduler_state, "param_groups": optimizer_state["param_groups"],
             "optimizer_scalars": scalars, "rng": [plain for _, plain in rngs], "files": files}
    write_text(folder / "state.json", json.dumps(state))


# ------------------------------------------------------------------------------ reading


def checkpoints(out: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    return sorted(p for p in (out / "checkpoints").glob("step-*") if p.is_dir())


def verify(path: Path) -> dict:
    """A checkpoint's state.json, once every file it lists has its recorded size and digest.

    Raises:
        CheckpointError: a file is missing, truncated or altered, or state.json is not the
            checkpoint's (written last, it is absent when the writer was killed).
    """
    try:
        state = json.loads((path / "state.json").read_text())
        recorded = {name: (state["files"][name]["bytes"], state["files"][name]["sha256"]) for name in FILES}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: no complete state.json ({type(e).__name__}: {e}); the checkpoint is "
                              "incomplete") from None
    for name, (size, digest) in recorded.items():
        file = path / name
        found = file.stat().st_size if file.exists() else None
        if found != size:
            raise CheckpointError(f"{file}: {found} bytes, {size} when written; the file is truncated or missing")
        if _digest(file) != digest:
            raise CheckpointError(f"{file}: its SHA-256 differs from the one recorded when it was written")
    return state


def _verifies(path: Path) -> bool:
    try:
        verify(path)
        return True
    except CheckpointError:
        return False


def resume(out: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Restore every state of the newest checkpoint that verifies (each rank its own generator
    states) and return the step it was saved after. Newer checkpoints that do not verify are
    reported and removed (a run resumed before them would otherwise prune its own by their step
    numbers). Every rank reads the files: keep checkpoints on shared storage.

    Raises:
        CheckpointError: no checkpoint verifies ("nothing to resume"), or the checkpoint was written
            by another number of processes.
    """
    for path in reversed(checkpoints(out)):
        try:
            state = verify(path)
        except CheckpointError as e:
            print(f"warning: skipping checkpoint {path.name}: {e}", file=sys.stderr)
            distributed.barrier()  # every rank has verified before rank 0 removes it
            if distributed.rank() == 0:
                shutil.rmtree(path)
            continue
        return _load(path, state, model, optimizer, scheduler)
    raise CheckpointError(f"nothing to resume in {out}: no intact checkpoint in {out / 'checkpoints'}")


def _load(path: Path, state: dict, model: nn.Module, optimizer, scheduler) -> int:
    if len(state["rng"]) != distributed.world_size():
        raise CheckpointError(f"{path} was written by {len(state['rng'])} processes, this run has "
                              f"{distributed.world_size()}: resume with the same number of processes")
    moments = read_tensors(path / "optimizer.safetensors")
    per_param: dict[str, dict] = {}
    for key, value in [*moments.items(), *state["optimizer_scalars"].items()]:
        name, _, field = key.rpartition("/")
        per_param.setdefault(name, {})[field] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state["param_groups"]]
    set_state_dict(model, optimizer, model_state_dict=read_tensors(path / "model.safetensors"),
                   optim_state_dict={"state": per_param, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    rank = distributed.rank()
    rng = read_tensors(path / "rng.safetensors")
    _set_rng_state({k.split(".", 1)[1]: v for k, v in rng.items() if k.split(".", 1)[0] == str(rank)}, state["rng"][rank])
    return state["step"]


# ------------------------------------------------------------------------------ best weights


def save_model_state(path: Path, model: nn.Module) -> None:
    """Write the model's full (gathered) state to a safetensors file atomically; rank 0 writes."""
    state = full_model_state(model)
    if distributed.rank() == 0:
        write_tensors(path, state)  # atomically, as every safetensors file
    distributed.barrier()


def load_model_state(path: Path, model: nn.Module) -> None:
    """Load a state written by `save_model_state` into `model` (plain, DDP or FSDP)."""
    set_model_state_dict(model, read_tensors(path), options=StateDictOptions(full_state_dict=True))
