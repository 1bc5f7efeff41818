"""Sequence tasks: one label per text (classify) or text pair (pair), one score (regress), or any
number of labels (multilabel, one sigmoid each).

The head reads the [CLS] vector (or the mean token vector). A text longer than the window is
split into windows that each carry its label; at prediction their logits are averaged.
Multi-label differs in three ways: multi-hot targets and a binary cross-entropy; the head's biases
start at each label's training rate (`label_rate_logits`); after training, each label's threshold
is tuned on the dev set (`tune_thresholds`), since rare labels rarely reach 0.5.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics as M
from ..config import EncoderConfig
from ..data.alignment import combine_windows
from ..data.examples import LabelSet, TextExample
from ..data.features import Features
from ..heads import LinearHead, pool
from .kind import TaskKind, TaskSpec, cross_entropy, label_id, labelled_items, check_labels_and_decoder


def head(config: EncoderConfig, spec: TaskSpec) -> nn.Module:
    return LinearHead(config, len(spec.labels) or 1, spec.dropout)  # regression: one unit


def scores(model: nn.Module, hidden: Tensor, batch: dict) -> Tensor:
    return model.head(pool(hidden, batch["attention_mask"], model.spec.pooling))  # (B, L)


def decode(model: nn.Module, scores: Tensor, batch: dict) -> list[Tensor]:
    return list(scores.cpu())  # per row its (L,) logits; `input_logits` averages an input's windows


def input_logits(per_row: list[Tensor], features: Features, num_examples: int) -> Tensor:
    """(N, L) each input's logits: the mean over its window rows."""
    return torch.from_numpy(combine_windows(torch.stack(per_row).numpy(), features.origin, num_examples))


def targets_of(target: Callable) -> Callable:
    """The kind's `targets`: each window row gets its input's `target(example, labels)`, None for
    unlabelled inputs."""
    def targets(examples: Sequence[TextExample], features: Features, labels: LabelSet | None) -> list:
        return [None if examples[i].label is None else target(examples[i], labels) for i in features.origin]
    return targets


def labels_as(dtype: torch.dtype, count: Callable[[Tensor], int]) -> Callable:
    """The kind's `collate`: the rows' targets as "labels" of `dtype` (class ids, scores or multi-hot
    rows), and `count(labels)` items for the loss."""
    def collate(batch: dict, targets: list | None, features: Features, rows: Sequence[int], spec: TaskSpec) -> None:
        if targets is not None:
            batch["labels"] = torch.tensor(np.array(targets), dtype=dtype)
            batch["counts"] = {"loss": count(batch["labels"])}
    return collate


# ------------------------------------------------------------------------------ classify, pair


def class_assemble(per_row: list, features: Features, examples: Sequence, spec: TaskSpec) -> list[dict]:
    """{"label", "probabilities": {label: p}} per input."""
    probs = [logits.softmax(-1).tolist() for logits in input_logits(per_row, features, len(examples))]
    return [{"label": spec.labels[int(np.argmax(p))], "probabilities": dict(zip(spec.labels, p))} for p in probs]


def class_metrics(spec: TaskSpec, examples: Sequence[TextExample], predictions: Sequence[dict], mode: str) -> dict:
    gold, pred = [ex.label for ex in examples], [p["label"] for p in predictions]
    return {"accuracy": M.accuracy(gold, pred), "macro_f1": M.macro_f1(gold, pred), "mcc": M.matthews_corrcoef(gold, pred)}


CLASSIFY = TaskKind(
    words=False, label_kind="single", main_metric=lambda spec: "accuracy", head=head, scores=scores,
    targets=targets_of(lambda ex, labels: label_id(ex.label, labels)), collate=labels_as(torch.long, labelled_items),
    loss=cross_entropy, decode=decode, assemble=class_assemble, metrics=class_metrics, check=check_labels_and_decoder,
    class_ids=lambda features, spec: (np.array(features.targets, dtype=np.int64), len(spec.labels)))
PAIR = replace(CLASSIFY, pairs=True)


# ------------------------------------------------------------------------------ regress


def regress_metrics(spec: TaskSpec, examples: Sequence[TextExample], predictions: Sequence[dict], mode: str) -> dict:
    gold, pred = [float(ex.label) for ex in examples], [p["score"] for p in predictions]
    return {"pearson": M.pearson(gold, pred), "spearman": M.spearman(gold, pred)}


REGRESS = TaskKind(
    words=False, label_kind="score", main_metric=lambda spec: "spearman", head=head,
    targets=targets_of(lambda ex, labels: float(ex.label)), collate=labels_as(torch.float32, len), scores=scores,
    loss=lambda model, scores, batch: F.mse_loss(scores.squeeze(-1), batch["labels"], reduction="sum"),
    decode=decode, metrics=regress_metrics, check=functools.partial(check_labels_and_decoder, labels=False),
    assemble=lambda per_row, features, examples, spec: [
        {"score": float(logits[0])} for logits in input_logits(per_row, features, len(examples))])


# ------------------------------------------------------------------------------ multilabel


def multi_hot(example: TextExample, labels: LabelSet) -> np.ndarray:
    """(L,) 1 for each of the example's labels; labels the head does not have are left out."""
    target = np.zeros(len(labels), dtype=np.float32)
    target[[labels.index(x) for x in example.label if x in labels]] = 1.0
    return target


def multilabel_prediction(spec: TaskSpec, probs: Sequence[float]) -> dict:
    """{"labels": those whose probability (L,) reaches their threshold (the spec's per-label ones, if
    tuned), "probabilities": {label: probability}}."""
    limits = spec.thresholds or (spec.threshold,) * len(probs)
    return {"labels": [x for x, p, t in zip(spec.labels, probs, limits) if p >= t],
            "probabilities": dict(zip(spec.labels, probs))}


def label_matrix(spec: TaskSpec, label_lists: Sequence) -> np.ndarray:
    """(N, L) 1 where the n-th list (an example's labels, or a prediction's) holds the label."""
    return np.array([[x in labels for x in spec.labels] for labels in label_lists], dtype=np.int64)


def multilabel_metrics(spec: TaskSpec, examples: Sequence[TextExample], predictions: Sequence[dict], mode: str) -> dict:
    gold = label_matrix(spec, [ex.label for ex in examples])
    pred = label_matrix(spec, [p["labels"] for p in predictions])
    return {"micro_f1": M.multilabel_f1(gold, pred, "micro"), "macro_f1": M.multilabel_f1(gold, pred, "macro")}


def label_rate_logits(features: Features) -> torch.Tensor:
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


def start_at_label_rates(model: nn.Module, features: Features) -> None:
    with torch.no_grad():
        model.head.out.bias.copy_(label_rate_logits(features))


def tune_thresholds(spec: TaskSpec, examples: Sequence[TextExample], predictions: list[dict]) -> tuple[TaskSpec, list[dict]]:
    """The spec with each label's sigmoid threshold in 0.05..0.95 set where F1 on `examples` is
    best (the spec's threshold for labels that never occur there), and the predictions it makes."""
    probs = np.array([[p["probabilities"][x] for x in spec.labels] for p in predictions])  # (N, L)
    gold = label_matrix(spec, [ex.label for ex in examples])
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    best = [spec.threshold] * len(spec.labels)
    for j in np.flatnonzero(gold.any(0)):
        f1 = [M.multilabel_f1(gold[:, j:j + 1], (probs[:, j:j + 1] >= t).astype(int)) for t in grid]
        best[j] = float(grid[int(np.argmax(f1))])
    tuned = replace(spec, thresholds=tuple(best))
    return tuned, [multilabel_prediction(tuned, row) for row in probs]


MULTILABEL = TaskKind(
    words=False, label_kind="multi", main_metric=lambda spec: "micro_f1", head=head, targets=targets_of(multi_hot),
    collate=labels_as(torch.float32, len), scores=scores, decode=decode, metrics=multilabel_metrics,
    check=check_labels_and_decoder, init_head=start_at_label_rates, tune=tune_thresholds,
    loss=lambda model, scores, batch: F.binary_cross_entropy_with_logits(scores, batch["labels"], reduction="sum"),
    assemble=lambda per_row, features, examples, spec: [
        multilabel_prediction(spec, logits.sigmoid().tolist()) for logits in input_logits(per_row, features, len(examples))])
