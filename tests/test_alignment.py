"""Word labels on subwords, and sliding windows that read every word exactly once."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from bertkit.data.alignment import (align_labels, best_windows, mean_over_windows, rows_by_origin,
                                    window_labels, word_index)
from bertkit.data.masking import IGNORE_INDEX
from bertkit.data.tasks import read_conll, read_jsonl
from bertkit.tokenizer import Tokenizer

WORD = st.text(alphabet="abcdefghij", min_size=1, max_size=12)
WORDS = st.lists(WORD, min_size=1, max_size=40)


@functools.lru_cache(maxsize=None)
def small_tokenizer() -> Tokenizer:
    """A vocabulary so small that most words split into several subwords."""
    texts = ["abc def ghij bad face dig hide jab"] * 20
    return Tokenizer.train(texts, vocab_size=40, min_frequency=1, show_progress=False)


def labels_of(words: list[str]) -> list[int]:
    return [len(w) % 5 for w in words]


def covered_words(tokenizer: Tokenizer, inputs: list[list[str]]) -> set[tuple[int, int]]:
    """(input, word) of every word that has a token when nothing is cut."""
    whole = tokenizer.encode(inputs, split_into_words=True, max_length=10**6)
    return {(i, w) for i in range(len(inputs)) for w in whole.word_ids(i) if w is not None}


# ---------------------------------------------------------------------------------- align_labels


@settings(max_examples=200, deadline=None)
@given(WORDS)
def test_first_mode_labels_each_word_once(words):
    word_ids = small_tokenizer().encode([words], split_into_words=True, max_length=10**6).word_ids(0)
    labels = align_labels(word_ids, labels_of(words), mode="first")
    per_word = [[lab for lab, w in zip(labels, word_ids) if w == i and lab != IGNORE_INDEX] for i in range(len(words))]
    for i, found in enumerate(per_word):
        assert found == ([labels_of(words)[i]] if i in word_ids else [])
    assert all(lab == IGNORE_INDEX for lab, w in zip(labels, word_ids) if w is None)


@settings(max_examples=200, deadline=None)
@given(WORDS)
def test_every_mode_labels_every_subword(words):
    word_ids = small_tokenizer().encode([words], split_into_words=True, max_length=10**6).word_ids(0)
    labels = align_labels(word_ids, labels_of(words), mode="every")
    assert labels == [IGNORE_INDEX if w is None else labels_of(words)[w] for w in word_ids]


def test_align_labels_by_hand():
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    assert align_labels(word_ids, [3, 4, 5]) == [-100, 3, -100, 4, 5, -100, -100, -100]
    assert align_labels(word_ids, [3, 4, 5], mode="every") == [-100, 3, 3, 4, 5, 5, 5, -100]
    assert word_index(word_ids).tolist() == [-1, 0, 0, 1, 2, 2, 2, -1]
    with pytest.raises(ValueError, match="token 4 belongs to word 2, but only 2 word labels"):
        align_labels(word_ids, [3, 4])


# ---------------------------------------------------------------------------------- windows


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=3), st.integers(8, 40), st.data())
def test_windows_read_every_word_exactly_once(inputs, max_length, data):
    stride = data.draw(st.integers(0, max_length - 4))
    tok = small_tokenizer()
    encoded = tok.encode(inputs, split_into_words=True, max_length=max_length, overflow="window", stride=stride)
    chosen = best_windows(encoded)
    assert set(chosen) == covered_words(tok, inputs)
    first_piece = tok.encode(inputs, split_into_words=True, max_length=10**6)
    for (i, w), (row, pos) in chosen.items():
        assert encoded.origin[row] == i and encoded.word_ids(row)[pos] == w
        # The token read is the word's first subword, not a tail left over from a cut window.
        first = first_piece.word_ids(i).index(w)
        assert encoded.offsets(row)[pos] == first_piece.offsets(i)[first]
    labels = window_labels(encoded, [labels_of(ws) for ws in inputs])
    assert sum(lab != IGNORE_INDEX for row in labels for lab in row) == len(chosen)


def test_word_is_read_where_it_has_most_context():
    tok = small_tokenizer()
    words = ["abc"] * 30  # one token each: windows of 8 content tokens, 4 shared
    encoded = tok.encode([words], split_into_words=True, max_length=10, overflow="window", stride=4)
    assert [encoded.word_ids(r)[1:-1] for r in range(2)] == [list(range(8)), list(range(4, 12))]
    chosen = best_windows(encoded)
    # Word 5 has 5 tokens left of it and 2 right in window 0, 1 left and 6 right in window 1.
    assert chosen[(0, 5)] == (0, 6)
    assert chosen[(0, 6)] == (1, 3)  # 6 left / 1 right in window 0, 2 / 5 in window 1


def test_every_mode_in_windows_labels_all_pieces_in_the_chosen_window():
    tok = small_tokenizer()
    words = ["jihgfedcba", "abc", "jihgfedcba"]
    encoded = tok.encode([words], split_into_words=True, max_length=6, overflow="window", stride=1)
    labels = window_labels(encoded, [[7, 8, 9]], mode="every")
    counts = Counter(lab for row in labels for lab in row if lab != IGNORE_INDEX)
    whole = tok.encode([words], split_into_words=True, max_length=10**6).word_ids(0)
    assert counts[8] == 1 and 1 <= counts[7] <= whole.count(0) and 1 <= counts[9] <= whole.count(2)


def test_words_without_tokens_are_reported():
    tok = small_tokenizer()
    encoded = tok.encode([["abc", "\u200b", "abc"]], split_into_words=True, max_length=64, overflow="window",
                         stride=4)
    with pytest.warns(UserWarning, match="1 words have no token"):
        labels = window_labels(encoded, [[1, 2, 3]])
    assert [lab for lab in labels[0] if lab != IGNORE_INDEX] == [1, 3]


def test_windows_pool_to_one_row_per_input():
    origin = np.array([0, 0, 0, 1, 2, 2])
    assert [r.tolist() for r in rows_by_origin(origin)] == [[0, 1, 2], [3], [4, 5]]
    logits = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 3.0], [2.0, 2.0], [0.0, 1.0], [0.0, 3.0]])
    assert mean_over_windows(logits, origin).tolist() == [[3.0, 1.0], [2.0, 2.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match="each of the 4 inputs at least one row"):
        mean_over_windows(logits, origin, num_inputs=4)


# ---------------------------------------------------------------------------------- real long inputs


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(minilm_dir)


def test_no_word_lost_in_a_long_conll_document(data_dir, minilm_tokenizer):
    sentences = read_conll(data_dir / "conll2003" / "eng.testa")[:60]
    words = [w for ex in sentences for w in ex.words]
    tags = [t for ex in sentences for t in ex.tags]
    tag_ids = {t: i for i, t in enumerate(sorted(set(tags)))}
    encoded = minilm_tokenizer.encode([words], split_into_words=True, max_length=128, overflow="window", stride=32)
    assert len(encoded) > 5
    assert set(best_windows(encoded)) == covered_words(minilm_tokenizer, [words])
    labels = window_labels(encoded, [[tag_ids[t] for t in tags]])
    read = [lab for row in labels for lab in row if lab != IGNORE_INDEX]
    assert len(read) == len(words) and Counter(read) == Counter(tag_ids[t] for t in tags)


def test_no_word_lost_in_a_movie_review(data_dir, minilm_tokenizer):
    reviews = read_jsonl(data_dir / "movie_reviews" / "reviews.jsonl", where={"id": lambda i: "cv000_" in i})
    inputs = [ex.text.split() for ex in reviews]
    encoded = minilm_tokenizer.encode(inputs, split_into_words=True, max_length=256, overflow="window", stride=64)
    assert len(encoded) > 2 * len(inputs)
    assert set(best_windows(encoded)) == covered_words(minilm_tokenizer, inputs)
    assert [len(rows) for rows in rows_by_origin(encoded.origin)] == np.bincount(encoded.origin).tolist()
