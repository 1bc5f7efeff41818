"""Run folders (train/runs.py): one run per folder, a lock, resume only of the same run, stale temporaries."""

from __future__ import annotations

import os
import subprocess
import sys

from tiny_pretraining import losses, pretraining, run  # noqa: F401 (pretraining: a fixture)
from tiny_task_data import conll, tiny  # noqa: F401 (fixtures)


def steps_in(out) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))


def test_a_reused_folder_needs_overwrite_and_resume_continues_the_new_run(capsys, pretraining, tmp_path):
    out = tmp_path / "a"
    assert run(capsys, *pretraining(out, 20))[0] == 0
    old_model = (out / "model.safetensors").read_bytes()
    code, err = run(capsys, *pretraining(out, 10))
    assert code == 2 and f"{out} holds another run" in err and "--overwrite" in err
    assert steps_in(out) == [14, 19]  # nothing of the old run was touched
    assert run(capsys, *pretraining(out, 10), "--overwrite")[0] == 0
    assert steps_in(out) == [4, 9] and max(losses(out)) == 9
    assert run(capsys, *pretraining(out, 15), "--resume")[0] == 0
    assert steps_in(out) == [9, 14] and max(losses(out)) == 14 and min(losses(out)) == 0
    assert (out / "model.safetensors").read_bytes() != old_model


def test_resume_refuses_another_runs_folder_and_says_what_differs(capsys, pretraining, tmp_path):
    out = tmp_path / "b"
    assert run(capsys, *pretraining(out, 5))[0] == 0
    code, err = run(capsys, *pretraining(out, 10), "--resume", "--seed", "1", "--train.lr=2e-3")
    assert code == 2 and "--resume continues only the same run" in err
    assert "train.lr: 0.001 there, 0.002 now" in err and "train.seed: 0 there, 1 now" in err


def test_resume_in_an_empty_or_mistyped_folder_is_an_error(capsys, pretraining, tiny, conll, tmp_path):
    code, err = run(capsys, *pretraining(tmp_path / "typo", 5), "--resume")
    assert code == 2 and f"nothing to resume in {tmp_path / 'typo'}" in err and not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", conll[0], "--out", tmp_path / "empty",
                    "--resume")
    assert code == 2 and f"nothing to resume in {tmp_path / 'empty'}" in err


def test_a_second_run_on_a_folder_in_use_fails_naming_the_holder(capsys, tiny, conll, tmp_path):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom bertkit.train.runs import run_folder\n"
                               "claim = run_folder(sys.argv[1], {}, resume=False, overwrite=False)\nclaim.__enter__()\n"
                               "print('held', flush=True)\ntime.sleep(120)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", conll[0], "--out", out)
        assert code == 2 and f"{out} is in use by another bertkit run (process {holder.pid})" in err
        assert not (out / "log.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run(capsys, "finetune", "tag", "--model", tiny, "--train", conll[0], "--out", out, "--epochs", "1")[0] == 0


def test_stale_temporaries_are_removed_when_a_run_starts(capsys, pretraining, tmp_path):
    out = tmp_path / "c"
    assert run(capsys, *pretraining(out, 5))[0] == 0
    stale = [out / "checkpoints" / ".step-0000007.tmp", out / ".model.safetensors.x1y2.tmp",
             out / "checkpoints" / ".step-0000009.pt.abc.tmp", out / ".tmpA1b2C3"]  # the last: safetensors' own
    stale[0].mkdir()
    (stale[0] / "model.safetensors").write_bytes(os.urandom(4096))
    stale[1].write_bytes(os.urandom(2048))
    stale[2].write_bytes(os.urandom(1024))
    stale[3].write_bytes(os.urandom(512))
    code, err = run(capsys, *pretraining(out, 10), "--resume")
    assert code == 0 and "removed 4 temporary files" in err
    assert not any(p.exists() for p in stale)
    assert not list(out.rglob(".*.tmp*")) + list(out.rglob(".tmp*"))


def test_overwrite_clears_a_finished_runs_files_even_without_checkpoints(capsys, pretraining, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "task.json").write_text("{}")  # what a fine-tuning left, its checkpoints deleted by hand
    (out / "tensorboard").mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(capsys, *pretraining(out, 5), "--overwrite")[0] == 0
    assert not (out / "task.json").exists() and (out / "notes.txt").read_text() == "mine"
