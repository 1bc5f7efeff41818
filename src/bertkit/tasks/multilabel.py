"""Multi-label classification: any number of labels per text, one sigmoid per label.

Where it differs from `sequence`: multi-hot targets and a binary cross-entropy; the head's biases
start at each label's training rate (`label_rate_logits`); after training, each label's threshold
is tuned on the dev set (`tune_thresholds`), since rare labels rarely reach 0.5.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics as M
from ..data.examples import LabelSet, TextExample
from ..data.features import Features
from .kind import TaskKind, needs_labels, no_crf
from .sequence import class_head, decode, float_labels, input_logits, scores, targets_per_row
from .spec import TaskSpec


def check(spec: TaskSpec) -> None:
    needs_labels(spec)
    no_crf(spec)


def targets(examples: Sequence[TextExample], features: Features, labels: LabelSet | None) -> list:
    """(L,) multi-hot per row; labels the head does not have are left out."""
    def multi_hot(example: TextExample) -> np.ndarray:
        target = np.zeros(len(labels), dtype=np.float32)
        target[[labels.index(x) for x in example.label if x in labels]] = 1.0
        return target
    return targets_per_row(examples, features, multi_hot)


def loss(model: nn.Module, scores: Tensor, batch: dict) -> Tensor:
    return F.binary_cross_entropy_with_logits(scores, batch["labels"], reduction="sum")


def prediction(spec: TaskSpec, probs: Sequence[float]) -> dict:
    """The labels whose probability reaches their threshold (the spec's per-label ones, if tuned).

    Args:
        probs: (L,) sigmoid probabilities in the order of `spec.labels`.

    Returns:
        {"labels": [label, ...], "probabilities": {label: probability}}.
    """
    limits = spec.thresholds or (spec.threshold,) * len(probs)
    return {"labels": [x for x, p, t in zip(spec.labels, probs, limits) if p >= t],
            "probabilities": dict(zip(spec.labels, probs))}


def assemble(per_row: list, features: Features, examples: Sequence, spec: TaskSpec) -> list[dict]:
    return [prediction(spec, logits.sigmoid().tolist()) for logits in input_logits(per_row, features, len(examples))]


def label_probabilities(spec: TaskSpec, predictions: Sequence[dict]) -> np.ndarray:
    """(N, L) the predictions' probabilities, columns in the order of `spec.labels`."""
    return np.array([[p["probabilities"][x] for x in spec.labels] for p in predictions])


def gold_matrix(spec: TaskSpec, examples: Sequence[TextExample]) -> np.ndarray:
    """(N, L) 1 where an example has the label."""
    return np.array([[x in ex.label for x in spec.labels] for ex in examples], dtype=np.int64)


def metrics(spec: TaskSpec, examples: Sequence[TextExample], predictions: Sequence[dict], mode: str) -> dict:
    gold = gold_matrix(spec, examples)
    pred = np.array([[x in p["labels"] for x in spec.labels] for p in predictions], dtype=np.int64)
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


def init_head(model: nn.Module, features: Features) -> None:
    with torch.no_grad():
        model.head.out.bias.copy_(label_rate_logits(features))


def tune_thresholds(spec: TaskSpec, examples: Sequence[TextExample], predictions: list[dict]) -> tuple[float, ...]:
    """Per label, the sigmoid threshold in 0.05..0.95 with the best F1 on `examples` (the spec's
    threshold when the label never occurs there)."""
    probs = label_probabilities(spec, predictions)
    gold = gold_matrix(spec, examples)
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    best = []
    for j in range(len(spec.labels)):
        if not gold[:, j].any():
            best.append(spec.threshold)
            continue
        f1 = [M.multilabel_f1(gold[:, j:j + 1], (probs[:, j:j + 1] >= t).astype(int)) for t in grid]
        best.append(float(grid[int(np.argmax(f1))]))
    return tuple(best)


def tune(spec: TaskSpec, examples: Sequence[TextExample], predictions: list[dict]) -> tuple[TaskSpec, list[dict]]:
    """The spec with thresholds tuned on `examples`, and the predictions those thresholds make."""
    tuned = replace(spec, thresholds=tune_thresholds(spec, examples, predictions))
    return tuned, [prediction(tuned, row) for row in label_probabilities(spec, predictions)]


MULTILABEL = TaskKind(words=False, label_kind="multi", check=check, main_metric=lambda spec: "micro_f1",
                      head=class_head, targets=targets, collate=float_labels, scores=scores, loss=loss,
                      decode=decode, assemble=assemble, metrics=metrics, class_ids=lambda features, spec: None,
                      init_head=init_head, tune=tune)
