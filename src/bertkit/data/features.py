"""Task examples -> model rows: windows, word slots, padded input batches.

Every example is encoded once. An input longer than the window becomes several overlapping window
rows (`overflow="window"`), or is cut and counted when truncation is asked for; it is never cut
silently. A sequence-level label goes with every window of its input (the windows' logits are
averaged at prediction); a word is labelled and predicted in exactly one window, the one where it
has the most context (`alignment.best_windows`).

Word-level rows carry `slots`: for each token, the index of the word it belongs to among the words
this row is responsible for (-1 elsewhere). "first" maps only a word's first subword, "mean" and
"every" all of them; the model turns tokens into word vectors by averaging over a slot, so a word
is its first subword's vector, or the mean of its subwords.

What a row is trained on (its target) is the task kind's business (`bertkit.tasks`); this module
only lays out the rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..config import TASK_CHOICES
from ..padding import right_pad
from ..tokenizer import Encoded, Overflow, Tokenizer
from .alignment import best_windows
from .examples import TextExample, WordExample

ALIGNMENTS = TASK_CHOICES["alignment"]


@dataclass
class Features:
    """Encoded rows of a list of examples and what each row is trained on."""

    encoded: Encoded
    targets: list = field(default_factory=list)  # per row: the task kind's target, None if unlabelled
    slots: list[np.ndarray] = field(default_factory=list)  # word rows: (T,) slot per token, -1 = none
    words: list[np.ndarray] = field(default_factory=list)  # word rows: (W_row,) word index of each slot
    # word rows: the row's first (last) word is not the first (last) word any row of its example owns
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


def text_features(examples: Sequence[TextExample], tokenizer: Tokenizer, max_length: int, overflow: Overflow,
                  stride: int, require_pair: bool = False) -> Features:
    """Encode texts, or text pairs when the examples have second texts (a pair classifier, a
    regression on sentence pairs such as STS-B); every example must then have one."""
    with_pair = [ex.pair is not None for ex in examples]
    if (any(with_pair) or require_pair) and not all(with_pair):
        bad = examples[with_pair.index(False)]
        needs = "the pair task needs one on every line" if require_pair else "other examples have one"
        raise ValueError(f"{bad.source}: no second text here, but {needs}")
    pairs = [ex.pair for ex in examples] if examples and all(with_pair) else None
    return Features(tokenizer.encode([ex.text for ex in examples], pairs, max_length=max_length, overflow=overflow,
                                     stride=stride))


def word_features(examples: Sequence[WordExample], tokenizer: Tokenizer, max_length: int, overflow: Overflow,
                  stride: int, alignment: str = "first") -> Features:
    """Encode pre-split words; each row gets its slots and the words it is responsible for."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, not {alignment!r}")
    encoded = tokenizer.encode([list(ex.words) for ex in examples], split_into_words=True,
                               max_length=max_length, overflow=overflow, stride=stride)
    owner = best_windows(encoded)
    tokenless = sum(len(ex.words) for ex in examples) - len(owner)
    if tokenless:  # e.g. a lone zero-width character: no row can label or read it; predicted O
        warnings.warn(f"{tokenless} words have no token (they normalise to nothing) and carry no label", stacklevel=2)
    responsible: list[list[int]] = [[] for _ in range(len(encoded))]
    owned: dict[int, tuple[int, int]] = {}  # example -> (its first word that a row owns, its last)
    for (origin, w), (row, _) in sorted(owner.items()):
        responsible[row].append(w)
        owned[origin] = (owned.get(origin, (w, w))[0], w)
    features = Features(encoded)
    for row, words in enumerate(responsible):
        origin = encoded.origin[row]
        features.slots.append(_token_slots(encoded.word_ids(row), {w: k for k, w in enumerate(words)}, alignment))
        features.words.append(np.array(words, dtype=np.int64))
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


def collate_inputs(features: Features, rows: Sequence[int], pad_id: int, words: bool) -> dict:
    """A right-padded batch of rows' inputs; word rows add "slots", "word_mask", "cut_start" and
    "cut_end" (the row starts or ends inside its example)."""
    batch = features.encoded.tensors(rows, pad_id=pad_id)
    if not words:
        return batch
    batch["slots"] = torch.from_numpy(right_pad([features.slots[r] for r in rows], -1, batch["input_ids"].shape[1]))
    num_words = [len(features.words[r]) for r in rows]
    batch["word_mask"] = torch.arange(max(1, max(num_words)))[None, :] < torch.tensor(num_words)[:, None]
    batch["cut_start"] = torch.tensor([features.cut_start[r] for r in rows], dtype=torch.bool)
    batch["cut_end"] = torch.tensor([features.cut_end[r] for r in rows], dtype=torch.bool)
    return batch
