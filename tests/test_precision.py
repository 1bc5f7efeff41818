import pytest
import torch

from bertkit import precision


def test_resolve():
    assert precision.resolve("fp32") == torch.float32
    assert precision.resolve("bf16") == torch.bfloat16
    expected = torch.bfloat16 if precision.bf16_is_fast("cpu") else torch.float32
    assert precision.resolve("auto") == expected
    with pytest.raises(ValueError, match="precision must be"):
        precision.resolve("fp16")


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    a = torch.randn(4, 4)
    with precision.autocast(torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with precision.autocast(torch.float32):
        assert (a @ a).dtype == torch.float32


def test_evaluating_restores_the_training_mode():
    model = torch.nn.Linear(2, 2)
    with precision.evaluating(model) as device:
        assert not model.training and device == torch.device("cpu")
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError), precision.evaluating(model):
        model.train()
        raise RuntimeError
    assert not model.training
