"""Choosing the numeric precision: bf16 autocast where the processor computes it natively, int8
for inference on any CPU.

On CPUs with AVX-512 BF16 (or AMX) a bf16 matrix product runs about 2.7x faster than fp32; on
CPUs without it, bf16 is emulated and slower, so "auto" picks fp32 there. Autocast keeps layer
norms, softmax and reductions in fp32 and runs matrix products in bf16.

"int8" (inference only, CPU) runs every `nn.Linear` as an `Int8Linear`: its weights quantized once
per output channel, each token's activations quantized on the fly with a scale of its own, the
product in int8 with int32 sums by PyTorch's `torch._int_mm` (oneDNN), rescaled to fp32; attention,
layer norms and the rest stay fp32. This departs from PyTorch's dynamic quantization
(`torch.ao.nn.quantized.dynamic.Linear`: one activation scale per batch, 7 bits), which the
feed-forward's second layer could not take: its inputs, the activation's outputs, carry outliers that
one scale per batch flattens (all-MiniLM-L6-v2, STS-B dev Spearman 0.8616 against fp32's 0.8672;
0.8658 with a scale per token). STS-B dev embedding on an AVX-512 EPYC, 2 threads, one alternating
run: 1.51x fp32's speed with that layer left in fp32, 1.85x with it in int8 (BENCHMARKS.md
`cpu-inference`: 1.68x, median of 5). On a CPU with AMX, batches of 128 tokens or more take oneDNN's
int8 product on weights packed once for AMX instead, with the weights' scales applied inside it: the same
results, 1.1x-1.2x faster (`int8_runs_on_amx`). `evaluating(model, "int8")` swaps the layers in for its duration
and keeps the quantized copies until the weights change.

bf16 inference swaps in copies of the linear layers the same way, made once: on a CPU with AVX-512
where oneDNN computes bf16, `PackedLinear`s with bf16 weights reordered once into oneDNN's layout
(below), else plain bf16 copies. Autocast casts the weights anew in every autocast context (a call
of `embed`, a gathered batch of the server), and its bf16 product reorders them for oneDNN anew in
every call. all-MiniLM-L6-v2's shapes on a Xeon with AMX (torch 2.13, 2 threads, 200 calls each):
1.2x-1.7x faster at 576-1152 tokens, 1.9x-2.4x at 12-96; the same results. With oneDNN held below
AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16) 1.02x-1.39x. The feed-forward's GELU is then fused into
its first product (computed on the fp32 sums before they are rounded to bf16, where autocast rounds
first). The copies hold half as much memory as the fp32 weights.

In fp32 on a CPU with AVX-512, inference runs the linear layers as `PackedLinear`s: their weights
reordered once into oneDNN's blocked layout and each product computed by oneDNN, where `F.linear`
calls MKL's sgemm, which packs the weights again at every call. Measured with all-MiniLM-L6-v2's
shapes (M = 256-1024 tokens, 2 threads, torch 2.13, AMD EPYC with AVX-512): 207-223 GFLOP/s against
MKL's 167-202 (ONNX Runtime's MLAS, the peer, 196-224). With AVX-512 switched off on the same machine
(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2, standing in for an
AVX2-only CPU) the two were level, so the plain layers stay where PyTorch's level is below AVX-512. The
copies hold as much memory as the fp32 weights; `evaluating` keeps them until the weights change.

Importing bertkit calls `settle_vector_maths` once: PyTorch's CPU exp, log, tanh, erf, sqrt and a few
more call oneMKL's vector maths, which picks its kernel for each function on the function's first call;
when two threads make that first call together, one of them can run a low-accuracy kernel for its half
of the tensor (pytorch/pytorch#188792, oneMKL 2024.2 as PyTorch's wheels link it). Seen here as a
softmax off by up to 9e-5 (relative) in one thread's half of a batch, in 16 of 360 fresh processes
on two threads beside a busy loop, and in none of 240 after the warm-up; it failed the test that
`embed --resume` equals an uninterrupted run (`tests/vml_first_calls.py` counts it). oneMKL 2025.0 and
later no longer race (per that issue).
"""

from __future__ import annotations

import contextlib
import functools
import os
import timeit
import warnings
import weakref
from typing import Callable, ContextManager, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Precision = Literal["auto", "fp32", "bf16", "int8"]


# PyTorch functions whose CPU kernels call oneMKL's vector maths (ATen's cpu/vml.h)
VECTOR_MATHS = (torch.acos, torch.asin, torch.atan, torch.cos, torch.erf, torch.erfc, torch.erfinv, torch.exp,
                torch.log, torch.log10, torch.log2, torch.sin, torch.sqrt, torch.tan, torch.tanh, torch.trunc)


@functools.cache
def settle_vector_maths() -> None:
    """Make the first call of each of `VECTOR_MATHS`, in fp32 and fp64, on one element (one thread), so
    that oneMKL has picked its kernels before two threads call one together (module docstring)."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype, device="cpu")  # the CPU's kernels, whatever the default device
        for function in VECTOR_MATHS:
            function(x)


def matmul_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype a matrix product of `x` and `weight` runs in: autocast's where it is on for their
    device, else the one their own dtypes promote to."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.result_type(x, weight)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon from Sapphire Rapids), whether or not PyTorch may use them."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX), whether or not PyTorch may use them."""
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()) or cpu_has_amx()


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matrix products run natively: CUDA with bf16, or a CPU with bf16 instructions whose
    products are measured faster than fp32's (`emulated_bf16_slowdown`, once per process): the flags alone do
    not say it, since an instruction-set limit (ONEDNN_MAX_CPU_ISA=AVX2) leaves the instructions unused and bf16
    emulated (65x fp32's product; offline bf16 embedding at 88 sentences/s against about 600)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16() and emulated_bf16_slowdown() < 1


def resolve(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """"auto" -> bf16 where it is fast, else fp32; "fp32" / "bf16" as asked; "int8" -> torch.qint8
    (the linear layers' products; see the module docstring)."""
    if precision == "int8":
        if torch.device(device).type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU only (its products are torch._int_mm's), not on "
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
    why = "bf16 instructions left unused by an instruction-set limit such as ONEDNN_MAX_CPU_ISA" \
        if cpu_has_native_bf16() else "no AVX-512 BF16 or AMX"
    warnings.warn(f"this CPU ({torch.backends.cpu.get_cpu_capability()}, {why}) emulates bf16: a "
                  f"matrix product runs {emulated_bf16_slowdown():.1f}x slower than in fp32 here; use precision "
                  "'auto' (--dtype auto), which picks fp32 on this CPU", stacklevel=3)


@functools.cache
def emulated_bf16_slowdown(size: int = 512, repeats: int = 3) -> float:
    """How many times longer a (size x size) bf16 matrix product takes than fp32 on this CPU (best of
    `repeats`, measured once per process: about a tenth of a second); about 0.4 where bf16 is native."""
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
    """`model` in eval mode under `precision`'s autocast, with the linear layers `fast_linears`
    picks swapped in (int8; bf16; fp32 where packing is faster), its training mode and layers restored on
    leaving; yields the device of its parameters. The layers are swapped in the model itself: one
    thread at a time per model."""
    device = next(model.parameters()).device
    dtype = resolve(precision, device)
    was_training = model.training

    def training() -> bool:  # whether some module trains: reading the modes is cheaper than setting them
        # (all-MiniLM-L6-v2: 0.5 ms a call saved on the AMX Xeon, for the server's short calls)
        return any(m.training for m in model.modules())

    if training():
        model.eval()
    try:
        with autocast(dtype, device), fast_linears(model, dtype, device):
            yield device
    finally:
        if was_training or training():
            model.train(was_training)


# linear layer -> {how it was copied: (its parameters' (identity, version) pairs when copied, the copy)}
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Int8Linear(nn.Module):
    """An `nn.Linear` in int8 for inference (see the module docstring). Weights take 7 bits (-63..63)
    so that no product saturates where the CPU has no VNNI: oneDNN then multiplies u8 by s8 in pairs
    summed in int16 (2 x 255 x 63 < 2**15); with 8-bit weights such sums were off by up to 64,108 in
    int32 (oneDNN held to AVX2 by ONEDNN_MAX_CPU_ISA on an AVX-512 EPYC). Activations keep all 8 bits."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        self.weight_scale = (weight.abs().amax(1) / 63).clamp_(min=torch.finfo(torch.float32).tiny)  # (out,)
        weight_int8 = torch.round(weight / self.weight_scale[:, None]).to(torch.int8)  # (out, in)
        self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.weight_int8 = weight_int8.t()  # (in, out), as torch._int_mm takes it
        self.packed = self.zero_points = None
        if int8_runs_on_amx():  # a second copy of the int8 weights, packed for AMX
            self.packed = torch.ops.onednn.qlinear_prepack(weight_int8, None)
            self.zero_points = torch.zeros(self.out_features, dtype=torch.long)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out) in fp32."""
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()  # (M, in)
        scale = x.abs().amax(1, keepdim=True).div_(127).clamp_(min=torch.finfo(torch.float32).tiny)  # (M, 1)
        x_int8 = torch.div(x, scale).round_().to(torch.int8)
        if self.packed is not None and len(x) >= AMX_INT8_MIN_ROWS:  # the same sums and scales: equal results
            y = torch.ops.onednn.qlinear_pointwise(x_int8, 1.0, 0, self.packed, self.weight_scale, self.zero_points,
                                                   None, 1.0, 0, torch.float32, "none", [], "")
        else:
            y = torch._int_mm(x_int8, self.weight_int8).float().mul_(self.weight_scale)
        # each token's scale applied in place, or with the bias in one pass: no (M, out) product of the two scales
        y = y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale)
        return y.view(*shape[:-1], self.out_features)  # (M, out) -> (..., out)


def compiles_per_shape(layer: nn.Module) -> bool:
    """Whether oneDNN compiles `layer`'s product anew for each input shape: an `Int8Linear` packed for AMX
    (as every product in bf16, which `model.Encoder.kernels_per_shape` asks of autocast)."""
    return isinstance(layer, Int8Linear) and layer.packed is not None


# Fewer tokens than this take torch._int_mm even where the packed product runs: its call costs about 20 us
# more. all-MiniLM-L6-v2 int8 embedding of random STS-B dev sentences, all packed against none: one sentence a
# call 0.93x, 4 sentences 0.97x (one thread); 8 sentences (about 130 tokens) 1.02x on one thread and 1.01x on
# two, 16 sentences 1.14x (one thread, alternating runs, median of 7)
AMX_INT8_MIN_ROWS = 128


@functools.cache
def int8_runs_on_amx() -> bool:
    """Whether `Int8Linear`s multiply batches of AMX_INT8_MIN_ROWS tokens or more with oneDNN's int8 matrix
    product on weights packed once for AMX (`onednn::qlinear_pointwise`), rather than `torch._int_mm`, which
    runs oneDNN's int8 gemm on the weights as they are (no AMX): on a CPU with AMX that the system lets
    this process use (`torch.cpu._init_amx`), unless oneDNN is held below AMX (ONEDNN_MAX_CPU_ISA, or
    DNNL_MAX_CPU_ISA, naming an instruction set without it). Held to AVX512_CORE_VNNI, PyTorch still packs
    the weights for AMX and oneDNN runs its reference kernel, thousands of times slower (4.3 s for one layer
    of 576 tokens); held to AVX2, it packs them plainly and the product takes 1.1x-1.2x torch._int_mm's
    time. The packed copy holds as much memory as the int8 weights, kept beside them for small batches.

    The AMX Xeon, torch 2.13, all-MiniLM-L6-v2's layers at 576 tokens on one thread, scales included: 750 us
    against 1,329 (384 -> 1152), 908 against 1,768 (384 -> 1536), 1,403 against 1,493 (1536 -> 384).
    all-MiniLM-L6-v2 int8 embedding, alternating in one process (median of 7): 1.20x faster on one thread
    (batches of 36 random STS-B dev sentences, as the server's model processes run them), 1.11x on two
    (STS-B dev in batches of 32)."""
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    return (cpu_has_amx() and bool(getattr(torch.cpu, "_init_amx", lambda: False)())
            and hasattr(torch.ops.onednn, "qlinear_prepack") and ("AMX" in limit or limit in ("ALL", "DEFAULT")))


def bf16_copy(linear: nn.Linear) -> nn.Linear:
    """`linear` with bf16 weights: what autocast would cast them to on every call."""
    layer = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                      device=linear.weight.device, dtype=torch.bfloat16)
    layer.load_state_dict(linear.state_dict())
    return layer.requires_grad_(False)


# activation name (model.activation's) -> oneDNN's post-op for it: (attr, algorithm)
ONEDNN_ACTIVATIONS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"),
                      "gelu_pytorch_tanh": ("gelu", "tanh"), "relu": ("relu", "")}


class PackedLinear(nn.Module):
    """An `nn.Linear` for inference, its weights reordered once for oneDNN in `dtype` (fp32, or bf16
    for bf16 inference; see the module docstring); the same parameters, so that code reading
    `.weight` still finds them. With gradients on it computes the plain `F.linear` (under autocast
    if on): oneDNN's product has no backward. In bf16 it takes its input as autocast would, cast to
    bf16, and gives bf16."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype))
        self.packed_bias = None if linear.bias is None else linear.bias.detach().to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out)."""
        if torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.packed_bias, "none", [], "")

    def with_activation(self, x: Tensor, activation: str) -> Tensor:
        """The activation (a name of `ONEDNN_ACTIVATIONS`) of the product, in the same oneDNN call;
        inference only (with gradients off)."""
        attr, algorithm = ONEDNN_ACTIVATIONS[activation]
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.packed_bias, attr, [], algorithm)

    def plus(self, x: Tensor, residual: Tensor) -> Tensor:
        """residual + this layer's output (product and bias), summed in the same oneDNN call; inference only
        (with gradients off), `residual` (..., out) in this layer's dtype (in bf16 rounded once, after the sum)."""
        return torch.ops.mkldnn._linear_pointwise.binary(x.to(self.dtype), residual, self.packed, self.packed_bias, "add")


def packed_bf16(linear: nn.Linear) -> PackedLinear:
    """`linear` packed for bf16 inference (`PackedLinear`)."""
    return PackedLinear(linear, torch.bfloat16)


def cpu_has_avx512() -> bool:
    """Whether PyTorch's CPU kernels run with AVX-512 here (the CPU has it and ATEN_CPU_CAPABILITY allows it)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def packs_linears(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> bool:
    """Whether inference at `dtype` (fp32 or bf16) on `device` runs `PackedLinear`s: on CPUs with
    AVX-512, in bf16 where oneDNN computes bf16 (module docstring)."""
    return (torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available() and cpu_has_avx512()
            and (dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported()))


def _cached_copy(linear: nn.Linear, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    """`make(linear)`, made once and again only when its weights change: their autograd version
    counters move with every in-place update (an optimizer step, a load), and a weight replaced by a
    new tensor is another object. Made outside inference mode, so that a copy made under it serves a
    later call with gradients on too."""
    state = tuple((id(p), p._version) for p in linear.parameters())
    copies = _COPIES.setdefault(linear, {})
    if make not in copies or copies[make][0] != state:
        with torch.inference_mode(False):
            copies[make] = (state, make(linear))
    return copies[make][1]


def drop_copies(model: nn.Module) -> None:
    """Let the inference copies of `model`'s linear layers go: after an evaluation during training, whose
    next step changes the weights they copy. Kept, packed fp32 copies would hold as much memory as the
    linear layers themselves until the next evaluation made new ones."""
    for module in model.modules():
        _COPIES.pop(module, None)


def int8_linear(linear: nn.Linear) -> nn.Module:
    """The `Int8Linear` of `linear`, kept while its weights stay the same."""
    return _cached_copy(linear, Int8Linear)


@contextlib.contextmanager
def _swapped_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> Iterator[None]:
    """Every `nn.Linear` of `model` replaced by its cached `make` copy while the context lasts (`make`
    a module-level function or class: the copies are kept per `make`)."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Linear]
    try:  # a copy that fails half-way (memory) leaves no layer swapped
        for parent, name, child in swaps:
            setattr(parent, name, _cached_copy(child, make))
        yield
    finally:
        for parent, name, child in swaps:
            setattr(parent, name, child)


def fast_linears(model: nn.Module, dtype: torch.dtype, device: torch.device) -> ContextManager:
    """The linear layers inference at `dtype` runs with: `Int8Linear`s for int8; `PackedLinear`s for
    fp32 and bf16 where they are faster; else, on CPUs, bf16 copies for bf16 (made once, not cast by
    autocast at every call); the layers themselves otherwise."""
    if dtype == torch.qint8:
        return _swapped_linears(model, Int8Linear)
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu":  # (measured on CPUs only)
        return _swapped_linears(model, packed_bf16 if packs_linears(device, dtype) else bf16_copy)
    if dtype == torch.float32 and packs_linears(device):
        return _swapped_linears(model, PackedLinear)
    return contextlib.nullcontext()
