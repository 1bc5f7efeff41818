"""The few calls the training loop makes to torch.distributed; no-ops in a single process.

Launch with `torchrun --nproc-per-node N -m bertkit.cli pretrain ...`: torchrun sets RANK,
WORLD_SIZE and MASTER_ADDR, `init()` joins the group (gloo on CPU, NCCL on GPU), and the model is
wrapped in DistributedDataParallel. There is no distributed layer of bertkit's own.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


def init() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise do nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def device() -> torch.device:
    """This process's device: its GPU (LOCAL_RANK) when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def wrap(model: nn.Module, strategy: str = "ddp", extra_forward_methods: tuple[str, ...] = ()) -> nn.Module:
    """DDP (a full copy per process), or FSDP (parameters, gradients and optimizer state sharded:
    each transformer layer, then the rest), for models that do not fit one device. Under FSDP the
    model's `extra_forward_methods` (such as an evaluation entry point) gather parameters too."""
    if not active():
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
        from ..model import Layer
        for module in model.modules():
            if isinstance(module, Layer):
                fully_shard(module)
        fully_shard(model)
        for name in extra_forward_methods:
            if hasattr(model, name):
                register_fsdp_forward_method(model, name)
        return model
    on_gpu = next(model.parameters()).is_cuda
    # a model whose steps leave some parameters unused (a multi-task model's other heads) says so
    return nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_gpu else None,
                                               find_unused_parameters=getattr(model, "leaves_parameters_unused", False))


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] in a single process."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(x: Tensor) -> Tensor:
    if active():
        x = x.clone()
        dist.all_reduce(x)
    return x


def barrier() -> None:
    if active():
        dist.barrier()


def maybe_no_sync(model: nn.Module, last: bool):
    """Synchronise gradients on the last micro-batch of a step only (DDP's no_sync; FSDP's
    set_requires_gradient_sync)."""
    if active() and isinstance(model, nn.parallel.DistributedDataParallel) and not last:
        return model.no_sync()
    if active() and hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()
