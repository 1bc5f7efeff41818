import warnings

import pytest
import torch

from bertkit import precision


def test_resolve():
    assert precision.resolve("fp32") == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # where the CPU emulates bf16 (tested below)
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


def test_asking_for_bf16_where_the_cpu_emulates_it_warns_once(monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": False)
    precision._warn_emulated_bf16.cache_clear()
    with pytest.warns(UserWarning, match=r"emulates bf16: a matrix product runs [0-9.]+x slower than in fp32 here; "
                                         r"use precision 'auto'"):
        assert precision.resolve("bf16") == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.resolve("bf16")  # once per process
        precision.resolve("auto")
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device="cpu": True)
    precision._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: nothing to say
        assert precision.resolve("bf16") == torch.bfloat16
