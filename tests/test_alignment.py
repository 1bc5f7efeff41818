"""Sliding windows that read every word exactly once, word slots on subwords, and pooling over windows."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bertkit.data.alignment import best_windows, combine_windows
from bertkit.data.features import word_features
from bertkit.tasks import encode_examples
from bertkit.tasks import TaskSpec
from bertkit.data.examples import LabelSet, WordExample
from bertkit.data.readers import read_conll, read_jsonl
from bertkit.tokenizer import Tokenizer

WORD = st.text(alphabet="abcdefghij", min_size=1, max_size=12)
WORDS = st.lists(WORD, min_size=1, max_size=40)
TAGS = LabelSet(("T0", "T1", "T2", "T3", "T4"))


@functools.lru_cache(maxsize=None)
def small_tokenizer() -> Tokenizer:
    """A vocabulary so small that most words split into several subwords."""
    texts = ["abc def ghij bad face dig hide jab"] * 20
    return Tokenizer.train(texts, vocab_size=40, min_frequency=1, show_progress=False)


def tagged(words: list[str]) -> WordExample:
    return WordExample(tuple(words), tags=tuple(f"T{len(w) % 5}" for w in words))


def covered_words(tokenizer: Tokenizer, inputs: list[list[str]]) -> set[tuple[int, int]]:
    """(input, word) of every word that has a token when nothing is cut."""
    whole = tokenizer.encode(inputs, split_into_words=True, max_length=10**6)
    return {(i, w) for i in range(len(inputs)) for w in whole.word_ids(i) if w is not None}


def words_read(features) -> Counter:
    """How many rows read each (input, word)."""
    return Counter((int(features.origin[r]), int(w)) for r, words in enumerate(features.words) for w in words)


# ---------------------------------------------------------------------------------- best_windows


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=3), st.integers(8, 40), st.data())
def test_windows_read_every_word_exactly_once_at_its_first_subword(inputs, max_length, data):
    stride = data.draw(st.integers(0, max_length - 4))
    tok = small_tokenizer()
    encoded = tok.encode(inputs, split_into_words=True, max_length=max_length, overflow="window", stride=stride)
    chosen = best_windows(encoded)
    assert set(chosen) == covered_words(tok, inputs)
    whole = tok.encode(inputs, split_into_words=True, max_length=10**6)
    for (i, w), (row, pos) in chosen.items():
        assert encoded.origin[row] == i and encoded.word_ids(row)[pos] == w
        # The token read is the word's first subword, not a tail left over from a cut window.
        assert encoded.offsets(row)[pos] == whole.offsets(i)[whole.word_ids(i).index(w)]


def test_word_is_read_where_it_has_most_context():
    tok = small_tokenizer()
    words = ["abc"] * 30  # one token each: windows of 8 content tokens, 4 shared
    encoded = tok.encode([words], split_into_words=True, max_length=10, overflow="window", stride=4)
    assert [encoded.word_ids(r)[1:-1] for r in range(2)] == [list(range(8)), list(range(4, 12))]
    chosen = best_windows(encoded)
    # Word 5 has 5 tokens left of it and 2 right in window 0, 1 left and 6 right in window 1.
    assert chosen[(0, 5)] == (0, 6)
    assert chosen[(0, 6)] == (1, 3)  # 6 left / 1 right in window 0, 2 / 5 in window 1
    features = encode_examples([tagged(words)], tok, TaskSpec("tag", TAGS.labels, max_length=10, stride=4))
    assert [ws.tolist() for ws in features.words[:2]] == [list(range(6)), list(range(6, 10))]
    # With 5 tokens shared, word 5 has 2 tokens of context on its near side in both windows: the earlier wins.
    encoded = tok.encode([words], split_into_words=True, max_length=10, overflow="window", stride=5)
    assert encoded.word_ids(1)[1:-1] == list(range(3, 11))
    assert best_windows(encoded)[(0, 5)] == (0, 6)


# ---------------------------------------------------------------------------------- word slots


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=3), st.integers(8, 40), st.sampled_from(["first", "mean", "every"]),
       st.data())
def test_word_features_label_every_word_once_on_its_subwords(inputs, max_length, alignment, data):
    stride = data.draw(st.integers(0, max_length - 4))
    tok = small_tokenizer()
    examples = [tagged(ws) for ws in inputs]
    spec = TaskSpec("tag", TAGS.labels, max_length=max_length, stride=stride, alignment=alignment)
    features = encode_examples(examples, tok, spec)
    read = words_read(features)
    assert set(read) == covered_words(tok, inputs) and set(read.values()) == {1}
    whole = tok.encode(inputs, split_into_words=True, max_length=10**6)
    for row, (slots, words, targets) in enumerate(zip(features.slots, features.words, features.targets)):
        i, word_ids = int(features.origin[row]), features.encoded.word_ids(row)
        assert [TAGS.labels[t] for t in targets] == [examples[i].tags[w] for w in words]
        assert all(s == -1 for s, w in zip(slots, word_ids) if w is None)
        for k, w in enumerate(words):
            tokens = np.flatnonzero(slots == k).tolist()
            first = whole.word_ids(i).index(w)
            assert features.encoded.offsets(row)[tokens[0]] == whole.offsets(i)[first]  # its first subword
            if alignment == "first":
                assert len(tokens) == 1
            else:  # all of its subwords in this row: all of them, unless the window cuts the word
                assert tokens == [p for p, x in enumerate(word_ids) if x == w]
                cut = word_ids[tokens[-1] + 1] is None
                assert len(tokens) == whole.word_ids(i).count(w) or cut


def test_a_word_without_tokens_is_in_no_row_and_is_reported():
    with pytest.warns(UserWarning, match="1 words have no token"):
        features = encode_examples([WordExample(("abc", "\u200b", "abc"), tags=("T1", "T2", "T3"))],
                                   small_tokenizer(), TaskSpec("tag", TAGS.labels, max_length=64, stride=4))
    assert [ws.tolist() for ws in features.words] == [[0, 2]]
    assert features.targets[0].tolist() == [TAGS.index("T1"), TAGS.index("T3")]
    with pytest.warns(UserWarning, match="1 words have no token"):  # first word tokenless: the row is not cut
        features = encode_examples([WordExample(("\u200b", "abc"), tags=("T1", "T2"))], small_tokenizer(),
                                   TaskSpec("tag", TAGS.labels, max_length=64, stride=4))
    assert features.cut_start == [False] and features.cut_end == [False]


# ---------------------------------------------------------------------------------- sequence outputs


def test_windows_pool_to_one_row_per_input():
    origin = np.array([0, 0, 0, 1, 2, 2])
    logits = np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 3.0], [2.0, 2.0], [0.0, 1.0], [0.0, 3.0]])
    assert combine_windows(logits, origin, 3).tolist() == [[3.0, 1.0], [2.0, 2.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match="each of the 4 inputs at least one row"):
        combine_windows(logits, origin, num_inputs=4)


# ---------------------------------------------------------------------------------- real long inputs


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(minilm_dir)


def test_no_word_lost_in_a_long_conll_document(data_dir, minilm_tokenizer):
    sentences = read_conll(data_dir / "conll2003" / "eng.testa")[:60]
    document = WordExample(tuple(w for ex in sentences for w in ex.words),
                           tags=tuple(t for ex in sentences for t in ex.tags))
    tags = LabelSet.from_examples([document])
    features = encode_examples([document], minilm_tokenizer, TaskSpec("tag", tags.labels, max_length=128, stride=32))
    assert len(features) > 5
    assert sorted(w for ws in features.words for w in ws) == list(range(len(document.words)))
    read = [tags.labels[t] for row in features.targets for t in row]
    assert Counter(read) == Counter(document.tags)


def test_no_word_lost_in_a_movie_review(data_dir, minilm_tokenizer):
    reviews = read_jsonl(data_dir / "movie_reviews" / "reviews.jsonl", where={"id": lambda i: "cv000_" in i})
    inputs = [ex.text.split() for ex in reviews]
    features = word_features([WordExample(tuple(ws)) for ws in inputs], minilm_tokenizer, 256, "window", 64, "mean")
    assert len(features) > 2 * len(inputs)
    read = words_read(features)
    assert set(read) == covered_words(minilm_tokenizer, inputs) and set(read.values()) == {1}
