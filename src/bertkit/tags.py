"""Every BIO tag and span conversion, in one place: readers, metrics, the CRF, the task heads and
prediction all use these.

Tags are BIO (IOB2): B-X starts an entity of type X, I-X continues it, O is outside. Spans are
(first word, last word + 1, type). Two ways to read entities off a tag sequence, each equal to
seqeval 1.2.2 (the tests hold them to it on random, malformed sequences):
- "strict" (seqeval's mode="strict"): an entity is exactly what the scheme spells, B-X I-X ... in
  IOB2; a stray I-X, or an IOBES entity lacking its E-X, is no entity.
- "default" (seqeval's default, after conlleval): lenient; I-X after O or after another type
  starts an entity, a change of type ends one, E-/S- tags are understood whatever the scheme.

Where this departs from seqeval: a tag that is neither "O" nor prefix-dash-type (or a bare prefix)
is an error rather than a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Span = tuple[int, int, str]

# seqeval.scheme's tables: (previous prefixes, current prefixes, type condition).
_STRICT_SCHEMES = {
    "IOB1": {
        "prefixes": "IOB",
        "start": [("O", "I", "any"), ("I", "I", "diff"), ("B", "I", "any"), ("I", "B", "same"), ("B", "B", "same")],
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
        return _strict_spans([(t[0], t[1:].strip("-") or "_") for t in tags], _STRICT_SCHEMES[scheme])
    if mode == "default":
        _check_tags(tags, "IOBES", "default mode")
        return _lenient_spans([(t[0], t[1:].split("-", 1)[-1] or "_") for t in tags])
    raise ValueError(f"mode must be 'strict' or 'default', got {mode!r}")


def _check_tags(tags: list[str], prefixes: str, what: str) -> None:
    for i, tag in enumerate(tags):
        if tag != "O" and not (tag[:1] and tag[0] in prefixes.replace("O", "") and tag[1:2] in ("", "-")):
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
        if prev_tag in "ES" or (prev_tag in "BI" and tag in "BSO") or (prev_tag != "O" and prev_type != type_):
            spans.add((begin, i, prev_type))  # the chunk before this token ends
        if tag in "BS" or (prev_tag in "ESO" and tag in "EI") or (tag != "O" and prev_type != type_):
            begin = i  # a chunk starts here
        prev_tag, prev_type = tag, type_
    return spans


def is_bio_tag(tag: str) -> bool:
    """O, B-X or I-X."""
    return tag == "O" or (tag[:2] in ("B-", "I-") and len(tag) > 2)


def is_bio_label_set(labels: Iterable[str]) -> bool:
    """Every label is a BIO tag (an entity tag set, not POS tags, say)."""
    return all(is_bio_tag(x) for x in labels)


def with_bio_pairs(tags: Iterable[str]) -> set[str]:
    """The tags with their pairs: B-X brings I-X and back, so a head has both even if one never occurs."""
    tags = set(tags)
    return tags | {p + t[2:] for t in tags if is_bio_tag(t) and t != "O" for p in ("B-", "I-")}


def continues(previous: str | None, tag: str) -> bool:
    """Whether the tag I-X may follow `previous` (None: the sequence's start) in BIO: only after B-X or I-X."""
    return previous is not None and previous[:2] in ("B-", "I-") and previous[2:] == tag[2:]


def check_bio_label_set(labels: Sequence[str]) -> None:
    """Refuse IOBES/BILOU labels, and an I-X without its B-X (an IOB1 label set)."""
    for label in labels:
        if label[:2] in ("E-", "S-", "L-", "U-"):
            raise ValueError(f"label {label!r}: a BIO (IOB2) label set is expected, not IOBES or BILOU")
        if label.startswith("I-") and "B" + label[1:] not in labels:
            raise ValueError(f"label {label!r} has no {'B' + label[1:]!r}: this looks like IOB1; "
                             "convert the tags to IOB2 (an entity always starts with B-)")


def iob1_to_bio(tags: Sequence[str]) -> list[str]:
    """Valid BIO from IOB1 tags or from greedy per-word decisions: an I-X that follows O or another
    type starts an entity, so it becomes B-X. BIO input comes back unchanged."""
    return ["B-" + tag[2:] if tag.startswith("I-") and not continues(tags[i - 1] if i else None, tag) else tag
            for i, tag in enumerate(tags)]


def entity_spans(tags: Sequence[str]) -> list[Span]:
    """The entities of BIO tags in order, read as the CoNLL evaluation script reads them (seqeval's
    default mode: an I-X after O or another type starts an entity)."""
    return sorted(spans_from_tags(tags, mode="default"))


def spans_to_bio(words: Sequence[str], word_spans: Iterable[Span]) -> tuple[list[str], int]:
    """BIO tags from word spans, keeping the longest spans that do not overlap a kept one (between
    equally long ones the earlier): BIO cannot hold nested entities, so inner and crossing spans are dropped.

    Returns:
        (tags, one per word; number of spans dropped because they overlapped a kept span).
    """
    tags, dropped = ["O"] * len(words), 0
    for start, end, label in sorted(word_spans, key=lambda s: (s[0] - s[1], s[0])):
        if not 0 <= start < end <= len(words):
            raise ValueError(f"word span ({start}, {end}, {label!r}) is outside the {len(words)} words")
        if any(t != "O" for t in tags[start:end]):
            dropped += 1
            continue
        tags[start:end] = ["B-" + label] + ["I-" + label] * (end - start - 1)
    return tags, dropped


def continuation_ids(labels: Sequence[str]) -> list[int]:
    """For each label id, the id a later subword of its word takes: I-X for B-X, itself otherwise."""
    index = {x: i for i, x in enumerate(labels)}
    return [index.get("I-" + x[2:], i) if x.startswith("B-") else i for i, x in enumerate(labels)]
