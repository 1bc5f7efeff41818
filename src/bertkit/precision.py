"""Choosing the numeric precision: bf16 autocast where the processor computes it natively.

On CPUs with AVX-512 BF16 (or AMX) a bf16 matrix product runs about 2.7x faster than fp32; on
CPUs without it, bf16 is emulated and slower, so "auto" picks fp32 there. Autocast keeps layer
norms, softmax and reductions in fp32 and runs matrix products in bf16.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
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
        if torch.device(device).type == "cpu" and not bf16_is_fast(device):
            _warn_emulated_bf16()
        return torch.bfloat16
    raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")


@functools.cache
def _warn_emulated_bf16() -> None:
    """Once per process: bf16 asked for on a CPU that emulates it, with the slowdown measured here."""
    warnings.warn(f"this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX-512 BF16 or AMX) emulates bf16: a "
                  f"matrix product runs {emulated_bf16_slowdown():.1f}x slower than in fp32 here; use precision "
                  "'auto' (--dtype auto), which picks fp32 on this CPU", stacklevel=3)


@functools.cache
def emulated_bf16_slowdown(size: int = 512, repeats: int = 3) -> float:
    """How many times longer a (size x size) bf16 matrix product takes than fp32 on this CPU (best of
    `repeats`, measured once per process: about a tenth of a second)."""
    def best(x: torch.Tensor) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x @ x
            times.append(time.perf_counter() - start)
        return min(times)

    a = torch.randn(size, size)
    return best(a.bfloat16()) / best(a)


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
