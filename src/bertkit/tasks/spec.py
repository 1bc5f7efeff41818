"""What a fine-tuned model does: its task, labels and settings, saved beside its weights as task.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.features import ALIGNMENTS


@dataclass(frozen=True)
class TaskSpec:
    """A fine-tuned model's task and settings. The fields any kind understands are checked here;
    what a task kind refuses (a CRF on spans, say) is checked by `bertkit.tasks.check_spec`."""

    task: str
    labels: tuple[str, ...] = ()  # sorted; empty for regression
    alignment: str = "first"  # word tasks: "first" | "mean" | "every"
    decoder: str = "greedy"  # tag: "greedy" (argmax) | "crf"
    pooling: str = "cls"  # sequence tasks: "cls" | "mean"
    max_span_width: int = 8  # span: longest span in words
    span_summary: str = "mean"  # span: "mean" | "attention"
    threshold: float = 0.5  # multilabel (sigmoid) and span (probability) decisions
    thresholds: tuple[float, ...] = ()  # multilabel: one per label, tuned on dev; empty = `threshold`
    max_length: int = 512
    stride: int = 128
    overflow: str = "window"  # "window" | "truncate" (counted)
    dropout: float = 0.1
    pair: bool = False  # sequence tasks: inputs are text pairs ([CLS] A [SEP] B [SEP])
    entity_mode: str = "strict"  # BIO metrics: seqeval "strict" (IOB2) or "default" (conlleval)
    reader: dict = field(default_factory=dict)  # options of the reader that read the training file

    def __post_init__(self) -> None:
        checks = [("alignment", ALIGNMENTS), ("decoder", ("greedy", "crf")), ("pooling", ("cls", "mean")),
                  ("span_summary", ("mean", "attention")), ("overflow", ("window", "truncate")),
                  ("entity_mode", ("strict", "default"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.thresholds and len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        if self.max_span_width < 1:
            raise ValueError(f"max_span_width must be at least 1 word, got {self.max_span_width}")
