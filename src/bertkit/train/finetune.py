"""Fine-tuning: task files -> a TaskModel trained by the one loop -> a model directory.

setup (read, label set, features, model, what trains) -> fit (train.loop, dev metric every epoch,
best weights kept, early stopping) -> save (encoder, head, tokenizer, task.json, dev metrics).
What differs between task kinds is looked up once in `bertkit.tasks.TASKS`.

Departures from the common recipes, each for a reason:
- a text longer than the window is split into overlapping windows for training and prediction
  rather than truncated (truncation only when asked for, and counted);
- a kind may tune itself on the dev set after training (multi-label: each label's threshold).

A step learns as the transformers Trainer's does: with the defaults (random batches, each batch's
loss over its own items, AdamW's epsilon 1e-8) the two agree to 1e-5 from the same weights and
batches, weight decay set alike (tests/test_finetune_parity.py; bertkit decays by 0.01, the Trainer
by 0). The encoder removes padding and attends in groups of
similar lengths, so random batches cost little. `batching="grouped"` (similar lengths together,
the order still shuffled) with `loss_norm="dataset"` is the other choice: it learned less per epoch
on CoNLL-2003 for about the same speed (README, "Training choices").
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..config import FinetuneConfig, TrainConfig
from ..convert import load_pretrained
from ..data.batches import GroupedBatches
from ..data.examples import LabelSet, TextExample, unseen_labels
from ..files import write_text
from ..heads import IGNORE_INDEX
from ..model import Encoder
from ..predict import predict_examples, task_metrics
from ..tasks import TaskSpec, check_spec, collate, encode_examples, kind_of, read_examples
from ..tasks.model import TaskModel, save_task_model
from ..tokenizer import Tokenizer
from . import distributed
from .checkpoint import full_model_state
from .loop import fit
from .runs import run_folder

DERIVED = ("max_steps", "eval_every", "warmup_steps")  # from finetune.epochs and finetune.warmup_ratio
FINETUNE_EPS = 1e-8  # AdamW's epsilon unless train.eps is given: the transformers Trainer's


def spec_settings(config: FinetuneConfig) -> TaskSpec:
    """The model's spec as the config sets it, before the data gives the labels."""
    shared = {f.name: getattr(config, f.name) for f in fields(TaskSpec) if hasattr(config, f.name)}
    stride = config.max_length // 4 if config.stride is None else config.stride
    return TaskSpec(**{**shared, "labels": tuple(sorted(set(config.labels))), "stride": stride,
                       "reader": dict(config.reader)})


def spec_config(spec: TaskSpec, **run) -> FinetuneConfig:
    """A FinetuneConfig that reads, encodes and batches a task's data as `spec` says, its label set
    fixed (the inverse of `spec_settings`); `run` holds the run's own fields (model, train, dev ...)."""
    shared = {f.name: getattr(spec, f.name) for f in fields(FinetuneConfig) if hasattr(spec, f.name)}
    return FinetuneConfig(**{**shared, **run})


def task_spec(config: FinetuneConfig, train_examples: list, dev_examples: list) -> TaskSpec:
    """The spec of the model to train: the label set from the training data (or `config.labels`,
    which must then hold every training label), checked against dev."""
    _check_labelled(train_examples, config.train)
    spec = spec_settings(config)
    kind = kind_of(config.task)
    if kind.label_kind != "score":
        labels = LabelSet(spec.labels) if spec.labels else LabelSet.from_examples(train_examples)
        missing = unseen_labels(labels, train_examples)
        if missing:
            raise ValueError(f"{config.train}: labels {missing} are not in finetune.labels {list(labels.labels)}")
        unseen = unseen_labels(labels, dev_examples)
        if unseen:
            warnings.warn(f"{config.dev}: labels {unseen} do not occur in the training data; the model "
                          "cannot predict them", stacklevel=2)
        spec = replace(spec, labels=labels.labels)
    spec = replace(spec, pair=not kind.words and any(ex.pair is not None for ex in train_examples))
    check_spec(spec)
    return spec


def _check_labelled(examples: list, path: str) -> None:
    if not examples:
        raise ValueError(f"{path}: no training examples")
    bad = next((ex for ex in examples if isinstance(ex, TextExample) and ex.label is None), None)
    if bad is not None:
        raise ValueError(f"{bad.source or path}: a training example without a label; name the label column "
                         "(--label-column, or finetune.reader in a recipe)")


def check_balanced(settings: FinetuneConfig | TaskSpec) -> None:
    """Refuse balanced class weights where the loss is not a softmax over classes."""
    if kind_of(settings.task).class_ids is None or settings.decoder == "crf":
        raise ValueError(f"class_weights='balanced' weighs a softmax cross-entropy over classes: it does not "
                         f"apply to the {settings.task} task{' with a CRF' if settings.decoder == 'crf' else ''}")


def balanced_weights(features, spec: TaskSpec) -> torch.Tensor:
    """n / (classes * count) per class (span tasks: class 0 is "no entity"), 1 for absent classes."""
    check_balanced(spec)
    ids, classes = kind_of(spec.task).class_ids(features, spec)
    counts = np.bincount(ids[ids != IGNORE_INDEX], minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def freeze(model: TaskModel, trainable_layers: int) -> None:
    """Train only the head and the top `trainable_layers` encoder layers (-1: everything). The
    pooler and any pretraining heads never train: the task heads do not use them (DDP would wait
    for their gradients), and they are saved unchanged."""
    encoder = model.encoder
    if trainable_layers > len(encoder.layers):
        raise ValueError(f"trainable_layers {trainable_layers} exceeds the model's {len(encoder.layers)} layers")
    frozen = [encoder.pooler, *encoder.pretraining_heads().values()]
    if trainable_layers >= 0:
        frozen += [encoder.embeddings, encoder.embeddings_project,
                   *encoder.layers[:len(encoder.layers) - trainable_layers]]
    for module in frozen:
        if module is not None:
            module.requires_grad_(False)


def layer_scale(num_layers: int, decay: float, head: float = 1.0):
    """lr factor by parameter name: decay^(L - l) for layer l (1..L), decay^L for the embeddings
    (Clark et al. 2020, ELECTRA's layer-wise learning-rate decay), `head` for the task head and CRF,
    which start from scratch (span models commonly train them 10-50x faster than the encoder)."""
    def scale(name: str) -> float:
        if name.startswith("encoder.layers."):
            return decay ** (num_layers - 1 - int(name.split(".")[2]))
        if name.startswith("encoder."):
            return decay ** num_layers if name.startswith(("encoder.embeddings.", "encoder.embeddings_project.")) else 1.0
        return head
    return scale


def run_lr_scale(model: TaskModel, config: FinetuneConfig):
    """The run's lr factor by parameter name: `layer_scale` with the config's decay and head rate."""
    return layer_scale(len(model.encoder.layers), config.layer_lr_decay, config.head_lr_scale)


@dataclass
class TaskSteps:
    """The loop's step data: random (or length-grouped) batches, epoch after epoch; each rank its
    share of rows."""

    features: object
    spec: TaskSpec
    pad_id: int
    grouped: GroupedBatches
    loss_norm: str = "batch"  # a batch's loss over its own item count; "dataset": see items_per_row

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        per_epoch = self.grouped.steps_per_epoch
        rows = self.grouped.epoch(step // per_epoch)[step % per_epoch]
        if len(rows) < world:
            raise ValueError(f"a batch of {len(rows)} rows cannot be split over {world} processes")
        mine = rows[rank::world]
        batch = collate(self.features, mine, self.spec, self.pad_id)
        if self.loss_norm == "dataset":
            rows_expected = self.grouped.batch_size / world if self.grouped.equal_tokens else len(mine)
            batch["counts"] = {"loss": self.items_per_row * rows_expected}
        return [batch]

    @functools.cached_property
    def items_per_row(self) -> float:
        """Loss items (labelled rows, words, tokens, spans) per training row, over the whole training set.

        A batch's loss sum is divided by this times its rows, not by its own item count: with
        length-grouped batches, a batch of short sentences holds few words, and its own count would
        weigh each of them up to ten times as much as a word of a long sentence (random batches
        average this out; grouped ones do not). The step's loss is thus an unbiased estimate of the
        mean over all items, as with random batches. Batches balanced by tokens (`batch_by`) vary in
        rows, so there the divisor is this times batch_size, the rows a batch holds on average.
        """
        rows = np.arange(len(self.grouped.lengths))
        total = sum(collate(self.features, rows[i:i + 256], self.spec, self.pad_id)["counts"]["loss"]
                    for i in range(0, len(rows), 256))
        return total / max(1, len(rows))


@dataclass
class TaskData:
    """One task's files, read and encoded, and its step data."""

    spec: TaskSpec
    train_examples: list
    features: object
    class_weights: torch.Tensor | None
    steps: TaskSteps
    dev_examples: list
    dev_features: object


def task_data(config: FinetuneConfig, tokenizer: Tokenizer, seed: int) -> TaskData:
    """Read the task's files, build its label set, encode, and batch."""
    if config.class_weights == "balanced":
        check_balanced(config)  # before any file is read
    train_examples = read_examples(config.train, config.task, config.reader)
    dev_examples = read_examples(config.dev, config.task, config.reader) if config.dev else []
    spec = task_spec(config, train_examples, dev_examples)
    features = encode_examples(train_examples, tokenizer, spec)
    weights = balanced_weights(features, spec) if config.class_weights == "balanced" else None
    batches = GroupedBatches(features.lengths, config.batch_size, seed, pool=50 if config.batching == "grouped" else 1,
                             min_batch=distributed.world_size(), equal_tokens=config.batch_by == "tokens")
    dev_features = encode_examples(dev_examples, tokenizer, spec) if dev_examples else None
    steps = TaskSteps(features, spec, tokenizer.pad_id, batches, config.loss_norm)
    return TaskData(spec, train_examples, features, weights, steps, dev_examples, dev_features)


@dataclass
class Setup:
    tokenizer: Tokenizer
    model: TaskModel
    data: TaskSteps
    train: TrainConfig  # with the steps, evaluation interval, warm-up and monitored metric filled in
    dev_examples: list
    dev_features: object


def check_derived(train: TrainConfig) -> None:
    if train.given(*DERIVED):
        raise ValueError(f"fine-tuning derives {sorted(train.given(*DERIVED))} from finetune.epochs and "
                         "finetune.warmup_ratio; set those instead")


def setup(config: FinetuneConfig, train: TrainConfig) -> Setup:
    """Read the files, build the label set, encode, load the model and decide what trains."""
    check_derived(train)
    kind = kind_of(config.task)
    tokenizer = Tokenizer.from_pretrained(config.model)
    data = task_data(config, tokenizer, train.seed)
    torch.manual_seed(train.seed)
    model = TaskModel(load_pretrained(config.model), data.spec, data.class_weights)
    positions = model.encoder.config.max_length
    if config.max_length > positions:  # before the first long input fails mid-run
        raise ValueError(f"finetune.max_length is {config.max_length} but {config.model} has positions for "
                         f"{positions} tokens: pass --finetune.max_length={positions} (longer inputs are then "
                         "split into windows of it)")
    if kind.init_head:
        kind.init_head(model, data.features)
    freeze(model, config.trainable_layers)
    per_epoch = data.steps.grouped.steps_per_epoch
    steps = max(1, round(config.epochs * per_epoch))
    train = replace(train, max_steps=steps, eval_every=per_epoch, warmup_steps=round(config.warmup_ratio * steps),
                    monitor=train.monitor or (kind.main_metric(data.spec) if data.dev_examples else None))
    train = train.derive(checkpoint_every=per_epoch, eps=FINETUNE_EPS)  # a MiniLM checkpoint is ~260 MB
    report(data, steps, per_epoch)
    return Setup(tokenizer, model, data.steps, train, data.dev_examples, data.dev_features)


def finetune(config: FinetuneConfig, train: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """setup -> fit -> save. Returns the dev metrics of the saved (best) model; writes `config.out`:
    the model directory, log.jsonl, loss.png, dev_metrics.json. The folder is claimed for this run
    first (`runs.run_folder`: `resume` continues the run in it, `overwrite` replaces another run's)."""
    distributed.init()
    if Path(config.out).resolve() == Path(config.model).resolve():
        raise ValueError(f"{config.out}: --out is the model being fine-tuned; give another folder")
    with run_folder(config.out, {"finetune": asdict(config), "train": asdict(train)}, resume=resume,
                    overwrite=overwrite) as out:
        return _finetune(config, train, out, resume)


def _finetune(config: FinetuneConfig, train: TrainConfig, out: Path, resume: bool) -> dict:
    run = setup(config, train)
    model, tokenizer, dev = run.model, run.tokenizer, run.dev_examples

    def dev_predictions(m):
        return predict_examples(m, tokenizer, dev, config.eval_batch_size, run.train.precision, run.dev_features)

    def evaluate(m):  # the metrics that are numbers (a per-type report is not), for the log
        return {k: float(v) for k, v in task_metrics(m.spec, dev, dev_predictions(m)).items()
                if isinstance(v, (int, float))}

    fit(model, run.data, run.train, out, resume=resume, evaluate=evaluate if dev else None,
        lr_scale=run_lr_scale(model, config))
    predictions = dev_predictions(model) if dev else []
    if dev and config.tune_thresholds and model.kind.tune:
        model.spec, predictions = model.kind.tune(model.spec, dev, predictions)
    result = task_metrics(model.spec, dev, predictions) if dev else {}
    final = _gathered(model)  # a collective under torch.distributed
    if distributed.rank() == 0:
        save_task_model(final, tokenizer, out)
        for name, content in (("dev_metrics.json", result), ("finetune_config.json",
                                                              {"finetune": asdict(config), "train": asdict(run.train)})):
            write_text(out / name, json.dumps(content, indent=2))
    return result


def _gathered(model: TaskModel) -> TaskModel | None:
    """The full model on rank 0 (FSDP shards gathered); the model itself outside torch.distributed."""
    if not distributed.active():
        return model
    state = full_model_state(model)
    if distributed.rank() != 0:
        return None
    full = TaskModel(Encoder(model.encoder.config), model.spec)
    full.encoder.mlm_head = model.encoder.mlm_head  # pretraining heads ride along unchanged (never trained)
    full.encoder.nsp_head = model.encoder.nsp_head
    full.load_state_dict(state, strict=False)
    return full


def report(data: TaskData, steps: int, per_epoch: int, name: str | None = None) -> None:
    if distributed.rank() != 0:
        return
    spec, examples, features = data.spec, data.train_examples, data.features
    kind = kind_of(spec.task)
    summary = {**({"name": name} if name else {}), "task": spec.task, "labels": len(spec.labels),
               "train_examples": len(examples), "rows": len(features), "extra_windows": len(features) - len(examples),
               "steps": steps, "steps_per_epoch": per_epoch, "truncated": features.encoded.num_truncated,
               **(kind.report(examples, features, spec) if kind.report else {})}
    print(json.dumps(summary), file=sys.stderr)
