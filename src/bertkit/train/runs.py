"""Run folders: one run per folder, one process at a time, resumed only by the run that made it.

`run_folder(out, run, resume, overwrite)` wraps a whole pretraining or fine-tuning run:
- an exclusive lock (`fcntl.flock` on out/.bertkit.lock, which holds the owner's process id): a
  second run on the same folder fails at once, naming the process that holds it;
- temporaries that killed writers left behind (in the folder and in checkpoints/) are removed,
  and counted;
- run.json records the run (its configuration) when it starts. A new run in a folder that holds
  another run's checkpoints is an error unless `overwrite`, which first clears every file a run
  writes there. `resume` requires the recorded run to be this one in everything but the step
  budget (it says what differs), and a checkpoint to resume from. (A run that stopped before its
  first checkpoint left nothing to keep: a new run simply takes the folder.)
Under torch.distributed rank 0 claims the folder and every rank learns the verdict.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from ..files import write_text
from . import distributed
from .checkpoint import checkpoints

NOT_COMPARED = ("train.max_steps", "train.max_minutes", "finetune.epochs", "distill.epochs",  # the step budget
                "pretrain.out", "finetune.out", "distill.out")  # may change on --resume; the folder is the folder
                                                                # however it is spelt
RUN_FILES = ("run.json", "log.jsonl", "loss.png", "best.safetensors", "best.pt", "dev_metrics.json",
             "finetune_config.json", "pretrain_config.json", "distill_config.json", "languages.json", "config.json", "model.safetensors",
             "task.json", "task_head.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json")
RUN_FOLDERS = ("checkpoints", "tensorboard")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked: in use, another run's, or nothing in it to resume."""


@contextlib.contextmanager
def run_folder(out: str | Path, run: dict, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Claim `out` for the run described by `run` ({section: its fields}) for the block's duration."""
    out, lock, problem = Path(out), None, None
    if distributed.rank() == 0:
        try:
            lock = _claim(out, run, resume, overwrite)
        except Exception as e:  # every rank must learn it, or the others would wait for rank 0 forever
            problem = e
    verdict = distributed.gather_objects(str(problem) if problem else None)[0]
    if verdict is not None:
        raise problem or RunFolderError(verdict)
    try:
        yield out
    finally:
        if lock is not None:
            lock.close()


def _claim(out: Path, run: dict, resume: bool, overwrite: bool):
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: is a file; --out names the folder a run writes into")
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if resume and not out.is_dir():
        raise RunFolderError(f"nothing to resume in {out}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        _remove_temporaries(out)
        if resume:
            _check_resume(out, _recorded(out), run)
        elif overwrite:
            _clear(out)  # a damaged run record too
        elif checkpoints(out) or _legacy(out):
            recorded = _recorded(out)
            started = f", started {recorded['started']}" if recorded else ""
            raise RunFolderError(f"{out} holds another run{started}: pass --overwrite to replace it (its "
                                 "checkpoints and logs are deleted), --resume to continue it, or another --out")
        if not resume:
            now = time.strftime("%Y-%m-%d %H:%M:%S")
            write_text(out / "run.json", json.dumps({"run": run, "started": now}, indent=1))
    except BaseException:
        lock.close()
        raise
    return lock


def _lock(out: Path):
    """An exclusive lock on the folder, held while the returned file stays open."""
    handle = open(out / ".bertkit.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunFolderError(f"{out} is in use by another bertkit run (process {holder}): wait for it to finish, "
                             "or give another --out") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _remove_temporaries(out: Path) -> None:
    """Remove what writers killed mid-write left: ours (.NAME.XXXX.tmp, .step-N.tmp) and safetensors' (.tmpXXXX)."""
    stale = sorted({p for folder in (out, out / "checkpoints") for pattern in (".*.tmp*", ".tmp*")
                    for p in folder.glob(pattern)})
    if not stale:
        return
    size = sum(f.stat().st_size for p in stale for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    print(f"note: removed {len(stale)} temporary files ({size / 2**20:.1f} MiB) that an interrupted run left in {out}",
          file=sys.stderr)


def _recorded(out: Path) -> dict | None:
    path = out / "run.json"
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())
        return recorded if isinstance(recorded, dict) and "run" in recorded else None
    except ValueError:
        raise RunFolderError(f"{path}: not valid JSON; the folder's run record is damaged: pass --overwrite to "
                             "start a new run there") from None


def _legacy(out: Path) -> list[Path]:
    """Checkpoints of bertkit 0.1 (pickles, which loading would execute)."""
    return sorted((out / "checkpoints").glob("step-*.pt"))


def _check_resume(out: Path, recorded: dict | None, run: dict) -> None:
    if _legacy(out) and not checkpoints(out):
        raise RunFolderError(f"{_legacy(out)[-1]} is a pickle written by an older bertkit; loading it could run "
                             "code, so bertkit does not: start the run anew with --overwrite")
    if recorded is None:
        if checkpoints(out):
            raise RunFolderError(f"{out} holds checkpoints but no run.json saying which run wrote them: pass "
                                 "--overwrite to start anew there")
        raise RunFolderError(f"nothing to resume in {out}: no run was started there")
    differences = _differences(recorded["run"], json.loads(json.dumps(run)))
    if differences:
        raise RunFolderError(f"{out} holds another run: --resume continues only the same run, and this command "
                             f"differs in {'; '.join(differences)}")
    if not checkpoints(out):
        raise RunFolderError(f"nothing to resume in {out}: the run wrote no checkpoint before it stopped")


def _differences(recorded: dict, run: dict) -> list[str]:
    """"section.field: X there, Y now" for each field that differs, the step budget aside."""
    def flat(sections: dict) -> dict:
        return {f"{s}.{k}": v for s, fields in sections.items() for k, v in fields.items()}
    there, now = flat(recorded), flat(run)
    return [f"{k}: {there.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(there) | set(now))
            if k not in NOT_COMPARED and there.get(k) != now.get(k)]


def _clear(out: Path) -> None:
    for name in RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
