"""Task examples -> model rows with targets, and the length-grouped batches that train on them.

Every example is encoded once. An input longer than the window becomes several overlapping window
rows (`overflow="window"`, the default), or is cut and counted when truncation is asked for; it is
never cut silently. A sequence-level label goes with every window of its input (the windows' logits
are averaged at prediction); a word is labelled and predicted in exactly one window, the one where
it has the most context (`alignment.best_windows`).

Word-level rows carry `slots`: for each token, the index of the word it belongs to among the words
this row is responsible for (-1 elsewhere). "first" maps only a word's first subword, "mean" and
"every" all of them; the model turns tokens into word vectors by averaging over a slot, so a word
is its first subword's vector, or the mean of its subwords.

Batches are a pure function of (seed, epoch, step): a resumed run sees the same batches.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..tokenizer import Encoded, Tokenizer
from .alignment import best_windows
from ..heads import IGNORE_INDEX
from .tasks import LabelSet, TextExample, WordExample, word_spans

SEQUENCE_TASKS = ("classify", "multilabel", "pair", "regress")
WORD_TASKS = ("tag", "span")
ALIGNMENTS = ("first", "mean", "every")


@dataclass
class Features:
    """Encoded rows of a list of examples and what each row is trained on."""

    encoded: Encoded
    targets: list = field(default_factory=list)  # per row: label id, label ids, score, or word targets
    slots: list[np.ndarray] = field(default_factory=list)  # word tasks: (T,) slot per token, -1 = none
    words: list[np.ndarray] = field(default_factory=list)  # word tasks: (W_row,) word index of each slot
    # word tasks: the row's first (last) word is not the first (last) word any row of its example owns
    cut_start: list[bool] = field(default_factory=list)
    cut_end: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def origin(self) -> np.ndarray:
        return self.encoded.origin

    @property
    def lengths(self) -> np.ndarray:
        return self.encoded.lengths


def sequence_features(examples: Sequence[TextExample], tokenizer: Tokenizer, task: str, labels: LabelSet | None,
                      max_length: int, overflow: str, stride: int) -> Features:
    """Encode texts, or text pairs when the examples have second texts (any sequence task: a pair
    classifier, a regression on sentence pairs such as STS-B), and give every window row its
    input's target."""
    with_pair = [ex.pair is not None for ex in examples]
    if (any(with_pair) or task == "pair") and not all(with_pair):
        bad = examples[with_pair.index(False)]
        raise ValueError(f"{bad.source}: no second text here, but {'the pair task needs one on every line' if task == 'pair' else 'other examples have one'}")
    pairs = [ex.pair for ex in examples] if examples and all(with_pair) else None
    encoded = tokenizer.encode([ex.text for ex in examples], pairs, max_length=max_length, overflow=overflow,
                               stride=stride)
    targets = [_sequence_target(examples[i], task, labels) for i in encoded.origin]
    return Features(encoded, targets)


def _sequence_target(example: TextExample, task: str, labels: LabelSet | None):
    if example.label is None:
        return None
    if task == "regress":
        return float(example.label)
    if task == "multilabel":
        target = np.zeros(len(labels), dtype=np.float32)
        target[[labels.index(x) for x in example.label if x in labels]] = 1.0
        return target
    return labels.index(example.label) if example.label in labels else IGNORE_INDEX


def word_features(examples: Sequence[WordExample], tokenizer: Tokenizer, task: str, labels: LabelSet | None,
                  max_length: int, overflow: str, stride: int, alignment: str = "first") -> Features:
    """Encode pre-split words; each row gets its slots, and targets: per slot a tag id ("tag"), or
    the gold spans (first slot, last slot, label id) that lie inside the row ("span")."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, not {alignment!r}")
    encoded = tokenizer.encode([list(ex.words) for ex in examples], split_into_words=True,
                               max_length=max_length, overflow=overflow, stride=stride)
    owner = best_windows(encoded)
    tokenless = sum(len(ex.words) for ex in examples) - len(owner)
    if tokenless:  # e.g. a lone zero-width character: no row can label or read it; predicted O
        warnings.warn(f"{tokenless} words have no token (they normalise to nothing) and carry no label",
                      stacklevel=2)
    responsible: list[list[int]] = [[] for _ in range(len(encoded))]
    owned: dict[int, tuple[int, int]] = {}  # example -> (its first word that a row owns, its last)
    for (origin, w), (row, _) in sorted(owner.items()):
        responsible[row].append(w)
        owned[origin] = (owned.get(origin, (w, w))[0], w)
    features = Features(encoded)
    for row, words in enumerate(responsible):
        origin = encoded.origin[row]
        slot_of = {w: k for k, w in enumerate(words)}
        features.slots.append(_token_slots(encoded.word_ids(row), slot_of, alignment))
        features.words.append(np.array(words, dtype=np.int64))
        features.targets.append(_word_targets(examples[origin], words, task, labels))
        features.cut_start.append(bool(words) and words[0] != owned[origin][0])
        features.cut_end.append(bool(words) and words[-1] != owned[origin][1])
    return features


def _token_slots(word_ids: list[int | None], slot_of: dict[int, int], alignment: str) -> np.ndarray:
    slots, previous = np.full(len(word_ids), -1, dtype=np.int64), None
    for t, w in enumerate(word_ids):
        if w is not None and w in slot_of and (alignment != "first" or w != previous):
            slots[t] = slot_of[w]
        previous = w
    return slots


def _word_targets(example: WordExample, words: list[int], task: str, labels: LabelSet | None):
    if task == "tag":
        if example.tags is None:
            return None
        return np.array([labels.index(example.tags[w]) if example.tags[w] in labels else IGNORE_INDEX
                         for w in words], dtype=np.int64)
    slot_of = {w: k for k, w in enumerate(words)}
    inside = [(slot_of[s], slot_of[e - 1], labels.index(label) + 1) for s, e, label in word_spans(example)
              if s in slot_of and e - 1 in slot_of and label in labels]  # unseen dev labels are warned about
    return np.array(inside, dtype=np.int64).reshape(-1, 3)


def spans_across_windows(examples: Sequence[WordExample], features: Features) -> int:
    """Gold spans that start in one window row and end in another: no row can learn or find them."""
    owner = {(int(features.origin[r]), int(w)): r for r, words in enumerate(features.words) for w in words}
    return sum(1 for i, ex in enumerate(examples) for s, e, _ in word_spans(ex)
               if owner.get((i, s)) is not None and owner.get((i, s)) != owner.get((i, e - 1)))


# ------------------------------------------------------------------------------------- batches


@dataclass
class GroupedBatches:
    """Shuffled batches of similar lengths, one epoch after another.

    Each epoch draws a permutation (seeded by seed and epoch), cuts it into pools of 50 batches,
    sorts each pool by length and cuts it into batches, and shuffles the batches: padding stays
    small while the order stays random.
    """

    lengths: np.ndarray
    batch_size: int
    seed: int = 0
    pool: int = 50
    min_batch: int = 1  # a smaller last batch of a pool joins the batch before it (e.g. one row per rank)
    equal_tokens: bool = False  # cut batches by padded tokens (one budget per pool), not by batch_size rows

    def __post_init__(self) -> None:
        self._drawn: dict[int, list[np.ndarray]] = {}  # the current epoch's batches: every step reads them

    @functools.cached_property
    def steps_per_epoch(self) -> int:
        return len(self.epoch(0))

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The batches (row indices) of `epoch`, drawn once and kept while steps read it."""
        if epoch not in self._drawn:
            self._drawn = {epoch: self._draw(epoch)}
        return self._drawn[epoch]

    def _draw(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            if self.equal_tokens:
                cuts = self._token_cuts(self.lengths[chunk])
            else:
                cuts = list(range(0, len(chunk), self.batch_size))
            if len(cuts) > 1 and len(chunk) - cuts[-1] < self.min_batch:
                cuts.pop()
            batches += [chunk[a:b] for a, b in zip(cuts, cuts[1:] + [len(chunk)])]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _token_cuts(self, lengths: np.ndarray) -> list[int]:
        """Where batches start in rows sorted longest first: each batch holds at most the same
        number of padded tokens, the smallest budget that makes no more batches than batch_size
        rows each would."""
        def cuts(budget: float) -> list[int]:
            starts, a = [], 0
            while a < len(lengths):
                starts.append(a)
                a += max(1, int(budget // lengths[a]))
            return starts

        target = -(-len(lengths) // self.batch_size)
        low, high = float(lengths[0]), float(lengths.sum())  # too small a budget; surely enough
        while high - low > 1:
            middle = (low + high) / 2
            low, high = (middle, high) if len(cuts(middle)) > target else (low, middle)
        return cuts(high)


def in_length_order(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches for prediction: longest first, so padding is minimal and memory peaks early."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(features: Features, rows: Sequence[int], task: str, pad_id: int, max_span_width: int = 0,
            token_level: bool = False) -> dict:
    """A right-padded batch of rows with their targets and "counts" (items each loss sums over:
    rows, words, spans, or with `token_level` the subword tokens of labelled words). Word tasks
    add "slots", "word_mask", "cut_start" and "cut_end" (the row starts or ends inside its example)."""
    batch = features.encoded.tensors(rows, pad_id=pad_id)
    targets = [features.targets[r] for r in rows]
    labelled = all(t is not None for t in targets)
    if task in SEQUENCE_TASKS:
        if labelled:
            dtype = torch.float32 if task in ("regress", "multilabel") else torch.long
            batch["labels"] = torch.tensor(np.array(targets), dtype=dtype)
            batch["counts"] = {"loss": int((batch["labels"] != IGNORE_INDEX).sum()) if dtype == torch.long
                               else len(rows)}
        return batch
    width = batch["input_ids"].shape[1]
    slots = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        slots[i, :len(features.slots[r])] = features.slots[r]
    batch["slots"] = torch.from_numpy(slots)
    num_words = [len(features.words[r]) for r in rows]
    batch["word_mask"] = torch.arange(max(1, max(num_words)))[None, :] < torch.tensor(num_words)[:, None]
    batch["cut_start"] = torch.tensor([features.cut_start[r] for r in rows], dtype=torch.bool)
    batch["cut_end"] = torch.tensor([features.cut_end[r] for r in rows], dtype=torch.bool)
    if task == "span":
        batch.update(enumerate_spans(num_words, max_span_width, targets if labelled else None))
    elif labelled:
        tags = np.full(batch["word_mask"].shape, IGNORE_INDEX, dtype=np.int64)
        for i, t in enumerate(targets):
            tags[i, :len(t)] = t
        batch["labels"] = torch.from_numpy(tags)
    if labelled and token_level:
        batch["counts"] = {"loss": sum(int(((features.slots[r] >= 0) & (t[features.slots[r].clip(0)] != IGNORE_INDEX)).sum())
                                       for r, t in zip(rows, targets) if len(t))}
    elif labelled:
        batch["counts"] = {"loss": int((batch["labels"] != IGNORE_INDEX).sum())}
    return batch


def enumerate_spans(num_words: Sequence[int], max_width: int, gold: Sequence[np.ndarray] | None) -> dict:
    """Every span of up to `max_width` words in each row: "span_rows", "span_starts", "span_ends"
    (inclusive), and with gold spans "labels" (S,): the gold label id + 1, or 0 = no entity (a gold
    span wider than `max_width` cannot be found: `finetune` reports how many there are)."""
    rows, starts, ends = [], [], []
    for r, n in enumerate(num_words):
        for width in range(min(max_width, n)):
            s = np.arange(n - width)
            rows.append(np.full(len(s), r)), starts.append(s), ends.append(s + width)
    out = {"span_rows": torch.from_numpy(np.concatenate(rows or [np.zeros(0, np.int64)])).long(),
           "span_starts": torch.from_numpy(np.concatenate(starts or [np.zeros(0, np.int64)])).long(),
           "span_ends": torch.from_numpy(np.concatenate(ends or [np.zeros(0, np.int64)])).long()}
    if gold is not None:
        W = max(num_words) + 1
        key = (out["span_rows"] * W + out["span_starts"]) * W + out["span_ends"]
        lookup = {int((r * W + s) * W + e): label for r, g in enumerate(gold) for s, e, label in g}
        out["labels"] = torch.tensor([lookup.get(int(k), 0) for k in key], dtype=torch.long)
    return out
