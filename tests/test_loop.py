"""The training loop: schedule, weight decay groups, accumulation, exact resume after SIGKILL."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit import precision
from bertkit.config import TrainConfig
from bertkit.train.checkpoint import read_tensors
from bertkit.train.loop import NonFiniteLossError, fit, linear_schedule, parameter_groups

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_job import build, run  # noqa: E402


def losses(records):
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_linear_warmup_then_linear_decay():
    assert [linear_schedule(s, 4, 10) for s in range(10)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_no_weight_decay_on_biases_and_layer_norms():
    decay, no_decay = parameter_groups(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)), 0.01)
    assert [p.shape for p in decay["params"]] == [(4, 3)]
    assert sorted(p.shape for p in no_decay["params"]) == [(4,), (4,), (4,)] and no_decay["weight_decay"] == 0


def test_accumulation_equals_one_big_batch(tmp_path):
    whole, model_a = run(tmp_path / "a", 4, micro_batches=1, dropout=0.0)
    split, model_b = run(tmp_path / "b", 4, micro_batches=4, dropout=0.0)
    for step, loss in losses(whole).items():
        assert losses(split)[step] == pytest.approx(loss, abs=1e-5)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert (p - q).abs().max() < 1e-5


def test_killed_run_resumes_exactly(tmp_path):
    steps = 40
    reference, _ = run(tmp_path / "reference", steps)
    out = tmp_path / "killed"
    job = subprocess.Popen([sys.executable, str(Path(__file__).parent / "pretrain_job.py"), str(out), str(steps)])
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("step-00000[1-9]*")):
        time.sleep(0.05)
    job.kill()  # SIGKILL: no clean-up runs
    job.wait()
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert checkpoints, "the job wrote no checkpoint before it was killed"
    killed_at = int(checkpoints[-1].name.split("-")[1])
    assert killed_at < steps - 1, "the job finished before it was killed; nothing was resumed"
    resumed, _ = run(out, steps, resume=True)
    after = {s: l for s, l in losses(resumed).items() if s > killed_at}
    assert after and all(after[s] == pytest.approx(losses(reference)[s], abs=1e-6) for s in after)
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == steps - 1


@pytest.mark.parametrize("name", ["int8", "fp32"])
def test_evaluations_during_training_hold_no_copies_of_the_layers(tmp_path, name):
    """An evaluation runs inference copies of the linear layers (int8; oneDNN-packed fp32 where the CPU has
    AVX-512); the next step changes the weights, so the loop lets them go rather than hold their memory."""
    pretrainer, data = build()
    encoder, made = pretrainer.encoder, []

    def evaluate(model) -> dict[str, float]:
        with torch.no_grad(), precision.evaluating(encoder, name):
            hidden = encoder(torch.tensor([[2, 5, 6, 7, 3]])).last_hidden_state
        made.append(sum(m in precision._COPIES for m in encoder.modules()))  # kept for the next call
        return {"norm": float(hidden.norm())}

    fit(pretrainer, data, TrainConfig(max_steps=4, eval_every=2, lr=1e-3, warmup_steps=1), tmp_path,
        evaluate=evaluate, progress=False)
    assert made[0] > 0 or (name == "fp32" and not precision.packs_linears())  # copies were made and used
    assert not any(m in precision._COPIES for m in pretrainer.modules())


def test_non_finite_loss_stops_with_intact_checkpoint(tmp_path):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, batch):
            self.calls += 1
            return {"mlm": self.w * (math.nan if self.calls == 4 else 1.0)}

    class Data:
        def batches(self, step, rank, world):
            return [{"counts": {"mlm": 1}}]

    config = TrainConfig(max_steps=10, warmup_steps=0, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match="step 3: loss is not finite.*checkpoint.*intact"):
        fit(Exploding(), Data(), config, tmp_path, progress=False)
    last = sorted((tmp_path / "checkpoints").glob("step-*"))[-1]
    state, model = json.loads((last / "state.json").read_text()), read_tensors(last / "model.safetensors")
    assert state["step"] == 2 and math.isfinite(float(model["w"]))
