"""The one training loop, shared by pretraining, fine-tuning and distillation.

`fit` is a plain function: set up the optimizer and schedule (or restore them), then for each step
gather the step's micro-batches, accumulate gradients, clip, step, log, evaluate and checkpoint.

Exact resumption rests on one design choice: the data of step s is a pure function of s (a
`StepData.batches(step, rank, world)` call; masks are drawn from a generator seeded by the step).
The data position in a checkpoint is therefore just the step number, and a resumed run sees the
very batches and masks an uninterrupted run would have seen. Dropout draws from torch's global
generator, whose state the checkpoint carries.

Loss normalisation lives in `normalisers`: an objective returns each loss part as a sum over
items (masked tokens, sentence pairs), each micro-batch says how many items it holds per part
(`batch["counts"]`), and each part is divided by its count over the whole global batch (all
micro-batches, all ranks). Gradient accumulation and data parallelism thus compute the loss of one
big batch, while each micro-batch is still backpropagated as soon as it is computed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import precision as precision_
from ..config import LOOP_DEFAULTS, TrainConfig
from ..files import figure, write_text
from . import checkpoint, distributed

BEST = "best.safetensors"  # the weights of the best evaluation so far


class StepData(Protocol):
    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        """The micro-batches of optimizer step `step` (from 0) for process `rank` of `world`.

        Each is a dict of tensors plus "counts": {part name: number of items the part sums over}.
        """


class NonFiniteLossError(RuntimeError):
    pass


def parameter_groups(model: nn.Module, weight_decay: float,
                     lr_scale: Callable[[str], float] | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases and layer-norm weights (any 1-D parameter).

    With `lr_scale(parameter name)`, parameters are grouped by that factor too, and each group
    carries it as "lr_scale" (layer-wise learning-rate decay). Frozen parameters are left out.
    """
    groups: dict[tuple[float, bool], list] = {(1.0, True): [], (1.0, False): []}
    seen = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups.setdefault((lr_scale(name) if lr_scale else 1.0, p.dim() >= 2), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (scale, decay), params in groups.items() if params or scale == 1.0]


def linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up from 0 to 1 over `warmup_steps`, then linear decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def normalisers(micro: list[dict], world: int) -> dict[str, float]:
    """Per loss part, the factor that turns a micro-batch's loss sum into its share of the loss.

    A part's factor is world / (its item count over all micro-batches and ranks): dividing by the
    global count gives the mean over the global batch, and DDP's averaging over `world` ranks is
    undone by multiplying by `world`.
    """
    names = micro[0]["counts"].keys()
    local = torch.tensor([float(sum(b["counts"][n] for b in micro)) for n in names])
    total = distributed.all_reduce_sum(local).clamp(min=1)
    return {n: world / float(t) for n, t in zip(names, total)}


def make_optimizer(model: nn.Module, config: TrainConfig, lr_scale: Callable[[str], float] | None = None):
    """AdamW (the fused kernel: one pass over each parameter's state instead of several) with the
    warm-up and linear decay schedule; each group's learning rate is `config.lr` times its scale."""
    config = config.derive(**LOOP_DEFAULTS)
    groups = [{**g, "lr": config.lr * g["lr_scale"]} for g in parameter_groups(model, config.weight_decay, lr_scale)]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_schedule(s, config.warmup_steps, config.max_steps))
    return optimizer, scheduler


def fit(model: nn.Module, data: StepData, config: TrainConfig, out: str | Path, *, resume: bool = False,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None, progress: bool = True,
        lr_scale: Callable[[str], float] | None = None) -> list[dict]:
    """Train for `config.max_steps` optimizer steps; returns the logged records.

    `model(batch)` returns the batch's loss parts as sums, e.g. {"mlm": ..., "nsp": ...} (a module
    that holds the encoder and its heads, so that DDP wraps all of it). `evaluate(model)` may call
    `model.outputs(...)`: under FSDP that method is registered to gather parameters too.
    `lr_scale(parameter name)` scales a parameter's learning rate (layer-wise decay).

    With `config.monitor`, the weights of the best evaluation are kept in out/best.safetensors and loaded
    back into `model` at the end; `config.patience` stops the run early.

    Writes out/log.jsonl (one record per log step and evaluation) and out/checkpoints/.
    """
    out = Path(out)
    config = config.derive(**LOOP_DEFAULTS)
    if config.patience and not (config.monitor and evaluate):
        raise ValueError("early stopping (patience) needs an evaluation and a metric to monitor (train.monitor)")
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed.rank(), distributed.world_size()
    torch.manual_seed(config.seed + rank)
    device = distributed.device()
    model.to(device)
    train_model = distributed.wrap(model, config.strategy, extra_forward_methods=("outputs",))
    optimizer, scheduler = make_optimizer(model, config, lr_scale)
    start = checkpoint.resume(out, model, optimizer, scheduler) + 1 if resume else 0
    dtype = precision_.resolve(config.precision, device)
    step_fn = torch.compile(train_model) if config.compile else train_model
    log = _Log(out / "log.jsonl", enabled=rank == 0, start=start)
    best = _Best(config, log.earlier)
    began = time.perf_counter()
    bar = tqdm(range(start, config.max_steps), initial=start, total=config.max_steps, desc="train",
               disable=not progress or rank != 0)
    tokens = 0
    for step in bar:
        micro = [to_device(batch, device) for batch in data.batches(step, rank, world)]
        try:
            losses, grad_norm = train_step(step_fn, train_model, micro, optimizer, scheduler, config.clip_norm, dtype)
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"step {step}: {e}; stopping. The last checkpoint in {out / 'checkpoints'} is "
                                     "intact: lower the learning rate or check the data, then resume") from None
        local = sum(int(b["attention_mask"].sum()) for b in micro if "attention_mask" in b)
        tokens += int(distributed.all_reduce_sum(torch.tensor(local)))  # real tokens of all ranks
        elapsed = time.perf_counter() - began
        done = step + 1 == config.max_steps or (config.max_minutes is not None and elapsed > 60 * config.max_minutes)
        if step % config.log_every == 0 or done:
            record = {"step": step, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                      "tokens_per_s": tokens / elapsed, **losses}
            log.write(record)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", tok_s=f"{tokens / elapsed:.0f}")
        if evaluate is not None and ((config.eval_every and (step + 1) % config.eval_every == 0) or done):
            model.eval()
            metrics = {f"eval_{k}": v for k, v in evaluate(model).items()}
            precision_.drop_copies(model)
            log.write({"step": step, **metrics})
            bar.write(f"evaluation after step {step + 1}: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items()))
            if best.update(metrics, step):
                checkpoint.save_model_state(out / BEST, model)
            done = done or best.exhausted
        if (step + 1) % config.checkpoint_every == 0 or done:
            checkpoint.save_checkpoint(out, step, model, optimizer, scheduler, config.keep_checkpoints)
        distributed.barrier()
        if done:
            break
    bar.close()
    log.close()
    if best.step is not None:
        checkpoint.load_model_state(out / BEST, model)
    if rank == 0:
        plot_curves(log.earlier + log.records, out / "loss.png")
    return log.records


def plot_curves(records: list[dict], png_path: Path) -> None:
    """out/loss.png: one panel per logged loss part (train and eval_*) of the run's records, against the step."""
    names = sorted({k for r in records for k in r
                    if k in ("loss", "mlm", "nsp", "sbo") or (k.startswith("eval_") and "loss" in k)})
    if not names:
        return
    with figure(png_path, dpi=100, ncols=len(names), figsize=(4 * len(names), 3), squeeze=False) as (_, axes):
        for ax, name in zip(axes[0], names):
            points = [(r["step"], r[name]) for r in records if name in r]
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
            ax.set_title(name)
            ax.set_xlabel("step")


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on `device` (other entries, such as counts, unchanged)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def train_step(step_fn, model: nn.Module, micro: list[dict], optimizer, scheduler, clip_norm: float,
               dtype: torch.dtype) -> tuple[dict[str, float], float]:
    """One optimizer step over a step's micro-batches (on the model's device): accumulate the
    normalised gradients, clip, step, advance the schedule.

    Args:
        step_fn: what computes a micro-batch's loss sums: the (DDP- or FSDP-wrapped) model, or its
            compiled form; `model` is the wrapped model.

    Returns:
        The step's loss parts (with their sum as "loss") and the gradient norm before clipping.

    Raises:
        NonFiniteLossError: a loss part is not finite (nothing is stepped).
    """
    model.train()
    device = next(model.parameters()).device
    losses = _accumulate(step_fn, model, micro, normalisers(micro, distributed.world_size()), dtype, device)
    if not all(math.isfinite(v) for v in losses.values()):
        raise NonFiniteLossError(f"loss is not finite ({losses})")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return losses, float(grad_norm)


def _accumulate(step_fn, ddp_model: nn.Module, micro: list[dict], factors: dict[str, float],
                dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    """Forward and backward each micro-batch; return the step's loss parts, summed over ranks."""
    totals: dict[str, Tensor] = {}
    for i, batch in enumerate(micro):
        with distributed.maybe_no_sync(ddp_model, last=i == len(micro) - 1):
            with precision_.autocast(dtype, device):
                sums = step_fn(batch)
            scaled = {n: v * factors[n] for n, v in sums.items()}
            sum(scaled.values()).backward()
        for n, v in scaled.items():
            totals[n] = totals.get(n, 0.0) + v.detach().float()
    world = distributed.world_size()
    parts = {n: float(distributed.all_reduce_sum(v.reshape(1))) / world for n, v in totals.items()}
    parts["loss"] = sum(parts.values())
    return parts


class _Best:
    """The monitored evaluation metric: its best value, where it was reached, and whether patience
    has run out. A resumed run rebuilds it from the log records it kept."""

    def __init__(self, config: TrainConfig, earlier: list[dict]):
        self.name = f"eval_{config.monitor}" if config.monitor else None
        self.sign = 1.0 if config.higher_is_better else -1.0
        self.patience, self.value, self.step, self.since = config.patience, None, None, 0
        for record in earlier:
            self.update(record, record["step"])

    def update(self, metrics: dict[str, float], step: int) -> bool:
        """Record an evaluation; True when it is the best so far."""
        if self.name is None or self.name not in metrics:
            if self.name is not None and any(k.startswith("eval_") for k in metrics):
                raise KeyError(f"the monitored metric {self.name[5:]!r} is not among the evaluation's "
                               f"{sorted(k[5:] for k in metrics if k.startswith('eval_'))}")
            return False
        value = self.sign * metrics[self.name]
        if self.value is None or value > self.value:
            self.value, self.step, self.since = value, step, 0
            return True
        self.since += 1
        return False

    @property
    def exhausted(self) -> bool:
        return bool(self.patience) and self.since >= self.patience


class _Log:
    """Records to out/log.jsonl and TensorBoard (out/tensorboard) on rank 0. A resumed run drops
    what the interrupted run logged from step `start` on, so no step appears twice."""

    def __init__(self, path: Path, enabled: bool, start: int):
        self.path, self.enabled, self.records, self.tensorboard = path, enabled, [], None
        self.earlier = [r for r in _read_records(path) if r["step"] < start] if start else []
        distributed.barrier()  # every rank has read the log before rank 0 rewrites it
        if enabled:
            # a kill here keeps the old log, which resuming reads again
            write_text(path, "".join(json.dumps(r) + "\n" for r in self.earlier))
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"), purge_step=start or None)

    def write(self, record: dict) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            for name, value in record.items():
                if name != "step":
                    self.tensorboard.add_scalar(name, value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _read_records(path: Path) -> list[dict]:
    """The records of a log; a last line cut short by a kill mid-write is left out."""
    lines = path.read_text().splitlines() if path.exists() else []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}:{i + 1}: not a JSON record; the log is damaged") from None
    return records
