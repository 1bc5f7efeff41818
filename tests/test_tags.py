"""BIO tags and spans: IOB1 and greedy repair, entities in order (spans_from_tags against seqeval is
tested with the metrics)."""

from bertkit.tags import entity_spans, iob1_to_bio


def test_iob1_becomes_bio():
    assert iob1_to_bio(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]) == \
        [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC"), (6, 7, "ORG")]


def test_greedy_tags_become_valid_bio():
    assert iob1_to_bio(["I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC", "I-LOC"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-LOC", "I-LOC"]
