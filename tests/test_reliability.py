"""Kill and resume, again and again: SIGKILLs at random moments, some while a checkpoint is being
written, and the run still ends with exactly the losses of an uninterrupted one and no leftovers."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest

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


def note_runs(origins: dict[int, tuple[str, float]], logged: dict[int, float], run: str) -> None:
    """Credit `run` with each step whose logged loss changed since the last look (a resume rewrites the
    steps after its checkpoint): origins is step -> (run, loss), to say which run computed a step that is off."""
    for step, loss in logged.items():
        if step not in origins or origins[step][1] != loss:
            origins[step] = (run, loss)


def test_runs_killed_at_random_moments_resume_to_the_same_losses(capsys, pretraining, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert run(capsys, *pretraining(reference, STEPS, "--train.checkpoint_every=1"))[0] == 0
    rng, mid_write_kills = random.Random(11), 0
    origins: dict[int, tuple[str, float]] = {}  # step -> the run whose loss the log kept, and the loss
    for cycle in range(5):
        resume = ["--resume"] if list((out / "checkpoints").glob("step-*")) else []
        job = subprocess.Popen([sys.executable, "-m", "bertkit.cli",
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
        note_runs(origins, losses(out) if (out / "log.jsonl").exists() else {}, f"killed run {cycle}")
        if job.returncode == 0:
            break  # finished before the kill
    assert mid_write_kills >= 1, "no kill landed while a checkpoint was being written"
    code, _ = run(capsys, *pretraining(out, STEPS, "--train.checkpoint_every=1", "--resume"))
    assert code == 0
    assert sorted(losses(out)) == list(range(STEPS))
    note_runs(origins, losses(out), "the last resume (in this process)")
    expected = losses(reference)
    off = {step: origins[step][0] for step, loss in losses(out).items() if abs(loss - expected[step]) > 1e-6}
    assert losses(out) == pytest.approx(expected, abs=1e-6), f"steps off, and the run that computed them: {off}"
    assert not list(out.rglob(".*.tmp*")) + list(out.rglob(".tmp*")), "temporary files were left behind"
