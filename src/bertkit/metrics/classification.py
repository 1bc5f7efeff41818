"""Scores for sentence-level tasks: classification (single- and multi-label) and regression.

numpy only. Definitions follow scikit-learn and scipy, so figures compare with published ones:
a precision, recall or F1 whose denominator is zero counts as 0 (scikit-learn's default), macro
averages are unweighted means over labels, Matthews correlation is Gorodkin's multi-class form
(scikit-learn's `matthews_corrcoef`), Spearman uses average ranks for ties (scipy's `spearmanr`).
Where they return NaN (a correlation of a constant), these raise: a NaN in an evaluation log
hides the cause, a constant prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_recall_f1(tp, n_pred, n_true) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from counts; each 0 where its denominator is 0.

    Args:
        tp, n_pred, n_true: true positives, predicted positives, actual positives; scalars or
            arrays of one shape (one entry per label).

    Returns:
        (precision, recall, f1) float arrays of that shape.
    """
    tp, n_pred, n_true = (np.asarray(x, dtype=np.float64) for x in (tp, n_pred, n_true))
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return precision, recall, f1


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of examples whose predicted label equals the gold one."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def label_counts(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None):
    """Per-label true positives, predicted and gold counts of single-label predictions.

    Args:
        y_true, y_pred: (N,) labels (ints or strings).
        labels: labels to count; default every label seen in either, sorted.

    Returns:
        (labels, tp, n_pred, n_true), the last three (len(labels),) int arrays.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else np.asarray(labels)
    hit = y_true == y_pred
    tp = np.array([np.sum(hit & (y_true == label)) for label in labels])
    n_pred = np.array([np.sum(y_pred == label) for label in labels])
    n_true = np.array([np.sum(y_true == label) for label in labels])
    return labels.tolist(), tp, n_pred, n_true


def per_label_scores(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> dict:
    """Precision, recall, F1 and support (gold count) of each label.

    Args:
        y_true, y_pred: (N,) labels.
        labels: labels to report; default every label seen in either.

    Returns:
        {label: {"precision", "recall", "f1", "support"}}.
    """
    labels, tp, n_pred, n_true = label_counts(y_true, y_pred, labels)
    precision, recall, f1 = precision_recall_f1(tp, n_pred, n_true)
    return {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for label, p, r, f, n in zip(labels, precision, recall, f1, n_true)}


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted mean of the per-label F1 over `labels` (default: every label seen in either)."""
    _, tp, n_pred, n_true = label_counts(y_true, y_pred, labels)
    return float(np.mean(precision_recall_f1(tp, n_pred, n_true)[2]))


def micro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """F1 of the pooled counts over `labels`.

    Over every label it equals accuracy; leave out a negative class (e.g. "no_relation") to score
    only the positive ones, as relation-extraction benchmarks do.
    """
    _, tp, n_pred, n_true = label_counts(y_true, y_pred, labels)
    return float(precision_recall_f1(tp.sum(), n_pred.sum(), n_true.sum())[2])


def multilabel_f1(y_true: np.ndarray, y_pred: np.ndarray, average: str = "micro") -> float:
    """F1 of multi-label predictions.

    Args:
        y_true, y_pred: (N, L) arrays of 0/1 (or bool).
        average: "micro" pools the counts of every label; "macro" averages the L per-label F1,
            labels absent from both counting 0 (as scikit-learn does).

    Returns:
        The F1.
    """
    y_true, y_pred = _pair(y_true, y_pred, ndim=2)
    if not np.isin(y_true, (0, 1)).all() or not np.isin(y_pred, (0, 1)).all():
        raise ValueError("multilabel_f1 expects 0/1 indicator arrays; threshold scores first")
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    tp, n_pred, n_true = (y_true & y_pred).sum(0), y_pred.sum(0), y_true.sum(0)  # (L,) each
    if average == "micro":
        return float(precision_recall_f1(tp.sum(), n_pred.sum(), n_true.sum())[2])
    if average == "macro":
        return float(np.mean(precision_recall_f1(tp, n_pred, n_true)[2]))
    raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")


def matthews_corrcoef(y_true: Sequence, y_pred: Sequence) -> float:
    """Matthews correlation; for more than two labels, Gorodkin's R_K.

    From the confusion matrix C (gold rows, predicted columns) with t = row sums, p = column sums,
    c = trace, s = total:  (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)).  0 when the denominator
    is 0 (a single label in gold or prediction), as scikit-learn returns.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    labels, index = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    confusion = np.zeros((len(labels), len(labels)))
    np.add.at(confusion, (index[: len(y_true)], index[len(y_true):]), 1)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator > 0 else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of two (N,) score arrays.

    Raises:
        ValueError: fewer than two points, a NaN, or a constant array (the correlation is undefined).
    """
    x, y = _pair(x, y, dtype=np.float64)
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("pearson needs at least two points and no NaN")
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    if denominator == 0:
        raise ValueError("pearson: one of the arrays is constant, so the correlation is undefined")
    return float(np.clip((x @ y) / denominator, -1.0, 1.0))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the ranks, tied values sharing their average rank."""
    x, y = _pair(x, y, dtype=np.float64)
    return pearson(average_ranks(x), average_ranks(y))


def roc_auc(y_true: Sequence, scores: Sequence[float]) -> float:
    """Area under the ROC curve of binary labels (1 positive) and scores: the chance that a random
    positive scores above a random negative, ties counting half (Mann-Whitney; scikit-learn's
    `roc_auc_score`). A threshold-free figure: a detector can rank well before any score crosses 0.5."""
    y_true, scores = _pair(y_true, scores, dtype=np.float64)
    positives = y_true == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError(f"the ROC AUC needs both classes; got {n1} positives and {n0} negatives")
    return float((average_ranks(scores)[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """(N,) 1-based ranks; a run of equal values gets the mean of the ranks it spans."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    is_first = np.r_[True, ordered[1:] != ordered[:-1]]  # first of each run of ties
    starts = np.flatnonzero(is_first)
    run_length = np.diff(np.r_[starts, len(x)])
    ranks = np.empty(len(x))
    ranks[order] = (starts + (run_length + 1) / 2)[np.cumsum(is_first) - 1]
    return ranks


def _pair(a, b, ndim: int = 1, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """Both as arrays of `ndim` dimensions and the same shape, or a ValueError saying why not."""
    a, b = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    if a.ndim != ndim or a.shape != b.shape:
        raise ValueError(f"expected two arrays of the same {ndim}-d shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no examples to score")
    return a, b
