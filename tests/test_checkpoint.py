"""Training-state checkpoints (train/checkpoint.py): no pickle on resume, damaged ones skipped, disk full."""

from __future__ import annotations

import errno
import json
import pickle
import resource
import signal
import subprocess
import sys

import pytest
import torch

from bertkit import CheckpointError, load_pretrained
from bertkit.config import TrainConfig
from bertkit.train import checkpoint
from bertkit.train.checkpoint import DiskFullError, read_tensors, write_tensors
from bertkit.train.loop import fit

from tiny_pretraining import losses, pretraining, run  # noqa: F401 (pretraining: a fixture)

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from pretrain_job import build  # noqa: E402


class Planted:
    """Unpickling this creates a file: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_tied_tensors_are_stored_once_and_come_back_tied(tmp_path):
    weight = torch.randn(5, 3)
    write_tensors(tmp_path / "t.safetensors", {"embeddings": weight, "decoder": weight, "bias": torch.zeros(5)})
    back = read_tensors(tmp_path / "t.safetensors")
    assert torch.equal(back["decoder"], weight) and back["decoder"] is back["embeddings"]


def test_resume_never_unpickles_a_planted_checkpoint(capsys, pretraining, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "code-ran"
    assert run(capsys, *pretraining(out, 5))[0] == 0
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    (newest / "optimizer.safetensors").write_bytes(pickle.dumps(Planted(marker)))  # a pickle in its place
    code, err = run(capsys, *pretraining(out, 10), "--resume")
    assert code == 2 and "optimizer.safetensors" in err and "nothing to resume" in err and not marker.exists()

    legacy = tmp_path / "legacy"
    (legacy / "checkpoints").mkdir(parents=True)
    torch.save({"step": 9, "model": Planted(marker)}, legacy / "checkpoints" / "step-0000009.pt")
    code, err = run(capsys, *pretraining(legacy, 10), "--resume")
    assert code == 2 and "step-0000009.pt is a pickle" in err and "--overwrite" in err and not marker.exists()


def test_a_pickled_weights_file_is_refused_by_name(tmp_path, minilm_dir):
    (tmp_path / "config.json").write_text((minilm_dir / "config.json").read_text())
    torch.save({"embeddings.word_embeddings.weight": Planted(tmp_path / "code-ran")}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as refused:
        load_pretrained(tmp_path)
    assert "pytorch_model.bin: holds more than tensors" in str(refused.value)
    assert "weights_only=False" not in str(refused.value) and not (tmp_path / "code-ran").exists()


def test_a_truncated_newest_checkpoint_is_skipped_and_the_older_one_resumed(capsys, pretraining, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "run"
    assert run(capsys, *pretraining(reference, 20))[0] == 0
    assert run(capsys, *pretraining(out, 20))[0] == 0
    newest = out / "checkpoints" / "step-0000019" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    (out / "log.jsonl").write_text("".join(line + "\n" for line in (out / "log.jsonl").read_text().splitlines()
                                           if json.loads(line)["step"] < 15))  # as if killed after step 14
    code, err = run(capsys, *pretraining(out, 20), "--resume")
    assert code == 0 and "skipping checkpoint step-0000019" in err and "truncated" in err
    assert losses(out) == pytest.approx(losses(reference), abs=1e-6)
    kept = sorted((out / "checkpoints").glob("step-*"))  # the damaged one is gone, not pruning the new ones
    assert [p.name for p in kept] == ["step-0000014", "step-0000019"] and all(checkpoint.verify(p) for p in kept)


def test_a_checkpoint_missing_a_file_in_its_record_does_not_verify(capsys, pretraining, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, *pretraining(out, 5))[0] == 0
    (only,) = (out / "checkpoints").glob("step-*")
    state = json.loads((only / "state.json").read_text())
    (only / "state.json").write_text(json.dumps({**state, "files": {}}))
    with pytest.raises(checkpoint.CheckpointError, match="no complete state.json"):
        checkpoint.verify(only)


def test_disk_full_names_the_checkpoint_still_intact(tmp_path, monkeypatch):
    model, data = build()
    writes = []

    def full_disk(path, tensors):
        writes.append(path)
        if len(writes) > 3:  # the first checkpoint's three files go through; the second's do not
            raise OSError(errno.ENOSPC, "No space left on device")
        write_tensors(path, tensors)
    monkeypatch.setattr(checkpoint, "write_tensors", full_disk)
    with pytest.raises(DiskFullError) as full:
        fit(model, data, TrainConfig(max_steps=10, checkpoint_every=2, log_every=1), tmp_path, progress=False)
    message = str(full.value)
    assert message.startswith(f"no room to write {tmp_path / 'checkpoints' / 'step-0000003'}")
    assert f"the newest intact checkpoint is {tmp_path / 'checkpoints' / 'step-0000001'}" in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000001"]  # no half checkpoint left


def test_a_real_write_failure_is_one_line_not_a_traceback(pretraining, tmp_path):
    def limit_file_size():  # writes past 4 MB fail with EFBIG, as they would with ENOSPC on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    done = subprocess.run([sys.executable, "-m", "bertkit.cli", *pretraining(tmp_path / "run", 5)],
                          capture_output=True, text=True, preexec_fn=limit_file_size)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: no room to write" in done.stderr and "no checkpoint is intact" in done.stderr
