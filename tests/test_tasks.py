"""The task kinds: span metrics with nested entities."""

from bertkit.data.examples import Span, WordExample
from bertkit.tasks.span import span_metrics


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
