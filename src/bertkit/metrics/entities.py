"""Entity-level scores for tagging (BIO tags) and span classification (sets of spans).

Two ways to read entities off a tag sequence, each equal to seqeval 1.2.2 (the test holds them to
it on random, malformed sequences):
- "strict" (seqeval's mode="strict"): an entity is exactly what the scheme spells, B-X I-X ... in
  IOB2; a stray I-X, or an IOBES entity lacking its E-X, is no entity.
- "default" (seqeval's default, after conlleval): lenient; I-X after O or after another type
  starts an entity, a change of type ends one, E-/S- tags are understood whatever the scheme.

Where this departs from seqeval: a tag that is neither "O" nor prefix-dash-type (or a bare prefix)
is an error rather than a warning, and lengths that differ are an error naming the sentence.
Spans are (start, end_exclusive, type); scores are micro-averaged over entities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .classification import precision_recall_f1

Span = tuple[int, int, str]

# seqeval.scheme's tables: (previous prefixes, current prefixes, type condition).
_STRICT_SCHEMES = {
    "IOB1": {
        "prefixes": "IOB",
        "start": [("O", "I", "any"), ("I", "I", "diff"), ("B", "I", "any"), ("I", "B", "same"),
                  ("B", "B", "same")],
        "inside": [("B", "I", "same"), ("I", "I", "same")],
        "end": [("I", "I", "diff"), ("I", "O", "any"), ("I", "B", "any"), ("B", "O", "any"),
                ("B", "I", "diff"), ("B", "B", "same")],
    },
    "IOB2": {
        "prefixes": "IOB",
        "start": [("IOBES", "B", "any")],
        "inside": [("B", "I", "same"), ("I", "I", "same")],
        "end": [("I", "O", "any"), ("I", "I", "diff"), ("I", "B", "any"), ("B", "O", "any"),
                ("B", "I", "diff"), ("B", "B", "any")],
    },
    "IOBES": {
        "prefixes": "IOBES",
        "start": [("IOBES", "B", "any"), ("IOBES", "S", "any")],
        "inside": [("B", "I", "same"), ("B", "E", "same"), ("I", "I", "same"), ("I", "E", "same")],
        "end": [("S", "IOBES", "any"), ("E", "IOBES", "any")],
    },
}
_OUTSIDE = ("O", "_")


def spans_from_tags(tags: Sequence[str], scheme: str = "IOB2", mode: str = "strict") -> set[Span]:
    """Entities of one tagged sentence.

    Args:
        tags: one tag per token, e.g. ["B-PER", "I-PER", "O"].
        scheme: "IOB2", "IOB1" or "IOBES"; read in strict mode only (default mode reads all).
        mode: "strict" or "default" (see the module docstring).

    Returns:
        {(start, end_exclusive, type)}.
    """
    tags = list(tags)
    if mode == "strict":
        if scheme not in _STRICT_SCHEMES:
            raise ValueError(f"scheme must be one of {sorted(_STRICT_SCHEMES)}, got {scheme!r}")
        _check_tags(tags, _STRICT_SCHEMES[scheme]["prefixes"], f"the {scheme} scheme")
        return _strict_spans([(t[0], t[1:].strip("-") or "_") for t in tags],
                             _STRICT_SCHEMES[scheme])
    if mode == "default":
        _check_tags(tags, "IOBES", "default mode")
        return _lenient_spans([(t[0], t[1:].split("-", 1)[-1] or "_") for t in tags])
    raise ValueError(f"mode must be 'strict' or 'default', got {mode!r}")


def _check_tags(tags: list[str], prefixes: str, what: str) -> None:
    for i, tag in enumerate(tags):
        if tag != "O" and not (tag[:1] and tag[0] in prefixes.replace("O", "")
                               and tag[1:2] in ("", "-")):
            raise ValueError(f"tag {i} {tag!r} is not a tag of {what}: expected 'O' or one of "
                             f"{', '.join(p + '-TYPE' for p in prefixes if p != 'O')}")


def _strict_spans(tokens: list[tuple[str, str]], scheme: dict) -> set[Span]:
    """seqeval's `Tokens.entities`: from each start, extend over inside tokens, keep the
    entity only when the token after it properly ends it."""
    tokens = tokens + [_OUTSIDE]
    spans, i, prev = set(), 0, _OUTSIDE
    while i < len(tokens):
        if _matches(prev, tokens[i], scheme["start"]):
            end = i + 1
            while _matches(tokens[end - 1], tokens[end], scheme["inside"]):
                end += 1  # stops at the latest on the appended O, never inside an entity
            if _matches(tokens[end - 1], tokens[end], scheme["end"]):
                spans.add((i, end, tokens[i][1]))
            i = end
        else:
            i += 1
        prev = tokens[i - 1]
    return spans


def _matches(prev: tuple[str, str], token: tuple[str, str], patterns: list) -> bool:
    same = prev[1] == token[1]
    return any(prev[0] in before and token[0] in now
               and (cond == "any" or (cond == "same") == same) for before, now, cond in patterns)


def _lenient_spans(tokens: list[tuple[str, str]]) -> set[Span]:
    """seqeval's `get_entities` (conlleval's chunk rules), one sentence at a time."""
    spans, begin, (prev_tag, prev_type) = set(), 0, ("O", "")
    for i, (tag, type_) in enumerate(tokens + [_OUTSIDE]):
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            spans.add((begin, i, prev_type))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return spans


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (prev_tag in "ES" or (prev_tag in "BI" and tag in "BSO")
            or (prev_tag != "O" and prev_type != type_))


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    return (tag in "BS" or (prev_tag in "ESO" and tag in "EI")
            or (tag != "O" and prev_type != type_))


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
    tp, n_pred, n_true = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        tp.update(span[2] for span in g & p)
        n_pred.update(span[2] for span in p)
        n_true.update(span[2] for span in g)
    scores = _scores(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    scores["per_type"] = {name: _scores(tp[name], n_pred[name], n_true[name])
                          for name in sorted(n_pred | n_true)}
    if subset is not None:
        scores["subset"] = _subset_recall(gold, pred, subset)
    return scores


def _scores(tp: int, n_pred: int, n_true: int) -> dict:
    precision, recall, f1 = (float(x) for x in precision_recall_f1(tp, n_pred, n_true))
    return {"precision": precision, "recall": recall, "f1": f1, "support": n_true}


def _subset_recall(gold: Sequence[set[Span]], pred: Sequence[set[Span]],
                   subset: Sequence[set[Span]]) -> dict:
    _check_sentences(gold, subset, "subset")
    for i, (g, s) in enumerate(zip(gold, subset)):
        if not s <= g:
            raise ValueError(f"sentence {i}: subset spans {sorted(s - g)} are not gold spans")
    found = sum(len(s & p) for s, p in zip(subset, pred))
    support = sum(len(s) for s in subset)
    return {"recall": found / support if support else 0.0, "support": support}
