"""Token tagging: one label per word (BIO entity or chunk tags, or plain tags such as POS).

Words are scored, not tokens: a word's vector is its first subword's ("first") or the mean of its
subwords ("mean"); "every" trains on every subword (a B-X word's later subwords learn I-X) and
reads the word's label at its first subword. Greedy decoding takes each word's best label and
repairs the sequence to valid BIO; the CRF decodes the best valid sequence over a sentence's words.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import metrics as M
from ..config import EncoderConfig
from ..crf import CRF
from ..data.examples import LabelSet, WordExample, word_spans
from ..data.features import Features
from ..heads import IGNORE_INDEX, LinearHead, first_subwords, pool_words
from ..padding import right_pad
from ..tags import continuation_ids, entity_spans, iob1_to_bio, is_bio_label_set, spans_to_bio
from .kind import TaskKind, TaskSpec, cross_entropy, label_id, labelled_items, check_labels_and_decoder


def check(spec: TaskSpec) -> None:
    check_labels_and_decoder(spec, crf=True)
    if spec.decoder == "crf" and spec.alignment == "every":
        raise ValueError("the CRF runs over words: use alignment 'first' or 'mean' with it")


class TagHead(LinearHead):
    """Label scores of each word (or token); with the CRF decoder, the CRF that reads them as well."""

    def __init__(self, config: EncoderConfig, spec: TaskSpec):
        super().__init__(config, len(spec.labels), spec.dropout)
        self.crf = CRF.for_labels(list(spec.labels)) if spec.decoder == "crf" else None


def bio_tags_from_spans(examples: list[WordExample], path: str) -> list[WordExample]:
    """Examples read from a span file as BIO tags of their outermost spans; BIO cannot hold nesting,
    so the nested spans dropped are reported."""
    if not examples or examples[0].tags is not None:
        return examples
    tagged, dropped = [], 0
    for ex in examples:
        tags, n = spans_to_bio(ex.words, word_spans(ex))
        tagged.append(replace(ex, tags=tuple(tags)))
        dropped += n
    print(f"note: {path}: BIO tags keep {sum(len(ex.spans) for ex in examples) - dropped} spans; "
          f"{dropped} nested spans cannot be represented", file=sys.stderr)
    return tagged


def targets(examples: Sequence[WordExample], features: Features, labels: LabelSet | None) -> list:
    """Per row, (W_row,) the label id of each word it is responsible for."""
    tags = [examples[i].tags for i in features.origin]
    return [None if t is None else np.array([label_id(t[w], labels) for w in words], dtype=np.int64)
            for t, words in zip(tags, features.words)]


def collate(batch: dict, targets: list | None, features: Features, rows: Sequence[int], spec: TaskSpec) -> None:
    """(B, W) word labels; the loss counts labelled words, or with alignment "every" the subword
    tokens of labelled words."""
    if targets is None:
        return
    batch["labels"] = torch.from_numpy(right_pad(targets, IGNORE_INDEX, batch["word_mask"].shape[1]))
    count = labelled_items(batch["labels"])
    if spec.alignment == "every":
        slots = [features.slots[r] for r in rows]
        count = sum(int(((s >= 0) & (t[s.clip(0)] != IGNORE_INDEX)).sum()) for s, t in zip(slots, targets) if len(t))
    batch["counts"] = {"loss": count}


def scores(model: nn.Module, hidden: Tensor, batch: dict) -> Tensor:
    """(B, W, L) per word, or (B, T, L) per token with alignment "every"."""
    if model.spec.alignment == "every":
        return model.head(hidden)
    return model.head(pool_words(hidden, batch["slots"], batch["word_mask"].shape[1]))


def loss(model: nn.Module, scores: Tensor, batch: dict) -> Tensor:
    labels, crf = batch["labels"], model.head.crf
    if crf is not None:
        rows = batch["word_mask"].any(1)  # a window may own no word
        return -crf.log_likelihood(scores[rows], labels.clamp(min=0)[rows], batch["word_mask"][rows],
                                         batch["cut_start"][rows], batch["cut_end"][rows]).sum()
    if model.spec.alignment == "every":
        continuation = _continuation(model.spec.labels).to(labels.device)
        batch = {**batch, "labels": token_labels(labels, batch["slots"], continuation)}
    return cross_entropy(model, scores, batch)


@functools.cache
def _continuation(labels: tuple[str, ...]) -> Tensor:
    return torch.tensor(continuation_ids(labels))


def token_labels(word_labels: Tensor, slots: Tensor, continuation: Tensor) -> Tensor:
    """Every subword's label from its word's: (B, W), (B, T) -> (B, T); a B-X word's later
    subwords get I-X (`continuation` maps each label id to the id its continuation takes)."""
    labels = word_labels.gather(1, slots.clamp(min=0))
    later = (slots >= 0) & (first_subwords(slots) < 0) & (labels >= 0)
    labels = torch.where(later, continuation[labels.clamp(min=0)], labels)
    return labels.masked_fill(slots < 0, IGNORE_INDEX)


def decode(model: nn.Module, scores: Tensor, batch: dict) -> list[np.ndarray]:
    """Per row, the label id of each of its words: the best per word, or the CRF's best path."""
    if model.spec.alignment == "every":
        scores = pool_words(scores, first_subwords(batch["slots"]), batch["word_mask"].shape[1])
    lengths, crf = batch["word_mask"].sum(1).tolist(), model.head.crf
    if crf is None:
        best = scores.argmax(-1).cpu().numpy()
        return [best[i, :n] for i, n in enumerate(lengths)]
    rows = [i for i, n in enumerate(lengths) if n]
    paths = (iter(crf.decode(scores[rows], batch["word_mask"][rows], batch["cut_start"][rows],
                                   batch["cut_end"][rows])) if rows else iter(()))
    return [np.array(next(paths), dtype=np.int64) if n else np.zeros(0, np.int64) for n in lengths]


def assemble(per_row: list, features: Features, examples: Sequence[WordExample], spec: TaskSpec) -> list[dict]:
    """{"tags", "entities"} per sentence; greedy tags are repaired to valid BIO, so entities written
    by `predict` and entities scored by the metrics are read from the same tags."""
    tags = [["O"] * len(ex.words) for ex in examples]  # a word without tokens stays O
    for r, ids in enumerate(per_row):
        for k, w in enumerate(features.words[r]):
            tags[features.origin[r]][w] = spec.labels[ids[k]]
    if not is_bio_label_set(spec.labels):
        return [{"tags": t, "entities": []} for t in tags]
    return [{"tags": t, "entities": entity_spans(t)} for t in map(iob1_to_bio, tags)]


def metrics(spec: TaskSpec, examples: Sequence[WordExample], predictions: Sequence[dict], mode: str) -> dict:
    """Tag accuracy, or entity precision, recall and F1 (seqeval's `mode`); when the gold spans nest
    (a span file read as BIO tags), scored against all of them, with the BIO F1 beside."""
    if not is_bio_label_set(spec.labels):
        gold = [t for ex in examples for t in ex.tags]
        return {"accuracy": M.accuracy(gold, [t for p in predictions for t in p["tags"]])}
    scores = M.entity_scores([list(ex.tags) for ex in examples], [p["tags"] for p in predictions], mode=mode)
    if any(set(word_spans(ex)) != set(entity_spans(ex.tags)) for ex in examples):
        gold = [set(word_spans(ex)) for ex in examples]
        return M.nested_span_scores(gold, [set(p["entities"]) for p in predictions]) | {"bio_f1": scores["f1"]}
    return {k: scores[k] for k in ("precision", "recall", "f1", "per_type")}


TAG = TaskKind(
    words=True, label_kind="single", main_metric=lambda spec: "f1" if is_bio_label_set(spec.labels) else "accuracy",
    head=TagHead, targets=targets, collate=collate, scores=scores, loss=loss, decode=decode, assemble=assemble,
    metrics=metrics, check=check, prepare=bio_tags_from_spans,
    class_ids=lambda features, spec: (np.concatenate(features.targets), len(spec.labels)))
