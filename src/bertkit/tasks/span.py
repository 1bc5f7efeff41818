"""Span classification: every span of up to `max_span_width` words is scored over the labels plus
"no entity", independently, so nested and overlapping entities can all be found.

A gold span wider than `max_span_width`, or cut by a window edge, cannot be learned or found:
`finetune` counts both (`report`) instead of dropping them silently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import metrics as M
from ..data.examples import LabelSet, WordExample, word_spans
from ..data.features import Features
from ..heads import SpanClassificationHead, pool_words
from .kind import TaskKind, TaskSpec, cross_entropy, labelled_items, check_labels_and_decoder


def targets(examples: Sequence[WordExample], features: Features, labels: LabelSet | None) -> list:
    """Per row, (S, 3) the gold spans inside it: first slot, last slot, label id + 1."""
    out = []
    for row, words in enumerate(features.words):
        slot_of = {w: k for k, w in enumerate(words)}
        inside = [(slot_of[s], slot_of[e - 1], labels.index(label) + 1)
                  for s, e, label in word_spans(examples[features.origin[row]])
                  if s in slot_of and e - 1 in slot_of and label in labels]  # unseen dev labels are warned about
        out.append(np.array(inside, dtype=np.int64).reshape(-1, 3))
    return out


def enumerate_spans(num_words: Sequence[int], max_width: int, gold: Sequence[np.ndarray] | None) -> dict:
    """Every span of up to `max_width` words in each row: "span_rows", "span_starts", "span_ends"
    (inclusive), and with gold spans "labels" (S,): the gold label id + 1, or 0 = no entity (a gold
    span wider than `max_width` cannot be found: `finetune` reports how many there are)."""
    rows, starts, ends = [], [], []
    for r, n in enumerate(num_words):
        for width in range(min(max_width, n)):
            s = np.arange(n - width)
            rows.append(np.full(len(s), r)), starts.append(s), ends.append(s + width)
    out = {k: torch.from_numpy(np.concatenate(v or [np.zeros(0, np.int64)])).long()
           for k, v in (("span_rows", rows), ("span_starts", starts), ("span_ends", ends))}
    if gold is not None:
        W = max(num_words) + 1
        key = (out["span_rows"] * W + out["span_starts"]) * W + out["span_ends"]
        lookup = {int((r * W + s) * W + e): label for r, g in enumerate(gold) for s, e, label in g}
        out["labels"] = torch.tensor([lookup.get(int(k), 0) for k in key], dtype=torch.long)
    return out


def collate(batch: dict, targets: list | None, features: Features, rows: Sequence[int], spec: TaskSpec) -> None:
    """The candidate spans of each row, and with targets their labels; the loss counts spans."""
    batch.update(enumerate_spans([len(features.words[r]) for r in rows], spec.max_span_width, targets))
    if targets is not None:
        batch["counts"] = {"loss": labelled_items(batch["labels"])}


def scores(model: nn.Module, hidden: Tensor, batch: dict) -> Tensor:
    """(S, L + 1) per candidate span, unit 0 = no entity."""
    words = pool_words(hidden, batch["slots"], batch["word_mask"].shape[1])
    return model.head(words, batch["span_starts"], batch["span_ends"], batch["span_rows"])


def decode(model: nn.Module, scores: Tensor, batch: dict) -> list[tuple]:
    """Per row: its spans' first and last slots and their (S_row, L + 1) probabilities."""
    probs = scores.softmax(-1).cpu()
    rows, starts, ends = (batch[k].cpu() for k in ("span_rows", "span_starts", "span_ends"))
    keep = [rows == i for i in range(batch["word_mask"].shape[0])]
    return [(starts[k].numpy(), ends[k].numpy(), probs[k]) for k in keep]


def assemble(per_row: list, features: Features, examples: Sequence[WordExample], spec: TaskSpec) -> list[dict]:
    """{"entities": [(first word, last word + 1, label, probability), ...]} per sentence: each span's
    best label where its probability reaches the threshold."""
    found: list[list] = [[] for _ in examples]
    for r, (starts, ends, probs) in enumerate(per_row):
        words = features.words[r]
        best_p, best = probs[:, 1:].max(-1)
        for s, e, p, label in zip(starts, ends, best_p.tolist(), best.tolist()):
            if p >= spec.threshold:
                found[features.origin[r]].append((int(words[s]), int(words[e]) + 1, spec.labels[label], p))
    return [{"entities": sorted(spans)} for spans in found]


def span_metrics(examples: Sequence[WordExample], predictions: Sequence[dict]) -> dict:
    """Span precision, recall and F1 against the examples' (possibly nested) spans, and the recall
    on nested entities (`metrics.nested_span_scores`)."""
    gold = [set(word_spans(ex)) for ex in examples]
    pred = [{(s, e, label) for s, e, label, *_ in p["entities"]} for p in predictions]
    return M.nested_span_scores(gold, pred)


def class_ids(features: Features, spec: TaskSpec) -> tuple[np.ndarray, int]:
    """Every candidate span's label id, "no entity" (0) included."""
    ids = [enumerate_spans([len(w)], spec.max_span_width, [t])["labels"].numpy()
           for w, t in zip(features.words, features.targets)]
    return np.concatenate(ids), len(spec.labels) + 1


def spans_across_windows(examples: Sequence[WordExample], features: Features) -> int:
    """Gold spans that start in one window row and end in another: no row can learn or find them."""
    owner = {(int(features.origin[r]), int(w)): r for r, words in enumerate(features.words) for w in words}
    return sum(1 for i, ex in enumerate(examples) for s, e, _ in word_spans(ex)
               if owner.get((i, s)) is not None and owner.get((i, s)) != owner.get((i, e - 1)))


def report(examples: Sequence[WordExample], features: Features, spec: TaskSpec) -> dict:
    """Gold spans no candidate can hold: counted, not dropped silently."""
    wide = sum(1 for ex in examples for s, e, _ in word_spans(ex) if e - s > spec.max_span_width)
    return {"spans_wider_than_max_span_width": wide, "spans_across_windows": spans_across_windows(examples, features)}


SPAN = TaskKind(
    words=True, label_kind="single", main_metric=lambda spec: "f1", targets=targets, collate=collate,
    head=lambda config, spec: SpanClassificationHead(config, len(spec.labels), spec.max_span_width, spec.span_summary,
                                                     dropout=spec.dropout),
    scores=scores, loss=cross_entropy, decode=decode, assemble=assemble, check=check_labels_and_decoder, class_ids=class_ids,
    metrics=lambda spec, examples, predictions, mode: span_metrics(examples, predictions), report=report)
