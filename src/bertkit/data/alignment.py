"""Word labels onto subword tokens, and inputs longer than the model's window.

Word-level tasks label words, the model sees WordPiece tokens. `align_labels` puts each word's
label on its first token ("first", as BERT's NER experiments did) or on all of its tokens ("every");
`word_index` lets a head average a word's token vectors instead ("mean").

Long inputs are split by `Tokenizer.encode(..., overflow="window")` into overlapping windows. For
token-level outputs each word is read from exactly one window: the one where it has the most
context, max over windows of min(tokens left of it, tokens right of it), the rule of BERT's SQuAD
code (`_check_is_max_context`). So a word in the overlap of two windows is labelled and predicted
once, never twice. For sequence-level outputs the windows of an input are pooled (mean of logits).
"""

from __future__ import annotations

import warnings
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from ..tokenizer import Encoded
from .masking import IGNORE_INDEX

AlignMode = Literal["first", "every"]


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int], mode: AlignMode = "first") -> list[int]:
    """Token labels from word labels for one sequence.

    Args:
        word_ids: (T,) the word of each token, None for special tokens (`Encoded.word_ids(row)`).
        word_labels: (W,) one label id per word.
        mode: "first" labels a word's first token and ignores the rest; "every" labels all of them.

    Returns:
        (T,) label ids, IGNORE_INDEX (-100) for special tokens and, in "first", non-first tokens.
        A word with no token (e.g. only a zero-width character) gets no label anywhere.
    """
    if mode not in ("first", "every"):
        raise ValueError(f"mode must be 'first' or 'every', not {mode!r}")
    labels, previous = [], None
    for i, w in enumerate(word_ids):
        if w is not None and not 0 <= w < len(word_labels):
            raise ValueError(f"token {i} belongs to word {w}, but only {len(word_labels)} word labels were given")
        first = w is not None and w != previous
        labels.append(word_labels[w] if w is not None and (first or mode == "every") else IGNORE_INDEX)
        previous = w
    return labels


def word_index(word_ids: Sequence[int | None]) -> Tensor:
    """(T,) int64 word index of each token, -1 for special tokens: the groups to average for "mean"."""
    return torch.tensor([-1 if w is None else w for w in word_ids], dtype=torch.long)


# ---------------------------------------------------------------------------------- windows


def _word_extents(encoded: Encoded, row: int, sequence: int) -> tuple[dict[int, list[int]], int, int]:
    """{word: [first position, last position, character start of the first token]} in one row,
    and the first and last positions of `sequence` in that row."""
    enc = encoded.rows[row]
    extents: dict[int, list[int]] = {}
    positions = [p for p, s in enumerate(enc.sequence_ids) if s == sequence]
    for p in positions:
        w = enc.word_ids[p]
        if w is None:
            continue
        if w not in extents:
            extents[w] = [p, p, enc.offsets[p][0]]
        extents[w][1] = p
    return extents, (positions[0] if positions else 0), (positions[-1] if positions else -1)


def best_windows(encoded: Encoded, sequence: int = 0) -> dict[tuple[int, int], tuple[int, int]]:
    """For every word of every input, the window row it is read from and its first token there.

    A window is a candidate for a word if it holds the word's first subword (windows may cut a
    word, and the row holding only its tail is not a candidate). Among candidates the word is read
    where min(tokens before it, tokens after it) inside the window is largest; ties go to the
    earlier window.

    Args:
        encoded: rows from `Tokenizer.encode(..., overflow="window")` (any overflow works).
        sequence: which text of a pair the words belong to (0 = first).

    Returns:
        {(input index, word index): (row, token position)}; each word that has at least one token
        appears exactly once. Words without tokens are absent.
    """
    best: dict[tuple[int, int], tuple[tuple[int, int, int], int, int]] = {}
    for row in range(len(encoded)):
        extents, lo, hi = _word_extents(encoded, row, sequence)
        origin = int(encoded.origin[row])
        for w, (first, last, char_start) in extents.items():
            # The word's true first subword has the smallest character start of all its tokens.
            score = (-char_start, min(first - lo, hi - last), -row)
            key = (origin, w)
            if key not in best or score > best[key][0]:
                best[key] = (score, row, first)
    return {key: (row, pos) for key, (_, row, pos) in best.items()}


def window_labels(encoded: Encoded, word_labels: Sequence[Sequence[int]], mode: AlignMode = "first",
                  sequence: int = 0) -> list[list[int]]:
    """Token labels for every window row, each word labelled in its best window only.

    Args:
        word_labels: per input, one label id per word.
        mode: "first" labels the word's first token in its best window; "every" also its other
            tokens in that window.

    Returns:
        Per row, (T_row,) label ids with IGNORE_INDEX elsewhere. Words without any token are
        counted in a warning: no window can carry their label.
    """
    if mode not in ("first", "every"):
        raise ValueError(f"mode must be 'first' or 'every', not {mode!r}")
    labels = [[IGNORE_INDEX] * len(encoded.ids(r)) for r in range(len(encoded))]
    chosen = best_windows(encoded, sequence)
    for (origin, w), (row, pos) in chosen.items():
        if w >= len(word_labels[origin]):
            raise ValueError(f"input {origin} has a token of word {w} but only {len(word_labels[origin])} word labels")
        enc = encoded.rows[row]
        span = range(pos, len(enc.word_ids)) if mode == "every" else [pos]
        for p in span:
            if enc.word_ids[p] != w or enc.sequence_ids[p] != sequence:
                break
            labels[row][p] = word_labels[origin][w]
    missing = sum(len(ws) for ws in word_labels) - len(chosen)
    if missing:
        warnings.warn(f"{missing} words have no token (they normalise to nothing) and carry no label", stacklevel=2)
    return labels


def rows_by_origin(origin: np.ndarray, num_inputs: int | None = None) -> list[np.ndarray]:
    """The window rows of each input: `rows_by_origin(encoded.origin)[i]` are input i's rows, in order."""
    origin = np.asarray(origin)
    n = int(origin.max()) + 1 if num_inputs is None else num_inputs
    order = np.argsort(origin, kind="stable")
    return np.split(order, np.searchsorted(origin[order], np.arange(1, n)))


def mean_over_windows(values: Tensor, origin: np.ndarray | Tensor, num_inputs: int | None = None) -> Tensor:
    """Average per-window values (e.g. logits) over the windows of each input.

    Args:
        values: (R, ...) one entry per window row.
        origin: (R,) the input index of each row (`Encoded.origin`).

    Returns:
        (N, ...) the mean over each input's rows, N = num_inputs or max(origin) + 1.
    """
    index = torch.as_tensor(np.asarray(origin), dtype=torch.long, device=values.device)
    n = int(index.max()) + 1 if num_inputs is None else num_inputs
    counts = torch.bincount(index, minlength=n)
    if len(counts) > n or (counts == 0).any():
        raise ValueError(f"origin must give each of the {n} inputs at least one row and no other index")
    total = values.new_zeros((n, *values.shape[1:])).index_add_(0, index, values)
    return total / counts.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
