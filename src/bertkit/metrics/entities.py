"""Entity-level scores for tagging (BIO tags) and span classification (sets of spans), equal to
seqeval's (entities read off tags by `tags.spans_from_tags`).

Where this departs from seqeval: lengths that differ are an error naming the sentence. Spans are
(start, end_exclusive, type); scores are micro-averaged over entities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..tags import Span, spans_from_tags
from .classification import precision_recall_f1

def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                  mode: str = "strict", scheme: str = "IOB2") -> dict:
    """Entity precision, recall and F1 of predicted tags against gold tags.

    Args:
        gold, pred: one tag list per sentence, of equal lengths.
        mode: "strict" or "default", as in seqeval.
        scheme: the tag scheme for strict mode.

    Returns:
        {"precision", "recall", "f1", "support", "per_type": {type: {"precision", "recall",
        "f1", "support"}}}, support counting gold entities.
    """
    _check_sentences(gold, pred)
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
    return span_scores([spans_from_tags(tags, scheme, mode) for tags in gold],
                       [spans_from_tags(tags, scheme, mode) for tags in pred])


def _check_sentences(gold: Sequence, other: Sequence, what: str = "predicted") -> None:
    if len(gold) != len(other):
        raise ValueError(f"{len(gold)} gold sentences but {len(other)} {what} ones")


def span_scores(gold: Sequence[set[Span]], pred: Sequence[set[Span]],
                subset: Sequence[set[Span]] | None = None) -> dict:
    """Precision, recall and F1 of predicted spans; spans may nest or overlap.

    Args:
        gold, pred: one set of (start, end, type) spans per sentence.
        subset: optionally, per sentence, some of the gold spans (the nested ones, say) whose
            recall to report on its own.

    Returns:
        As `entity_scores`, plus {"subset": {"recall", "support"}} when `subset` is given.
    """
    _check_sentences(gold, pred)
    tp = Counter(span[2] for g, p in zip(gold, pred) for span in g & p)
    n_pred = Counter(span[2] for p in pred for span in p)
    n_true = Counter(span[2] for g in gold for span in g)
    scores = _scores(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    scores["per_type"] = {name: _scores(tp[name], n_pred[name], n_true[name])
                          for name in sorted(n_pred | n_true)}
    if subset is not None:
        scores["subset"] = _subset_recall(gold, pred, subset)
    return scores


def _scores(tp: int, n_pred: int, n_true: int) -> dict:
    precision, recall, f1 = (float(x) for x in precision_recall_f1(tp, n_pred, n_true))
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_true}


def _subset_recall(gold: Sequence[set[Span]], pred: Sequence[set[Span]], subset: Sequence[set[Span]]) -> dict:
    _check_sentences(gold, subset, "subset")
    for i, (g, s) in enumerate(zip(gold, subset)):
        if not s <= g:
            raise ValueError(f"sentence {i}: subset spans {sorted(s - g)} are not gold spans")
    found = sum(len(s & p) for s, p in zip(subset, pred))
    support = sum(len(s) for s in subset)
    return {"recall": found / support if support else 0.0, "support": support}


def nested_span_scores(gold: Sequence[set[Span]], pred: Sequence[set[Span]]) -> dict:
    """Span precision, recall and F1, and the recall on nested entities: those inside another gold
    entity, which BIO tags (one label per word) cannot hold beside their outer entity.

    Returns:
        {"precision", "recall", "f1", "nested_recall", "nested_support", "per_type"}.
    """
    nested = [{a for a in g if any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in g)} for g in gold]
    scores = span_scores(gold, pred, subset=nested)
    return {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
            "nested_recall": scores["subset"]["recall"], "nested_support": scores["subset"]["support"],
            "per_type": scores["per_type"]}
