"""Evaluation scores: sentence-level classification and regression, entity and span tagging."""

from .classification import (
    accuracy,
    average_ranks,
    label_counts,
    macro_f1,
    matthews_corrcoef,
    micro_f1,
    multilabel_f1,
    pearson,
    per_label_scores,
    precision_recall_f1,
    spearman,
)
from .entities import entity_scores, span_scores, spans_from_tags

__all__ = [
    "accuracy", "average_ranks", "entity_scores", "label_counts", "macro_f1", "matthews_corrcoef",
    "micro_f1", "multilabel_f1", "pearson", "per_label_scores", "precision_recall_f1",
    "span_scores", "spans_from_tags", "spearman",
]
