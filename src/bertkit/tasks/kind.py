"""A task kind as data: the plain functions in which one kind of task differs from the others.

`bertkit.tasks.TASKS` maps each task name to a `TaskKind`; code that serves every task (the task
model, encoding, collation, prediction, fine-tuning) looks the kind up once and calls its
functions. A new kind is one module of such functions and one row in that table.

The functions take the model (a `tasks.model.TaskModel`: its `head`, `crf`, `class_weights` and
`spec`), a batch from `bertkit.tasks.collate`, and the model's `TaskSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EncoderConfig
from ..data.examples import LabelKind, LabelSet
from ..data.features import Features
from ..heads import IGNORE_INDEX
from .spec import TaskSpec


def keep_examples(examples: list, path: str) -> list:
    return examples


def no_head_init(model: nn.Module, features: Features) -> None:
    return None


def no_report(examples: Sequence, features: Features, spec: TaskSpec) -> dict:
    return {}


def no_tuning(spec: TaskSpec, examples: Sequence, predictions: list[dict]) -> tuple[TaskSpec, list[dict]]:
    return spec, predictions


@dataclass(frozen=True)
class TaskKind:
    """One kind of task. Every field is a plain function of the kind's module (or a flag)."""

    words: bool  # inputs are words (WordExample: tagging, spans); else texts (TextExample)
    label_kind: LabelKind  # texts: what a label cell holds ("single", "multi" or "score")
    check: Callable[[TaskSpec], None]  # refuse settings this kind cannot use, naming them
    main_metric: Callable[[TaskSpec], str]  # the dev metric that picks the best epoch
    head: Callable[[EncoderConfig, TaskSpec], nn.Module]
    targets: Callable[[Sequence, Features, LabelSet | None], list]  # per row: its target, None if unlabelled
    collate: Callable[[dict, list | None, Features, Sequence[int], TaskSpec], None]  # adds labels and counts
    scores: Callable[[nn.Module, Tensor, dict], Tensor]  # the head on (B, T, H) hidden states
    loss: Callable[[nn.Module, Tensor, dict], Tensor]  # fp32 scores -> loss summed over the batch's items
    decode: Callable[[nn.Module, Tensor, dict], list]  # fp32 scores -> per batch row, what prediction keeps
    assemble: Callable[[list, Features, Sequence, TaskSpec], list[dict]]  # rows -> a prediction per example
    metrics: Callable[[TaskSpec, Sequence, Sequence[dict], str], dict]  # predictions against labels
    class_ids: Callable[[Features, TaskSpec], tuple[np.ndarray, int] | None]  # (ids, classes) of a softmax
    pairs: bool = False  # every input is a text pair
    prepare: Callable[[list, str], list] = keep_examples  # examples as read -> examples to train on
    init_head: Callable[[nn.Module, Features], None] = no_head_init  # a head's start from the training rows
    report: Callable[[Sequence, Features, TaskSpec], dict] = no_report  # what the data cannot teach, counted
    tune: Callable[[TaskSpec, Sequence, list[dict]], tuple[TaskSpec, list[dict]]] = no_tuning  # on dev, after training


def needs_labels(spec: TaskSpec) -> None:
    if not spec.labels:
        raise ValueError(f"a {spec.task} task needs labels; the training data has none")


def no_crf(spec: TaskSpec) -> None:
    if spec.decoder == "crf":
        raise ValueError("the CRF decodes tag sequences: use it with the tag task")


def cross_entropy(model: nn.Module, scores: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy summed over items, weighted by the model's class weights (if any);
    items labelled IGNORE_INDEX count nothing. scores (..., L), labels (...)."""
    return F.cross_entropy(scores.reshape(-1, scores.shape[-1]), labels.reshape(-1), weight=model.class_weights,
                           ignore_index=IGNORE_INDEX, reduction="sum")


def labelled_items(labels: Tensor) -> int:
    return int((labels != IGNORE_INDEX).sum())


def label_id(label: Any, labels: LabelSet) -> int:
    """A label's index, or IGNORE_INDEX for a label the head does not have (unseen dev labels)."""
    return labels.index(label) if label in labels else IGNORE_INDEX
