"""Choosing the numeric precision: bf16 autocast where the processor computes it natively.

On CPUs with AVX-512 BF16 (or AMX) a bf16 matrix product runs about 2.7x faster than fp32; on
CPUs without it, bf16 is emulated and slower, so "auto" picks fp32 there. Autocast keeps layer
norms, softmax and reductions in fp32 and runs matrix products in bf16.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator, Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matrix products run natively (CUDA with bf16, or AVX-512 BF16 / AMX CPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def resolve(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """"auto" -> bf16 where it is fast, else fp32; "fp32" / "bf16" as asked."""
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if precision in ("fp32", "float32"):
        return torch.float32
    if precision in ("bf16", "bfloat16"):
        return torch.bfloat16
    raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")


def autocast(dtype: torch.dtype, device: torch.device | str = "cpu") -> ContextManager:
    """bf16 autocast for `dtype == torch.bfloat16`, a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, precision: str = "fp32") -> Iterator[torch.device]:
    """`model` in eval mode under `precision`'s autocast, its training mode restored on leaving;
    yields the device of its parameters."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with autocast(resolve(precision, device), device):
            yield device
    finally:
        model.train(was_training)
