"""Kill and resume, again and again: SIGKILLs at random moments, some while a checkpoint is being
written, and the run still ends with exactly the losses of an uninterrupted one and no leftovers."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest

import step_trace
from bertkit.train import loop
from tiny_pretraining import losses, pretraining, run  # noqa: F401 (pretraining: a fixture)

STEPS = 30


def wait_for(condition, seconds: float = 120) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def logged_steps(out) -> int:
    log = out / "log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def explain(step: int, loss: float, records: list[dict]) -> str:
    """What the traces say of a step whose logged loss is off: the run that computed it, and whether that
    step began from the reference's weights, batch and generator state."""
    reference = next(r for r in records if r["step"] == step and r["run"] == "the reference")
    found = [r for r in records if r["step"] == step and r["loss"] == loss and r["run"] != "the reference"]
    if not found:
        return f"step {step}: {loss} against {reference['loss']}, from a run that left no trace"
    differ = [k for k in ("weights", "batch", "generator") if found[-1][k] != reference[k]]
    began = f"another {' and '.join(differ)}" if differ else "the same weights, batch and generator state"
    return f"step {step}: {loss} against {reference['loss']}, computed by {found[-1]['run']} from {began}"


def test_runs_killed_at_random_moments_resume_to_the_same_losses(capsys, pretraining, tmp_path, monkeypatch):
    reference, out, trace = tmp_path / "reference", tmp_path / "killed", tmp_path / "trace.jsonl"
    monkeypatch.setattr(loop, "train_step", loop.train_step)  # put back after the test
    step_trace.trace(trace, "the reference")
    assert run(capsys, *pretraining(reference, STEPS, "--train.checkpoint_every=1"))[0] == 0
    rng, mid_write_kills = random.Random(11), 0
    for cycle in range(5):
        resume = ["--resume"] if list((out / "checkpoints").glob("step-*")) else []
        job = subprocess.Popen([sys.executable, step_trace.__file__, str(trace), f"killed run {cycle}",
                                *pretraining(out, STEPS, "--train.checkpoint_every=1", *resume)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = logged_steps(out)
        assert wait_for(lambda: logged_steps(out) >= start + 2 or job.poll() is not None)  # it makes progress
        if cycle % 2:  # kill while a checkpoint is half written
            mid_write_kills += wait_for(lambda: bool(list((out / "checkpoints").glob(".step-*.tmp"))), 30)
        else:
            time.sleep(rng.uniform(0.0, 0.4))
        job.kill()
        job.wait()
        if job.returncode == 0:
            break  # finished before the kill
    assert mid_write_kills >= 1, "no kill landed while a checkpoint was being written"
    step_trace.trace(trace, "the last resume (in this process)")
    code, _ = run(capsys, *pretraining(out, STEPS, "--train.checkpoint_every=1", "--resume"))
    assert code == 0
    assert sorted(losses(out)) == list(range(STEPS))
    expected, records = losses(reference), step_trace.read(trace)
    off = [explain(step, loss, records) for step, loss in losses(out).items() if abs(loss - expected[step]) > 1e-6]
    assert losses(out) == pytest.approx(expected, abs=1e-6), "steps off:\n" + "\n".join(off)
    assert not list(out.rglob(".*.tmp*")) + list(out.rglob(".tmp*")), "temporary files were left behind"
