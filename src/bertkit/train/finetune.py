"""Fine-tuning: task files -> a TaskModel trained by the one loop -> a model directory.

setup (read, label set, features, model, what trains) -> fit (train.loop, dev metric every epoch,
best weights kept, early stopping) -> save (encoder, head, tokenizer, task.json, dev metrics).

Departures from the common recipes, each for a reason:
- a text longer than the window is split into overlapping windows for training and prediction
  rather than truncated (truncation only when asked for, and counted);
- batches group similar lengths (no padding waste), with the order still shuffled every epoch, and
  their loss is normalised by the expected item count of a batch, not by their own (`TaskSteps`);
- for multi-label tasks, each label's sigmoid threshold is tuned on the dev set after training
  (`tune_thresholds`), since rare labels rarely reach 0.5.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import metrics as M
from ..files import atomic_write
from ..data.features import SEQUENCE_TASKS, GroupedBatches, collate, spans_across_windows
from ..heads import IGNORE_INDEX
from ..data.tasks import TASKS, LabelSet, TextExample, read_task_file, spans_to_bio, unseen_labels, word_spans
from ..convert import load_pretrained
from ..model import Encoder
from ..predict import encode_examples, label_probabilities, multilabel_prediction, predict_examples, task_metrics
from ..task_model import TaskModel, TaskSpec, save_task_model
from ..tokenizer import Tokenizer
from . import distributed
from .loop import TrainConfig, fit


@dataclass(frozen=True)
class FinetuneConfig:
    task: str = "classify"
    model: str = ""  # a model directory (config.json + weights, tokenizer files)
    train: str = ""
    dev: str | None = None
    out: str = "runs/finetune"
    epochs: float = 3.0
    batch_size: int = 32
    batch_by: str = "rows"  # "rows": batch_size rows a batch; "tokens": as many padded tokens each, as many batches
    reader: dict = field(default_factory=dict)  # options for the file reader (columns, fields, scheme)
    labels: tuple[str, ...] = ()  # fixed label set; empty = the training file's labels
    alignment: str = "first"
    decoder: str = "greedy"
    pooling: str = "cls"
    max_span_width: int = 8
    span_summary: str = "mean"
    threshold: float = 0.5
    tune_thresholds: bool = True
    max_length: int = 512
    stride: int | None = None  # tokens shared by neighbouring windows; None = a quarter of max_length
    overflow: str = "window"
    dropout: float = 0.1
    trainable_layers: int = -1  # -1: the whole encoder; 0: frozen encoder (the head only); k: the top k layers
    layer_lr_decay: float = 1.0  # layer l of L learns at lr * decay^(L - l); embeddings at decay^L
    head_lr_scale: float = 1.0  # the task head (and CRF) learns at lr * head_lr_scale
    class_weights: str = "none"  # "none" | "balanced"
    entity_mode: str = "strict"  # seqeval mode for BIO metrics: "strict" (IOB2) | "default"
    eval_batch_size: int = 64
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.batch_by not in ("rows", "tokens"):
            raise ValueError(f"batch_by must be 'rows' or 'tokens', not {self.batch_by!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")
        if not self.model or not self.train:
            raise ValueError("give a model directory (--model) and a training file (--train)")
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ValueError("epochs and batch_size must be positive")
        if self.class_weights not in ("none", "balanced"):
            raise ValueError(f"class_weights must be 'none' or 'balanced', not {self.class_weights!r}")
        if not 0 < self.layer_lr_decay <= 1:
            raise ValueError(f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.head_lr_scale <= 0:
            raise ValueError(f"head_lr_scale must be positive, got {self.head_lr_scale}")
        if self.entity_mode not in ("strict", "default"):
            raise ValueError(f"entity_mode must be 'strict' or 'default', not {self.entity_mode!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.class_weights == "balanced" and (self.task in ("regress", "multilabel") or self.decoder == "crf"):
            raise ValueError("class_weights='balanced' weighs a softmax cross-entropy: it does not apply to "
                             "regression, multi-label (sigmoid) or CRF training")


def read_examples(path: str, task: str, reader: dict) -> list:
    """A task file's examples (several files: comma-separated paths); a tag task reads span files
    too, as BIO tags of the outermost spans (BIO cannot hold nesting: the dropped nested spans are
    reported)."""
    tables = [one for one in str(path).split(",") if Path(one).suffix.lower() not in (".jsonl", ".jsonlines", ".xml")]
    if task in SEQUENCE_TASKS and tables and "text_column" not in reader:
        raise ValueError(f"{tables[0]}: which column holds the text? Pass --text-column and --label-column "
                         "(names from the header, or 0-based indices), or finetune.reader.text_column in a recipe")
    examples = [ex for one in str(path).split(",") for ex in read_task_file(one, task, **reader)]
    if task != "tag" or not examples or examples[0].tags is not None:
        return examples
    tagged, dropped = [], 0
    for ex in examples:
        tags, n = spans_to_bio(ex.words, word_spans(ex))
        tagged.append(replace(ex, tags=tuple(tags)))
        dropped += n
    print(f"note: {path}: BIO tags keep {sum(len(ex.spans) for ex in examples) - dropped} spans; "
          f"{dropped} nested spans cannot be represented", file=sys.stderr)
    return tagged


def task_spec(config: FinetuneConfig, train_examples: list, dev_examples: list) -> TaskSpec:
    """The spec of the model to train: the label set from the training data (or `config.labels`,
    which must then hold every training label), checked against dev."""
    _check_labelled(train_examples, config.train)
    labels = LabelSet.from_labels(config.labels) if config.labels else None
    if config.task != "regress":
        labels = labels or LabelSet.from_examples(train_examples)
        missing = unseen_labels(labels, train_examples)
        if missing:
            raise ValueError(f"{config.train}: labels {missing} are not in finetune.labels {list(labels.labels)}")
        unseen = unseen_labels(labels, dev_examples)
        if unseen:
            warnings.warn(f"{config.dev}: labels {unseen} do not occur in the training data; the model "
                          "cannot predict them", stacklevel=2)
    stride = config.max_length // 4 if config.stride is None else config.stride
    pair = config.task in SEQUENCE_TASKS and any(ex.pair is not None for ex in train_examples)
    return TaskSpec(task=config.task, labels=labels.labels if labels else (), alignment=config.alignment,
                    decoder=config.decoder, pooling=config.pooling, max_span_width=config.max_span_width,
                    span_summary=config.span_summary, threshold=config.threshold, max_length=config.max_length,
                    stride=stride, overflow=config.overflow, dropout=config.dropout, pair=pair,
                    entity_mode=config.entity_mode, reader=dict(config.reader))


def _check_labelled(examples: list, path: str) -> None:
    if not examples:
        raise ValueError(f"{path}: no training examples")
    bad = next((ex for ex in examples if isinstance(ex, TextExample) and ex.label is None), None)
    if bad is not None:
        raise ValueError(f"{bad.source or path}: a training example without a label; name the label column "
                         "(--label-column, or finetune.reader in a recipe)")


def balanced_weights(features, spec: TaskSpec) -> torch.Tensor:
    """n / (classes * count) per class (span tasks: class 0 is "no entity"), 1 for absent classes."""
    if spec.task == "span":
        from ..data.features import enumerate_spans
        ids = np.concatenate([enumerate_spans([len(w)], spec.max_span_width, [t])["labels"].numpy()
                              for w, t in zip(features.words, features.targets)])
        classes = len(spec.labels) + 1
    else:
        ids = np.concatenate([np.atleast_1d(t) for t in features.targets]).astype(np.int64)
        classes = len(spec.labels)
    counts = np.bincount(ids[ids != IGNORE_INDEX], minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def label_rate_logits(features) -> torch.Tensor:
    """Per label, the logit of its rate in the training rows, clipped to [1/2n, 1 - 1/2n] for n rows.

    A multi-label head starts from these biases, so each sigmoid starts at its label's rate instead
    of 0.5: with 90 mostly rare labels a zero bias costs ~0.69 nats per label and example, and the
    first hundreds of steps would go to learning "almost always no" instead of the text.

    Args:
        features: multi-label rows; `features.targets` holds n (L,) multi-hot arrays.

    Returns:
        (L,) fp32 logits.
    """
    rates = np.stack(features.targets).mean(0, dtype=np.float64)
    half = 0.5 / len(features.targets)
    rates = np.clip(rates, half, 1 - half)
    return torch.tensor(np.log(rates / (1 - rates)), dtype=torch.float32)


def freeze(model: TaskModel, trainable_layers: int) -> None:
    """Train only the head and the top `trainable_layers` encoder layers (-1: everything). The
    pooler and any pretraining heads never train: the task heads do not use them (DDP would wait
    for their gradients), and they are saved unchanged."""
    encoder = model.encoder
    for module in (encoder.pooler, encoder.mlm_head, encoder.nsp_head):
        if module is not None:
            module.requires_grad_(False)
    if trainable_layers < 0:
        return
    if trainable_layers > len(encoder.layers):
        raise ValueError(f"trainable_layers {trainable_layers} exceeds the model's {len(encoder.layers)} layers")
    frozen = [encoder.embeddings, *encoder.layers[:len(encoder.layers) - trainable_layers]]
    for module in frozen:
        module.requires_grad_(False)


def layer_scale(num_layers: int, decay: float, head: float = 1.0):
    """lr factor by parameter name: decay^(L - l) for layer l (1..L), decay^L for the embeddings
    (Clark et al. 2020, ELECTRA's layer-wise learning-rate decay), `head` for the task head and CRF,
    which start from scratch (span models commonly train them 10-50x faster than the encoder)."""
    def scale(name: str) -> float:
        if name.startswith("encoder.layers."):
            return decay ** (num_layers - 1 - int(name.split(".")[2]))
        if name.startswith("encoder."):
            return decay ** num_layers if name.startswith("encoder.embeddings.") else 1.0
        return head
    return scale


@dataclass
class TaskSteps:
    """The loop's step data: length-grouped batches, epoch after epoch; each rank its share of rows."""

    features: object
    task: str
    pad_id: int
    grouped: GroupedBatches
    max_span_width: int = 8
    token_level: bool = False  # the loss sums over subword tokens (tag task, alignment "every")

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        per_epoch = self.grouped.steps_per_epoch
        rows = self.grouped.epoch(step // per_epoch)[step % per_epoch]
        if len(rows) < world:
            raise ValueError(f"a batch of {len(rows)} rows cannot be split over {world} processes")
        mine = rows[rank::world]
        batch = self._collate(mine)
        rows_expected = self.grouped.batch_size / world if self.grouped.equal_tokens else len(mine)
        batch["counts"] = {"loss": self.items_per_row * rows_expected}
        return [batch]

    @functools.cached_property
    def items_per_row(self) -> float:
        """Loss items (labelled rows, words, spans) per training row, over the whole training set.

        A batch's loss sum is divided by this times its rows, not by its own item count: with
        length-grouped batches, a batch of short sentences holds few words, and its own count would
        weigh each of them up to ten times as much as a word of a long sentence (random batches
        average this out; grouped ones do not). The step's loss is thus an unbiased estimate of the
        mean over all items, as with random batches. Batches balanced by tokens (`batch_by`) vary in
        rows, so there the divisor is this times batch_size, the rows a batch holds on average.
        """
        rows = np.arange(len(self.grouped.lengths))
        total = sum(self._collate(rows[i:i + 256])["counts"]["loss"] for i in range(0, len(rows), 256))
        return total / max(1, len(rows))

    def _collate(self, rows) -> dict:
        return collate(self.features, rows, self.task, self.pad_id, self.max_span_width, self.token_level)


@dataclass
class Setup:
    tokenizer: Tokenizer
    model: TaskModel
    data: TaskSteps
    train: TrainConfig  # with the steps, evaluation interval, warm-up and monitored metric filled in
    dev_examples: list
    dev_features: object


def setup(config: FinetuneConfig, train: TrainConfig) -> Setup:
    """Read the files, build the label set, encode, load the model and decide what trains."""
    fixed = {k: getattr(train, k) for k in ("max_steps", "eval_every", "warmup_steps")
             if getattr(train, k) != getattr(TrainConfig(), k)}
    if fixed:
        raise ValueError(f"fine-tuning derives {sorted(fixed)} from finetune.epochs and finetune.warmup_ratio; "
                         "set those instead")
    tokenizer = Tokenizer.from_pretrained(config.model)
    train_examples = read_examples(config.train, config.task, config.reader)
    dev_examples = read_examples(config.dev, config.task, config.reader) if config.dev else []
    spec = task_spec(config, train_examples, dev_examples)
    features = encode_examples(train_examples, tokenizer, spec)
    torch.manual_seed(train.seed)
    encoder = load_pretrained(config.model)
    model = TaskModel(encoder, spec, balanced_weights(features, spec) if config.class_weights == "balanced" else None)
    if spec.task == "multilabel":
        with torch.no_grad():
            model.head.out.bias.copy_(label_rate_logits(features))
    freeze(model, config.trainable_layers)
    batches = GroupedBatches(features.lengths, config.batch_size, train.seed, min_batch=distributed.world_size(),
                             equal_tokens=config.batch_by == "tokens")
    steps = max(1, round(config.epochs * batches.steps_per_epoch))
    checkpoint_every = train.checkpoint_every  # default: once per epoch (a MiniLM checkpoint is ~260 MB)
    if checkpoint_every == TrainConfig().checkpoint_every:
        checkpoint_every = batches.steps_per_epoch
    train = replace(train, max_steps=steps, eval_every=batches.steps_per_epoch, checkpoint_every=checkpoint_every,
                    warmup_steps=round(config.warmup_ratio * steps),
                    monitor=train.monitor or (spec.main_metric if dev_examples else None))
    data = TaskSteps(features, spec.task, tokenizer.pad_id, batches, spec.max_span_width,
                     token_level=spec.task == "tag" and spec.alignment == "every")
    _report(config, spec, train_examples, features, steps, batches.steps_per_epoch)
    dev_features = encode_examples(dev_examples, tokenizer, spec) if dev_examples else None
    return Setup(tokenizer, model, data, train, dev_examples, dev_features)


def finetune(config: FinetuneConfig, train: TrainConfig, resume: bool = False) -> dict:
    """setup -> fit -> save. Returns the dev metrics of the saved (best) model; writes `config.out`:
    the model directory, log.jsonl, loss.png, dev_metrics.json."""
    distributed.init()
    out = Path(config.out)
    s = setup(config, train)
    model, tokenizer, dev = s.model, s.tokenizer, s.dev_examples

    def dev_predictions(m):
        return predict_examples(m, tokenizer, dev, config.eval_batch_size, s.train.precision, s.dev_features)

    def evaluate(m):
        return _flat(task_metrics(m.spec, dev, dev_predictions(m)))

    fit(model, s.data, s.train, out, resume=resume, evaluate=evaluate if dev else None,
        lr_scale=(layer_scale(len(model.encoder.layers), config.layer_lr_decay, config.head_lr_scale)
                  if (config.layer_lr_decay, config.head_lr_scale) != (1.0, 1.0) else None))
    predictions = dev_predictions(model) if dev else []
    if model.spec.task == "multilabel" and dev and config.tune_thresholds:
        model.spec = replace(model.spec, thresholds=tune_thresholds(model.spec, dev, predictions))
        predictions = [multilabel_prediction(model.spec, row) for row in label_probabilities(model.spec, predictions)]
    result = task_metrics(model.spec, dev, predictions) if dev else {}
    final = _gathered(model)  # a collective under torch.distributed
    if distributed.rank() == 0:
        save_task_model(final, tokenizer, out)
        for name, content in (("dev_metrics.json", result), ("finetune_config.json",
                                                              {"finetune": asdict(config), "train": asdict(s.train)})):
            with atomic_write(out / name) as tmp:
                tmp.write_text(json.dumps(content, indent=2))
    return result


def _gathered(model: TaskModel) -> TaskModel | None:
    """The full model on rank 0 (FSDP shards gathered); the model itself outside torch.distributed."""
    if not distributed.active():
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if distributed.rank() != 0:
        return None
    full = TaskModel(Encoder(model.encoder.config), model.spec)
    full.encoder.mlm_head = model.encoder.mlm_head  # pretraining heads ride along unchanged (never trained)
    full.encoder.nsp_head = model.encoder.nsp_head
    full.load_state_dict(state, strict=False)
    return full


def tune_thresholds(spec: TaskSpec, examples: list, predictions: list[dict]) -> tuple[float, ...]:
    """Per label, the sigmoid threshold in 0.05..0.95 with the best F1 on `examples` (the spec's
    threshold when the label never occurs there)."""
    probs = label_probabilities(spec, predictions)
    gold = np.array([[x in ex.label for x in spec.labels] for ex in examples])
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    best = []
    for j in range(len(spec.labels)):
        if not gold[:, j].any():
            best.append(spec.threshold)
            continue
        f1 = [M.multilabel_f1(gold[:, j:j + 1].astype(int), (probs[:, j:j + 1] >= t).astype(int)) for t in grid]
        best.append(float(grid[int(np.argmax(f1))]))
    return tuple(best)


def _flat(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _report(config: FinetuneConfig, spec: TaskSpec, examples: list, features, steps: int, per_epoch: int) -> None:
    if distributed.rank() != 0:
        return
    windows = len(features) - len(examples)
    report = {"task": spec.task, "labels": len(spec.labels), "train_examples": len(examples), "rows": len(features),
              "extra_windows": windows, "steps": steps, "steps_per_epoch": per_epoch,
              "truncated": features.encoded.num_truncated}
    if spec.task == "span":  # gold spans no candidate can hold: counted, not dropped silently
        report["spans_wider_than_max_span_width"] = sum(1 for ex in examples for s, e, _ in word_spans(ex)
                                                        if e - s > spec.max_span_width)
        report["spans_across_windows"] = spans_across_windows(examples, features)
    print(json.dumps(report), file=sys.stderr)
