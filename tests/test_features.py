"""Task examples -> model rows: windows, truncation, length-grouped batches, span enumeration, collation."""

import numpy as np
import pytest
import torch

from bertkit import Tokenizer
from bertkit.data.batches import GroupedBatches, in_length_order
from bertkit.data.examples import LabelSet, Span, TextExample, WordExample
from bertkit.data.features import text_features
from bertkit.data.readers import read_conll, read_table
from bertkit.heads import IGNORE_INDEX
from bertkit.tasks import collate, encode_examples
from bertkit.tasks.span import enumerate_spans
from bertkit.tasks import TaskSpec


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def conll(data_dir):
    return read_conll(data_dir / "conll2003" / "eng.testa")[:40]


@pytest.fixture(scope="module")
def sst2(data_dir):
    return read_table(data_dir / "sst2" / "train.tsv", "sentence", "label")[:300]


def test_long_sentences_become_windows_and_each_word_is_labelled_once(tokenizer, conll):
    labels = LabelSet.from_examples(conll)
    spec = TaskSpec("tag", labels.labels, max_length=12, overflow="window", stride=4)
    features = encode_examples(conll, tokenizer, spec)
    assert len(features) > len(conll)  # several sentences need more than one window
    assert features.lengths.max() <= 12
    labelled = {i: [] for i in range(len(conll))}
    for row, words in enumerate(features.words):
        ex = conll[features.origin[row]]
        labelled[features.origin[row]] += list(words)
        assert [labels[t] for t in features.targets[row]] == [ex.tags[w] for w in words]
        assert sorted(set(features.slots[row][features.slots[row] >= 0])) == list(range(len(words)))
    assert all(sorted(words) == list(range(len(conll[i].words))) for i, words in labelled.items())
    batch = collate(features, range(len(features)), spec, tokenizer.pad_id)  # windows cut their sentences
    origin = list(features.origin)
    first_window = [row == 0 or origin[row] != origin[row - 1] for row in range(len(features))]
    last_window = [row == len(origin) - 1 or origin[row] != origin[row + 1] for row in range(len(features))]
    assert batch["cut_start"].tolist() == [not first for first in first_window]
    assert batch["cut_end"].tolist() == [not last for last in last_window]
    assert any(batch["cut_start"]) and any(batch["cut_end"])


def test_truncation_is_counted(tokenizer, sst2):
    labels = LabelSet.from_examples(sst2)
    full = tokenizer.encode([ex.text for ex in sst2], max_length=512).lengths
    with pytest.warns(UserWarning, match="truncated"):
        features = encode_examples(sst2, tokenizer, TaskSpec("classify", labels.labels, max_length=16,
                                                             overflow="truncate", stride=0))
    assert len(features) == len(sst2) and features.lengths.max() == 16
    assert features.encoded.num_truncated == int((full > 16).sum()) > 0


def test_overflow_error_names_the_input(tokenizer):
    examples = [TextExample("short", label="a"), TextExample("a much longer text than the window " * 4, label="a")]
    with pytest.raises(ValueError, match="input 1 has"):
        text_features(examples, tokenizer, max_length=16, overflow="error", stride=0)


def test_grouped_batches_cover_every_row_once_per_epoch(sst2, tokenizer):
    lengths = tokenizer.encode([ex.text for ex in sst2], max_length=512).lengths
    grouped = GroupedBatches(lengths, batch_size=8, seed=3)
    for epoch in range(3):
        rows = np.concatenate(grouped.epoch(epoch))
        assert sorted(rows) == list(range(len(sst2)))
        assert len(grouped.epoch(epoch)) == grouped.steps_per_epoch == 38
    same = [b.tolist() for b in GroupedBatches(lengths, batch_size=8, seed=3).epoch(1)]
    assert same == [b.tolist() for b in grouped.epoch(1)]
    assert same != [b.tolist() for b in grouped.epoch(2)]
    assert same != [b.tolist() for b in GroupedBatches(lengths, batch_size=8, seed=4).epoch(1)]


def test_token_balanced_batches_hold_similar_tokens_in_as_many_steps(sst2, tokenizer):
    lengths = tokenizer.encode([ex.text for ex in sst2], max_length=512).lengths
    by_rows = GroupedBatches(lengths, batch_size=8, seed=3, pool=100)
    by_tokens = GroupedBatches(lengths, batch_size=8, seed=3, pool=100, equal_tokens=True)
    rows = np.concatenate(by_tokens.epoch(0))
    assert sorted(rows) == list(range(len(sst2)))
    # the smallest budget that gives no more batches than rows would; one budget step can skip a count
    assert by_rows.steps_per_epoch - 1 <= by_tokens.steps_per_epoch <= by_rows.steps_per_epoch

    def padded(batches):  # the tokens each batch computes, padding included
        return np.array([len(b) * lengths[b].max() for b in batches])
    assert {len(b) for b in by_tokens.epoch(0)} != {8}  # short rows come more to a batch
    assert padded(by_tokens.epoch(0)).std() < padded(by_rows.epoch(0)).std() / 2


def test_grouped_batches_hold_similar_lengths(sst2, tokenizer):
    lengths = tokenizer.encode([ex.text for ex in sst2], max_length=512).lengths
    batches = GroupedBatches(lengths, batch_size=8).epoch(0)  # 38 batches: one pool, sorted as a whole
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))

    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    shuffled = np.random.default_rng(0).permutation(len(lengths))
    assert padding(batches) * 5 < padding([shuffled[i:i + 8] for i in range(0, len(lengths), 8)])


def test_enumerate_spans_counts_and_gold_labels():
    gold = [np.array([[0, 1, 2]]), np.zeros((0, 3), np.int64), np.array([[1, 1, 1], [0, 4, 3]])]
    out = enumerate_spans([3, 1, 5], max_width=2, gold=gold)
    expected = sum(n - w + 1 for n in (3, 1, 5) for w in range(1, min(2, n) + 1))  # 5 + 1 + 9
    assert len(out["span_rows"]) == len(out["labels"]) == expected == 15
    spans = list(zip(*(out[k].tolist() for k in ("span_rows", "span_starts", "span_ends"))))
    assert len(set(spans)) == 15 and all(0 <= e - s < 2 for _, s, e in spans)
    found = {span: label for span, label in zip(spans, out["labels"].tolist()) if label}
    assert found == {(0, 0, 1): 2, (2, 1, 1): 1}
    assert (2, 0, 4) not in found  # the 5-word span is wider than 2: no candidate holds it


def test_span_rows_label_gold_spans_in_the_right_place(tokenizer):
    text = "Interleukin 2 receptor alpha chain binds to T cells"
    ex = WordExample(tuple(text.split()), spans=(Span(0, 22, "protein"), Span(0, 13, "protein"), Span(44, 51, "cell")))
    labels = LabelSet(("cell", "protein"))
    spec = TaskSpec("span", labels.labels, max_length=64, overflow="window", stride=8, max_span_width=4)
    batch = collate(encode_examples([ex], tokenizer, spec), [0], spec, tokenizer.pad_id)
    spans = zip(batch["span_starts"].tolist(), batch["span_ends"].tolist(), batch["labels"].tolist())
    assert {(s, e): labels[y - 1] for s, e, y in spans if y} == {(0, 2): "protein", (0, 1): "protein",
                                                              (7, 8): "cell"}
    assert batch["counts"] == {"loss": len(batch["span_rows"])} == {"loss": sum(9 - w for w in range(4))}


def test_collate_counts_labelled_items(tokenizer):
    labels = LabelSet(("neg", "pos"))
    texts = [TextExample("good", label="pos"), TextExample("bad", label="neg"), TextExample("meh", label="neutral")]
    spec = TaskSpec("classify", labels.labels, max_length=32, stride=8)
    batch = collate(encode_examples(texts, tokenizer, spec), [0, 1, 2], spec, tokenizer.pad_id)
    assert batch["labels"].tolist() == [1, 0, IGNORE_INDEX] and batch["counts"] == {"loss": 2}
    scores = [TextExample("good", label=4.5), TextExample("bad", label=0.5)]
    spec = TaskSpec("regress", max_length=32, stride=8)
    batch = collate(encode_examples(scores, tokenizer, spec), [0, 1], spec, 0)
    assert batch["labels"].dtype == torch.float32 and batch["counts"] == {"loss": 2}

    tags = LabelSet(("B-PER", "I-PER", "O"))
    words = [WordExample(("Peter", "Blackburn", "spoke"), ("B-PER", "I-PER", "O")),
             WordExample(("in", "Brussels"), ("O", "B-LOC"))]  # B-LOC is unknown: not counted
    spec = TaskSpec("tag", tags.labels, max_length=32, stride=8)
    batch = collate(encode_examples(words, tokenizer, spec), [0, 1], spec, tokenizer.pad_id)
    assert batch["labels"].tolist() == [[0, 1, 2], [2, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["word_mask"].tolist() == [[True] * 3, [True, True, False]] and batch["counts"] == {"loss": 4}

    split = [WordExample(("Peter", "Vanderkerckhovenberg", "spoke"), ("B-PER", "I-PER", "O"))]
    spec = TaskSpec("tag", tags.labels, max_length=32, stride=8, alignment="every")
    every = encode_examples(split, tokenizer, spec)
    tokens = len(tokenizer.tokens("Peter Vanderkerckhovenberg spoke")) - 2  # every subword of a labelled word
    assert tokens > 3 and collate(every, [0], spec, tokenizer.pad_id)["counts"] == {"loss": tokens}


def test_unlabelled_rows_have_no_targets(tokenizer):
    spec = TaskSpec("classify", ("a",), max_length=32, stride=8)
    batch = collate(encode_examples([TextExample("no label here")], tokenizer, spec), [0], spec, tokenizer.pad_id)
    assert "labels" not in batch and "counts" not in batch


def test_prediction_batches_longest_first_within_a_token_budget():
    lengths = np.array([5, 30, 10, 30, 2, 8])
    assert [b.tolist() for b in in_length_order(lengths, 2)] == [[1, 3], [2, 5], [0, 4]]
    batches = in_length_order(lengths, batch_size=10, max_tokens=60)
    assert [b.tolist() for b in batches] == [[1, 3], [2, 5, 0, 4]]  # 2 x 30 tokens, then 4 x 10
    assert all(len(b) * lengths[b].max() <= 60 for b in batches)
    assert [b.tolist() for b in in_length_order(lengths, 10, max_tokens=20)][0] == [1]  # one row even when over
