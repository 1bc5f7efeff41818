"""What a fine-tuned model does (`TaskSpec`, saved as task.json beside its weights) and how one kind
of task does it (`TaskKind`: the plain functions in which kinds differ, one row of `tasks.TASKS`).

Code that serves every task looks the kind up once and calls its functions, which take the model
(a `tasks.model.TaskModel`: `head`, `class_weights`, `spec`), a batch from `bertkit.tasks.collate`,
and the model's `TaskSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EncoderConfig, check_task_settings
from ..data.examples import LabelKind, LabelSet
from ..data.features import Features
from ..heads import IGNORE_INDEX


@dataclass(frozen=True)
class TaskSpec:
    """A fine-tuned model's task and settings. The fields any kind understands are checked here;
    what a kind refuses (a CRF on spans, say) is checked by its `check` (`tasks.check_spec`)."""

    task: str
    labels: tuple[str, ...] = ()  # sorted; empty for regression
    alignment: str = "first"  # word tasks: "first" | "mean" | "every"
    decoder: str = "greedy"  # tag: "greedy" (argmax) | "crf"
    pooling: str = "cls"  # sequence tasks: "cls" | "mean"
    max_span_width: int = 8  # span: longest span in words
    span_summary: str = "mean"  # span: "mean" | "attention"
    threshold: float = 0.5  # multilabel (sigmoid) and span (probability) decisions
    thresholds: tuple[float, ...] = ()  # multilabel: one per label, tuned on dev; empty = `threshold`
    max_length: int = 512
    stride: int = 128
    overflow: str = "window"  # "window" | "truncate" (counted)
    dropout: float = 0.1
    pair: bool = False  # sequence tasks: inputs are text pairs ([CLS] A [SEP] B [SEP])
    entity_mode: str = "strict"  # BIO metrics: seqeval "strict" (IOB2) or "default" (conlleval)
    reader: dict = field(default_factory=dict)  # options of the reader that read the training file

    def __post_init__(self) -> None:
        check_task_settings(self)
        LabelSet(self.labels)  # refuses labels out of order: the head's outputs are in LabelSet's order
        if self.thresholds and len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")


@dataclass(frozen=True)
class TaskKind:
    """One kind of task: plain functions of the kind's module (None: the kind has nothing to do there)."""

    words: bool  # inputs are words (WordExample: tagging, spans); else texts (TextExample)
    label_kind: LabelKind  # texts: what a label cell holds ("single", "multi" or "score")
    main_metric: Callable[[TaskSpec], str]  # the dev metric that picks the best epoch
    head: Callable[[EncoderConfig, TaskSpec], nn.Module]
    targets: Callable[[Sequence, Features, LabelSet | None], list]  # per row: its target, None if unlabelled
    collate: Callable[[dict, list | None, Features, Sequence[int], TaskSpec], None]  # adds labels and counts
    scores: Callable[[nn.Module, Tensor, dict], Tensor]  # the head on (B, T, H) hidden states
    loss: Callable[[nn.Module, Tensor, dict], Tensor]  # fp32 scores -> loss summed over the batch's items
    decode: Callable[[nn.Module, Tensor, dict], list]  # fp32 scores -> per batch row, what prediction keeps
    assemble: Callable[[list, Features, Sequence, TaskSpec], list[dict]]  # rows -> a prediction per example
    metrics: Callable[[TaskSpec, Sequence, Sequence[dict], str], dict]  # predictions against labels
    check: Callable[[TaskSpec], None]  # refuse settings this kind cannot use, naming them
    class_ids: Callable[[Features, TaskSpec], tuple[np.ndarray, int]] | None = None  # the softmax's class ids
    pairs: bool = False  # every input is a text pair
    prepare: Callable[[list, str], list] | None = None  # examples as read -> examples to train on
    init_head: Callable[[nn.Module, Features], None] | None = None  # a head's start from the training rows
    report: Callable[[Sequence, Features, TaskSpec], dict] | None = None  # what the data cannot teach, counted
    tune: Callable[[TaskSpec, Sequence, list[dict]], tuple[TaskSpec, list[dict]]] | None = None  # on dev


def check_labels_and_decoder(spec: TaskSpec, *, labels: bool = True, crf: bool = False) -> None:
    """Refuse a spec without labels where the kind needs them, or with a CRF where it has none."""
    if labels and not spec.labels:
        raise ValueError(f"a {spec.task} task needs labels; the training data has none")
    if spec.decoder == "crf" and not crf:
        raise ValueError("the CRF decodes tag sequences: use it with the tag task")


def cross_entropy(model: nn.Module, scores: Tensor, batch: dict) -> Tensor:
    """Softmax cross-entropy summed over items, weighted by the model's class weights (if any);
    items labelled IGNORE_INDEX count nothing. scores (..., L), labels (...)."""
    return F.cross_entropy(scores.reshape(-1, scores.shape[-1]), batch["labels"].reshape(-1),
                           weight=model.class_weights, ignore_index=IGNORE_INDEX, reduction="sum")


def labelled_items(labels: Tensor) -> int:
    return int((labels != IGNORE_INDEX).sum())


def label_id(label: Any, labels: LabelSet) -> int:
    """A label's index, or IGNORE_INDEX for a label the head does not have (unseen dev labels)."""
    return labels.index(label) if label in labels else IGNORE_INDEX
