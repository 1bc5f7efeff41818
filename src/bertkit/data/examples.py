"""Fine-tuning examples and the label sets a head is built from.

Two kinds of example cover the usual tasks. `TextExample` is one text (or a text pair) with one
label, a tuple of labels (multi-label) or a score (regression). `WordExample` is a sentence split
into words with one tag per word (BIO tags for entities and chunks, plain tags for POS) and/or
entity spans in character offsets, which may nest, as GENIA's do. `data.readers` reads them from
files.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

from ..tags import with_bio_pairs

LabelKind = Literal["single", "multi", "score"]
Label = str | tuple[str, ...] | float | None
WordSpan = tuple[int, int, str]  # (first word, last word + 1, label)


class TaskDataError(ValueError):
    """A task file holds something the reader cannot use; the message starts with "path:line:"."""


@dataclass(frozen=True)
class TextExample:
    """One input of a classification, pair or regression task."""

    text: str
    pair: str | None = None
    label: Label = None  # one label, a multi-label tuple, a score; None = unlabelled
    source: str = ""  # "path:line" for error messages


@dataclass(frozen=True)
class Span:
    start: int  # character offset into the example's text
    end: int  # exclusive
    label: str


@dataclass(frozen=True)
class WordExample:
    """A sentence as words, with per-word tags and/or character-offset entity spans."""

    words: tuple[str, ...]
    tags: tuple[str, ...] | None = None  # one per word; None if unlabelled
    spans: tuple[Span, ...] = ()  # character offsets into `text`; nesting and overlaps allowed
    text: str = ""  # the words joined by single spaces (set if empty), or the original text
    word_offsets: tuple[tuple[int, int], ...] = ()  # (start, end) of each word in `text`
    source: str = ""

    def __post_init__(self):
        where = f"{self.source}: " if self.source else ""
        if self.tags is not None and len(self.tags) != len(self.words):
            raise ValueError(f"{where}{len(self.words)} words but {len(self.tags)} tags; expected one tag per word")
        if not self.text:
            object.__setattr__(self, "text", " ".join(self.words))
        if not self.word_offsets:
            object.__setattr__(self, "word_offsets", _find_words(self.words, self.text, where))
        if len(self.word_offsets) != len(self.words):
            raise ValueError(f"{where}{len(self.words)} words but {len(self.word_offsets)} word offsets")
        for s in self.spans:
            if not 0 <= s.start < s.end <= len(self.text):
                raise ValueError(f"{where}span {s} is outside the text of {len(self.text)} characters "
                                 "or empty; expected 0 <= start < end <= len(text)")


def _find_words(words: Sequence[str], text: str, where: str) -> tuple[tuple[int, int], ...]:
    """Character (start, end) of each word, searched left to right in `text`."""
    offsets, at = [], 0
    for w in words:
        start = text.find(w, at)
        if start < 0:
            raise ValueError(f"{where}word {w!r} not found in the text after character {at}; "
                             "expected the words in order in `text`, or pass word_offsets")
        offsets.append((start, start + len(w)))
        at = start + len(w)
    return tuple(offsets)


def word_spans(example: WordExample) -> list[WordSpan]:
    """The example's character spans as word spans: every word the span overlaps, end exclusive.

    Raises:
        ValueError: a span covers no word (only spaces).
    """
    starts = [s for s, _ in example.word_offsets]
    ends = [e for _, e in example.word_offsets]
    out = []
    for span in example.spans:
        first = bisect.bisect_right(ends, span.start)  # first word ending after the span starts
        last = bisect.bisect_left(starts, span.end)  # words starting before the span ends
        if first >= last:
            raise ValueError(f"{example.source}: span {span} covers no word; expected it to overlap a word")
        out.append((first, last, span.label))
    return out


def example_labels(example: TextExample | WordExample) -> set[str]:
    """The labels an example carries: its label(s), its tags, or (a WordExample without tags) its
    span labels. A BIO tag brings its pair (B-X brings I-X and back), so a head has both even if
    one never occurs."""
    if isinstance(example, TextExample):
        if isinstance(example.label, float):
            raise ValueError(f"{example.source}: a score label has no label set (regression)")
        return {example.label} if isinstance(example.label, str) else set(example.label or ())
    if example.tags is None:
        return {s.label for s in example.spans}
    return with_bio_pairs(example.tags)


@dataclass(frozen=True)
class LabelSet:
    """Labels of a task, sorted, with their indices as a head's output units."""

    labels: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if list(self.labels) != sorted(set(self.labels)):
            raise ValueError(f"labels must be sorted and unique, got {list(self.labels)} "
                             "(LabelSet.from_labels sorts them)")
        object.__setattr__(self, "_index", {label: i for i, label in enumerate(self.labels)})

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> "LabelSet":
        return cls(tuple(sorted(set(labels))))

    @classmethod
    def from_examples(cls, examples: Iterable[TextExample | WordExample]) -> "LabelSet":
        """Every label (or tag, or span label) in the examples; see `example_labels`."""
        return cls.from_labels(label for ex in examples for label in example_labels(ex))

    def index(self, label: str) -> int:
        if label not in self._index:
            raise KeyError(f"label {label!r} is not among the {len(self)} training labels "
                           f"{list(self.labels)[:10]}{'...' if len(self) > 10 else ''}")
        return self._index[label]

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __getitem__(self, i: int) -> str:
        return self.labels[i]


def unseen_labels(known: LabelSet, examples: Iterable[TextExample | WordExample]) -> list[str]:
    """Labels in `examples` (dev/test data) that `known` (built from training data) lacks, sorted.

    The caller warns: a model can never predict these, so its scores on them are zero.
    """
    return sorted(set(LabelSet.from_examples(examples).labels) - set(known.labels))
