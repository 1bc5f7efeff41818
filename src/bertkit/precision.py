"""Choosing the numeric precision: bf16 autocast where the processor computes it natively, int8
for inference on any CPU.

On CPUs with AVX-512 BF16 (or AMX) a bf16 matrix product runs about 2.7x faster than fp32; on
CPUs without it, bf16 is emulated and slower, so "auto" picks fp32 there. Autocast keeps layer
norms, softmax and reductions in fp32 and runs matrix products in bf16.

"int8" (inference only, CPU) is PyTorch's dynamic quantization: each `nn.Linear` runs as a
`torch.ao.nn.quantized.dynamic.Linear`, its weights quantized once per output channel (`int8_copy`),
each batch of activations quantized on the fly, the product in int8 with fp32 results; attention,
layer norms, the rest and linear layers marked `int8 = False` (model.py says which, and why) stay
fp32. `evaluating(model, "int8")` swaps the linear layers in for its duration
and keeps the quantized copies until the weights change.

`bf16_linears(model)` swaps in bf16 copies of the linear layers the same way. Under bf16 autocast
the outputs do not change, but autocast keeps its casts of the weights only while one autocast
context lasts, so a caller that runs many short calls (the server: one call per gathered batch)
otherwise pays for casting every weight in each. The copies (half the fp32 weights' size) stay in
memory as long as the model does.
"""

from __future__ import annotations

import contextlib
import functools
import timeit
import warnings
import weakref
from typing import Callable, ContextManager, Iterator, Literal

import torch
from torch import Tensor, nn

Precision = Literal["auto", "fp32", "bf16", "int8"]


def matmul_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype a matrix product of `x` and `weight` runs in: autocast's where it is on for their
    device, else the one their own dtypes promote to."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.result_type(x, weight)


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matrix products run natively (CUDA with bf16, or AVX-512 BF16 / AMX CPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def resolve(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """"auto" -> bf16 where it is fast, else fp32; "fp32" / "bf16" as asked; "int8" -> torch.qint8
    (the linear layers' products; see the module docstring)."""
    if precision == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only (PyTorch's quantized kernels), not on "
                             f"{torch.device(device)}; use 'auto' there")
        return torch.qint8
    if precision == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    if precision in ("fp32", "float32"):
        return torch.float32
    if precision in ("bf16", "bfloat16"):
        if torch.device(device).type == "cpu" and not bf16_is_fast(device):
            _warn_emulated_bf16()
        return torch.bfloat16
    raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'int8' (inference only), not {precision!r}")


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
    a = torch.randn(size, size)
    bf16, fp32 = (min(timeit.repeat(lambda: x @ x, number=1, repeat=repeats)) for x in (a.bfloat16(), a))
    return bf16 / fp32


def autocast(dtype: torch.dtype, device: torch.device | str = "cpu") -> ContextManager:
    """bf16 autocast for `dtype == torch.bfloat16`, a no-op for fp32 and int8 (fp32 activations)."""
    if dtype != torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, precision: str = "fp32") -> Iterator[torch.device]:
    """`model` in eval mode under `precision`'s autocast, its training mode restored on leaving;
    yields the device of its parameters."""
    device = next(model.parameters()).device
    dtype = resolve(precision, device)
    was_training = model.training
    model.eval()
    try:
        with autocast(dtype, device), int8_linears(model) if dtype == torch.qint8 else contextlib.nullcontext():
            yield device
    finally:
        model.train(was_training)


# linear layer -> {how it was copied: (the versions of its weights when copied, the copy)}
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def int8_copy(linear: nn.Linear) -> nn.Module:
    """`linear` as PyTorch's dynamically quantized linear layer, its weights quantized symmetrically
    per output channel. Activations keep PyTorch's x86 default of 7 bits (`reduce_range`): with all 8,
    the u8 x s8 products saturate int16 on CPUs without VNNI (a 2-layer test model's outputs were
    then off by 0.5 where 7 bits gave 0.01)."""
    weight = linear.weight.detach().float()
    observer = torch.ao.quantization.default_per_channel_weight_observer()
    observer(weight)
    scales, zero_points = observer.calculate_qparams()
    with warnings.catch_warnings():  # quantized tensors are announced to move to torchao
        warnings.filterwarnings("ignore", "torch.quantize_per")
        quantized = torch.quantize_per_channel(weight, scales.double(), zero_points.long(), 0, torch.qint8)
        layer = torch.ao.nn.quantized.dynamic.Linear(linear.in_features, linear.out_features,
                                                     bias_=linear.bias is not None)
        layer.set_weight_bias(quantized, None if linear.bias is None else linear.bias.detach().float())
    return layer


def bf16_copy(linear: nn.Linear) -> nn.Linear:
    """`linear` with bf16 weights: what autocast would cast them to on every call."""
    layer = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                      device=linear.weight.device, dtype=torch.bfloat16)
    layer.load_state_dict(linear.state_dict())
    return layer.requires_grad_(False)


def _cached_copy(linear: nn.Linear, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    """`make(linear)`, made once and again only when its weights change (their autograd version
    counters move with every in-place update: an optimizer step, a load)."""
    versions = tuple(p._version for p in linear.parameters())
    copies = _COPIES.setdefault(linear, {})
    if make not in copies or copies[make][0] != versions:
        copies[make] = (versions, make(linear))
    return copies[make][1]


def int8_linear(linear: nn.Linear) -> nn.Module:
    """The int8 copy of `linear` (`int8_copy`), kept while its weights stay the same."""
    return _cached_copy(linear, int8_copy)


@contextlib.contextmanager
def _swapped_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module],
                    keep: Callable[[nn.Linear], bool] = lambda layer: True) -> Iterator[None]:
    """Every `nn.Linear` of `model` for which `keep` holds replaced by its cached `make` copy while
    the context lasts (`make` a module-level function: the copies are kept per function)."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear and keep(child)]
    try:  # a copy that fails half-way (memory) leaves no layer swapped
        for parent, name, child in swaps:
            setattr(parent, name, _cached_copy(child, make))
        yield
    finally:
        for parent, name, child in swaps:
            setattr(parent, name, child)


def int8_linears(model: nn.Module) -> ContextManager:
    """`model`'s linear layers as int8 copies, but those marked `layer.int8 = False` (the model knows
    which layers int8 harms)."""
    return _swapped_linears(model, int8_copy, lambda layer: getattr(layer, "int8", True))


def bf16_linears(model: nn.Module) -> ContextManager:
    """`model`'s linear layers as bf16 copies made once (see the module docstring); one thread at a
    time, since the layers are swapped in the model itself."""
    return _swapped_linears(model, bf16_copy)
