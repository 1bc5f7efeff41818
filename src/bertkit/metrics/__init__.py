"""Evaluation scores: sentence-level classification and regression, entity and span tagging, ranking."""

from .classification import (accuracy, average_ranks, label_counts, macro_f1, matthews_corrcoef, micro_f1,
                             multilabel_f1, pearson, per_label_scores, precision_recall_f1, roc_auc,
                             spearman)
from .entities import entity_scores, nested_span_scores, span_scores
from .ranking import evaluate_run

__all__ = [
    "accuracy", "average_ranks", "entity_scores", "evaluate_run", "label_counts", "macro_f1",
    "matthews_corrcoef", "micro_f1", "multilabel_f1", "nested_span_scores", "pearson", "per_label_scores",
    "precision_recall_f1", "roc_auc", "span_scores", "spearman",
]
