"""Multi-task fine-tuning: one encoder, a head per task, trained by the one loop.

Each optimizer step trains one task, drawn by a schedule that is a pure function of the step (so a
resumed run sees the same tasks and batches): in proportion to the tasks' batches per epoch, in
proportion to a power `alpha` of them (temperature: small tasks drawn more often than their size
says, as the multilingual sampling of pretraining does), or in turn (round robin). The k-th step of
a task takes that task's k-th batch, epoch after epoch. A task with loss weight 0 is never drawn: it
contributes nothing to the gradient, so its batches would be wasted work; its dev metrics are still
reported (what the shared encoder does for it).

The run's length is the tasks' epochs: the sum of each task's epochs times its batches per epoch,
and the proportional schedule draws each task in that proportion. Every `eval_every` steps (the mean
of the tasks' batches per epoch) each task with a dev file is scored; the best weights are those of
the best mean main metric over the trained tasks.

A loss weight scales a task's steps. Under Adam, whose update divides by a running scale of the
gradients, a constant factor on the steps of one task acts only through that shared running scale:
it is a weaker lever than it looks, and the schedule (how often a task trains) is the stronger one.
Weight 0 takes a task out of training altogether.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..config import FinetuneConfig, MultitaskConfig, TrainConfig
from ..convert import load_pretrained
from ..files import write_text
from ..predict import predict_examples, task_metrics
from ..tasks import TASKS, kind_of
from ..tasks.model import MultiTaskModel, save_multitask_model
from ..tokenizer import Tokenizer
from . import distributed
from .finetune import FINETUNE_EPS, TaskData, TaskSteps, check_derived, freeze, layer_scale, report, task_data
from .loop import fit
from .runs import run_folder

PER_TASK = ("epochs", "batch_size", "max_length", "eval_batch_size")  # shared defaults a task may set itself
MONITOR = "tasks_mean"  # the mean of the trained tasks' main dev metrics


def task_configs(config: MultitaskConfig) -> dict[str, FinetuneConfig]:
    """Each task's FinetuneConfig: its own fields over the shared ones. Every file is checked and
    every task kind known before anything is read, each error naming the task."""
    known = {f.name for f in fields(FinetuneConfig)}
    shared = {name: getattr(config, name) for name in (*PER_TASK, "model", "out", "warmup_ratio", "layer_lr_decay",
                                                        "head_lr_scale", "trainable_layers")}
    out = {}
    for name, task in config.tasks.items():
        where = f"multitask.tasks.{name}"
        unknown = sorted(set(task) - known - {"weight"})
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: not a fine-tuning field")
        for field in ("task", "train"):
            if field not in task:
                raise ValueError(f"{where}: no {field}: each task names its kind (task: one of {', '.join(TASKS)}) "
                                 "and its training file (train: FILE)")
        if task["task"] not in TASKS:
            raise ValueError(f"{where}.task: unknown task kind {task['task']!r}; choose one of {', '.join(TASKS)}")
        for field in ("train", "dev"):
            paths = str(task.get(field) or "").split(",")
            missing = [p for p in paths if p and not Path(p).exists()]
            if missing:
                raise FileNotFoundError(f"{where}.{field}: no such file {missing[0]}")
        try:
            out[name] = FinetuneConfig(**{**shared, **{k: v for k, v in task.items() if k != "weight"}})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e
    return out


def head_scales(encoder_scale, configs: dict[str, FinetuneConfig]):
    """lr factor by parameter name: the encoder's as `encoder_scale` gives it, each task's head (and
    CRF) its own task's head_lr_scale (a tagger's 30x, unless multitask.head_lr_scale sets one for all)."""
    return lambda name: configs[name.split(".")[1]].head_lr_scale if name.startswith("heads.") else encoder_scale(name)


def schedule(sizes: list[float], kind: str, alpha: float, steps: int, seed: int) -> np.ndarray:
    """(steps,) the index of the task each step trains. `sizes`: each task's batches per epoch times
    its epochs (0 for a task that never trains)."""
    trained = np.flatnonzero(np.array(sizes) > 0)
    if kind == "round_robin":
        return trained[np.arange(steps) % len(trained)]
    weights = np.array(sizes, dtype=np.float64) ** (1.0 if kind == "proportional" else alpha)
    weights[np.array(sizes) == 0] = 0.0
    return np.random.default_rng(seed).choice(len(sizes), size=steps, p=weights / weights.sum())


@dataclass
class MultiTaskSteps:
    """The loop's step data: step s trains task `order[s]` with that task's `nth[s]`-th batch."""

    names: list[str]
    tasks: list[TaskSteps]
    order: np.ndarray

    def __post_init__(self) -> None:
        self.nth = np.zeros(len(self.order), dtype=np.int64)
        for t in range(len(self.tasks)):
            mine = self.order == t
            self.nth[mine] = np.arange(int(mine.sum()))

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        t = int(self.order[step])
        name = self.names[t]
        return [{**batch, "task": name, "counts": {name: batch["counts"]["loss"]}}
                for batch in self.tasks[t].batches(int(self.nth[step]), rank, world)]


def multitask(config: MultitaskConfig, train: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """setup -> fit -> save. Returns each task's dev metrics (of the saved, best model); writes
    `config.out`: the encoder, each head in heads/NAME/, tasks.json, log.jsonl, dev_metrics.json."""
    distributed.init()
    check_derived(train)
    if train.strategy == "fsdp":
        raise ValueError("multi-task fine-tuning runs under DDP (train.strategy=ddp), not FSDP: each task's view "
                         "of the model calls the encoder outside the sharded root module")
    configs = task_configs(config)
    with run_folder(config.out, {"multitask": asdict(config), "train": asdict(train)}, resume=resume,
                    overwrite=overwrite) as out:
        return _multitask(config, configs, train, out, resume)


def _multitask(config: MultitaskConfig, configs: dict[str, FinetuneConfig], train: TrainConfig, out: Path,
               resume: bool) -> dict:
    tokenizer = Tokenizer.from_pretrained(config.model)
    data: dict[str, TaskData] = {name: task_data(c, tokenizer, train.seed) for name, c in configs.items()}
    weights = {name: float(config.tasks[name].get("weight", 1.0)) for name in configs}
    torch.manual_seed(train.seed)
    model = MultiTaskModel(load_pretrained(config.model), {n: d.spec for n, d in data.items()}, weights,
                           {n: d.class_weights for n, d in data.items() if d.class_weights is not None})
    for name, d in data.items():
        kind = kind_of(d.spec.task)
        if kind.init_head:
            kind.init_head(model.task(name), d.features)
    freeze(model.task(next(iter(data))), config.trainable_layers)  # the shared encoder
    names = list(data)
    per_epoch = [d.steps.grouped.steps_per_epoch for d in data.values()]
    sizes = [configs[name].epochs * n if weights[name] > 0 else 0 for name, n in zip(names, per_epoch)]
    steps = max(1, round(sum(sizes)))
    every = max(1, round(np.mean([n for name, n in zip(names, per_epoch) if weights[name] > 0])))
    trained_dev = [name for name in names if weights[name] > 0 and data[name].dev_examples]
    train = replace(train, max_steps=steps, eval_every=every, warmup_steps=round(config.warmup_ratio * steps),
                    monitor=train.monitor or (MONITOR if trained_dev else None)).derive(checkpoint_every=every,
                                                                                     eps=FINETUNE_EPS)
    order = schedule(sizes, config.schedule, config.alpha, steps, train.seed)
    for name, d, n in zip(names, data.values(), per_epoch):
        report(d, int((order == names.index(name)).sum()), n, name)

    def predictions(m: MultiTaskModel, name: str) -> list:
        return predict_examples(m.task(name), tokenizer, data[name].dev_examples, configs[name].eval_batch_size,
                                train.precision, data[name].dev_features)

    def scores(m: MultiTaskModel) -> dict[str, dict]:
        return {name: task_metrics(m.specs[name], d.dev_examples, predictions(m, name))
                for name, d in data.items() if d.dev_examples}

    def evaluate(m: MultiTaskModel) -> dict[str, float]:
        metrics = scores(m)
        flat = {f"{name}_{k}": float(v) for name, r in metrics.items() for k, v in r.items()
                if isinstance(v, (int, float))}
        if trained_dev:
            flat[MONITOR] = float(np.mean([metrics[n][kind_of(data[n].spec.task).main_metric(data[n].spec)]
                                           for n in trained_dev]))
        return flat

    fit(model, MultiTaskSteps(names, [d.steps for d in data.values()], order), train, out, resume=resume,
        evaluate=evaluate if any(d.dev_examples for d in data.values()) else None,
        lr_scale=head_scales(layer_scale(len(model.encoder.layers), config.layer_lr_decay), configs))
    for name, d in data.items():  # a kind that tunes itself on dev (multi-label: each label's threshold)
        tune = kind_of(d.spec.task).tune
        if tune and d.dev_examples and configs[name].tune_thresholds:
            model.specs[name], _ = tune(d.spec, d.dev_examples, predictions(model, name))
    result = scores(model)
    if distributed.rank() == 0:
        save_multitask_model(model, tokenizer, out)
        write_text(out / "dev_metrics.json", json.dumps(result, indent=2))
        write_text(out / "multitask_config.json", json.dumps({"multitask": asdict(config), "train": asdict(train),
                                                              "steps_per_task": dict(zip(names, np.bincount(
                                                                  order, minlength=len(names)).tolist()))}, indent=2))
    return result
