"""Prediction helpers: span metrics with nested entities, BIO repair, input formats."""

import pytest

from bertkit.data.tasks import Span, WordExample
from bertkit.predict import looks_like_columns, repair_bio, span_metrics


def test_span_metrics_score_nested_entities_separately():
    words = ("the", "IL-2", "gene", "promoter", "binds")
    text = " ".join(words)
    outer, inner = Span(4, 22, "DNA"), Span(4, 8, "protein")  # "IL-2 gene promoter" holds "IL-2"
    example = WordExample(words, spans=(outer, inner), text=text)
    only_outer = span_metrics([example], [{"entities": [(1, 4, "DNA")]}])
    assert only_outer["recall"] == 0.5 and only_outer["precision"] == 1.0
    assert only_outer["nested_support"] == 1 and only_outer["nested_recall"] == 0.0
    both = span_metrics([example], [{"entities": [(1, 4, "DNA", 0.9), (1, 2, "protein", 0.8)]}])
    assert both["f1"] == 1.0 and both["nested_recall"] == 1.0


def test_greedy_tags_become_valid_bio():
    assert repair_bio(["I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC", "I-LOC"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-LOC", "I-LOC"]


@pytest.mark.parametrize("content, columns", [("Confidence NN B-NP\nin IN B-PP\n\nThe DT B-NP\n", True),
                                              ("A sentence to tag.\nAnother one here.\n", False),
                                              ("Two words\nper line\n", False),
                                              ("word\nword\n", False)])
def test_column_files_are_recognised(tmp_path, content, columns):
    path = tmp_path / "input.txt"
    path.write_text(content)
    assert looks_like_columns(str(path)) is columns
