"""Sequence tasks: one label per text (classify) or text pair (pair), or one score (regress).

The head reads the [CLS] vector (or the mean token vector). A text longer than the window is
split into windows that each carry its label; at prediction their logits are averaged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics as M
from ..config import EncoderConfig
from ..data.alignment import mean_over_windows
from ..data.examples import LabelSet, TextExample
from ..data.features import Features
from ..heads import ClassificationHead
from .kind import TaskKind, cross_entropy, label_id, labelled_items, needs_labels, no_crf
from .spec import TaskSpec


def targets_per_row(examples: Sequence[TextExample], features: Features, target) -> list:
    """Each window row gets its input's target (`target(example)`), None for unlabelled inputs."""
    return [None if examples[i].label is None else target(examples[i]) for i in features.origin]


def scores(model: nn.Module, hidden: Tensor, batch: dict) -> Tensor:
    return model.head(hidden, batch["attention_mask"])  # (B, L)


def decode(model: nn.Module, scores: Tensor, batch: dict) -> list[Tensor]:
    return list(scores.cpu())  # per row its (L,) logits; windows are averaged by `assemble`


def input_logits(per_row: list[Tensor], features: Features, num_examples: int) -> Tensor:
    """(N, L) each input's logits: the mean over its window rows."""
    return mean_over_windows(torch.stack(per_row), features.origin, num_examples)


def float_labels(batch: dict, targets: list | None, features: Features, rows: Sequence[int], spec: TaskSpec) -> None:
    """Score or multi-hot targets as float labels; each row counts once."""
    if targets is not None:
        batch["labels"] = torch.tensor(np.array(targets), dtype=torch.float32)
        batch["counts"] = {"loss": len(rows)}


# ------------------------------------------------------------------------------ classify, pair


def check_classes(spec: TaskSpec) -> None:
    needs_labels(spec)
    no_crf(spec)


def class_head(config: EncoderConfig, spec: TaskSpec) -> nn.Module:
    return ClassificationHead(config, len(spec.labels), spec.pooling, spec.dropout)


def class_targets(examples: Sequence[TextExample], features: Features, labels: LabelSet | None) -> list:
    return targets_per_row(examples, features, lambda ex: label_id(ex.label, labels))


def class_collate(batch: dict, targets: list | None, features: Features, rows: Sequence[int], spec: TaskSpec) -> None:
    if targets is not None:
        batch["labels"] = torch.tensor(targets, dtype=torch.long)
        batch["counts"] = {"loss": labelled_items(batch["labels"])}


def class_loss(model: nn.Module, scores: Tensor, batch: dict) -> Tensor:
    return cross_entropy(model, scores, batch["labels"])


def class_assemble(per_row: list, features: Features, examples: Sequence, spec: TaskSpec) -> list[dict]:
    """{"label", "probabilities": {label: p}} per input."""
    out = []
    for logits in input_logits(per_row, features, len(examples)):
        probs = logits.softmax(-1).tolist()
        out.append({"label": spec.labels[int(np.argmax(probs))], "probabilities": dict(zip(spec.labels, probs))})
    return out


def class_metrics(spec: TaskSpec, examples: Sequence[TextExample], predictions: Sequence[dict], mode: str) -> dict:
    gold, pred = [ex.label for ex in examples], [p["label"] for p in predictions]
    return {"accuracy": M.accuracy(gold, pred), "macro_f1": M.macro_f1(gold, pred), "mcc": M.matthews_corrcoef(gold, pred)}


def class_ids(features: Features, spec: TaskSpec) -> tuple[np.ndarray, int]:
    return np.array(features.targets, dtype=np.int64), len(spec.labels)


CLASSIFY = TaskKind(words=False, label_kind="single", check=check_classes, main_metric=lambda spec: "accuracy",
                    head=class_head, targets=class_targets, collate=class_collate, scores=scores, loss=class_loss,
                    decode=decode, assemble=class_assemble, metrics=class_metrics, class_ids=class_ids)
PAIR = replace(CLASSIFY, pairs=True)


# ------------------------------------------------------------------------------ regress


def regress_head(config: EncoderConfig, spec: TaskSpec) -> nn.Module:
    return ClassificationHead(config, 1, spec.pooling, spec.dropout)


def regress_targets(examples: Sequence[TextExample], features: Features, labels: LabelSet | None) -> list:
    return targets_per_row(examples, features, lambda ex: float(ex.label))


def regress_loss(model: nn.Module, scores: Tensor, batch: dict) -> Tensor:
    return F.mse_loss(scores.squeeze(-1), batch["labels"], reduction="sum")


def regress_assemble(per_row: list, features: Features, examples: Sequence, spec: TaskSpec) -> list[dict]:
    return [{"score": float(logits[0])} for logits in input_logits(per_row, features, len(examples))]


def regress_metrics(spec: TaskSpec, examples: Sequence[TextExample], predictions: Sequence[dict], mode: str) -> dict:
    gold, pred = [float(ex.label) for ex in examples], [p["score"] for p in predictions]
    return {"pearson": M.pearson(gold, pred), "spearman": M.spearman(gold, pred)}


REGRESS = TaskKind(words=False, label_kind="score", check=no_crf, main_metric=lambda spec: "spearman",
                   head=regress_head, targets=regress_targets, collate=float_labels, scores=scores,
                   loss=regress_loss, decode=decode, assemble=regress_assemble, metrics=regress_metrics,
                   class_ids=lambda features, spec: None)
