"""Inputs longer than the model's window: which window reads each word, and pooling over windows.

`Tokenizer.encode(..., overflow="window")` splits a long input into overlapping window rows. For
word-level outputs each word is read from exactly one window (`best_windows`): the one where it has
the most context, max over windows of min(tokens left of it, tokens right of it), the rule of BERT's
SQuAD code (`_check_is_max_context`). So a word in the overlap of two windows is labelled and
predicted once, never twice. `features.word_features` gives each word to that row and maps the
row's tokens onto its words ("slots"): only the first subword for "first" (as BERT's NER
experiments did), all of the word's subwords in that row for "mean" and "every".

For sequence-level outputs the windows of an input are pooled (`combine_windows`: the mean of
their logits at prediction, the length-weighted mean of their vectors when embedding).
"""

from __future__ import annotations

import numpy as np

from ..tokenizer import Encoded


def _word_extents(encoded: Encoded, row: int) -> tuple[dict[int, list[int]], int, int]:
    """{word: [first position, last position, character start of the first token]} in one row,
    and the first and last positions of the first text in that row."""
    enc = encoded.rows[row]
    extents: dict[int, list[int]] = {}
    positions = [p for p, s in enumerate(enc.sequence_ids) if s == 0]
    for p in positions:
        w = enc.word_ids[p]
        if w is not None:
            extents.setdefault(w, [p, p, enc.offsets[p][0]])[1] = p
    return extents, (positions[0] if positions else 0), (positions[-1] if positions else -1)


def best_windows(encoded: Encoded) -> dict[tuple[int, int], tuple[int, int]]:
    """For every word of every input, the window row it is read from and its first token there.

    A window is a candidate for a word if it holds the word's first subword (windows may cut a
    word, and the row holding only its tail is not a candidate). Among candidates the word is read
    where min(tokens before it, tokens after it) inside the window is largest; ties go to the
    earlier window.

    Args:
        encoded: rows from `Tokenizer.encode(..., overflow="window")` (any overflow); words of the first text.

    Returns:
        {(input index, word index): (row, token position)}; each word that has at least one token
        appears exactly once. Words without tokens are absent.
    """
    best: dict[tuple[int, int], tuple[tuple[int, int, int], int, int]] = {}
    for row in range(len(encoded)):
        extents, lo, hi = _word_extents(encoded, row)
        origin = int(encoded.origin[row])
        for w, (first, last, char_start) in extents.items():
            # The word's true first subword has the smallest character start of all its tokens.
            score = (-char_start, min(first - lo, hi - last), -row)
            key = (origin, w)
            if key not in best or score > best[key][0]:
                best[key] = (score, row, first)
    return {key: (row, pos) for key, (_, row, pos) in best.items()}


def combine_windows(values: np.ndarray, origin: np.ndarray, num_inputs: int, weights: np.ndarray | None = None,
                    how: str = "mean") -> np.ndarray:
    """Per input, the mean (weighted by `weights`, e.g. window lengths) or the maximum of its window
    rows' values: (R, ...) -> (num_inputs, ...); the values themselves when no input was split.

    Raises:
        ValueError: an input has no row, or a row names no input.
    """
    counts = np.bincount(origin, minlength=num_inputs)
    if len(counts) > num_inputs or (counts == 0).any():
        raise ValueError(f"origin must give each of the {num_inputs} inputs at least one row and no other index")
    if len(origin) == num_inputs:
        return values
    if how == "max":
        out = np.full((num_inputs, *values.shape[1:]), -np.inf, dtype=values.dtype)
        np.maximum.at(out, origin, values)
        return out
    w = (np.ones(len(origin)) if weights is None else weights).astype(values.dtype)
    shape = (-1, *([1] * (values.ndim - 1)))  # one weight per row, broadcast over the rest
    out = np.zeros((num_inputs, *values.shape[1:]), dtype=values.dtype)
    np.add.at(out, origin, values * w.reshape(shape))
    return out / np.bincount(origin, weights=w, minlength=num_inputs).astype(values.dtype).reshape(shape)
