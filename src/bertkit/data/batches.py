"""Batches: which rows each step takes, how they become tensors, how they are masked.

Fine-tuning draws `GroupedBatches` (shuffled batches of similar lengths) and predicts in
`in_length_order`.

For pretraining, `MaskedSteps` is the training loop's StepData: the rows of a step's global batch come from a
sampler (`EpochSampler`: a fresh permutation per epoch; `LanguageSampler`: language i with
probability q_i), become tensors through a source (`BlockRows`: packed blocks; `PairRows`: BERT
sentence pairs), and are masked afresh at every step with a generator seeded by (seed, step), which
is what makes resumption exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..heads import IGNORE_INDEX
from ..padding import right_pad
from .instances import SentencePairs
from .masking import (BERT_SPLIT, Masked, mask_spans, mask_tokens, mask_whole_words, next_token_labels,
                      permutation_targets)

MaskingKind = Literal["token", "whole_word", "span", "causal", "permutation"]


@dataclass
class MaskingSpec:
    kind: MaskingKind = "token"
    rate: float = 0.15
    mask_id: int = 4
    random_ids: Tensor | None = None  # ids a random replacement is drawn from
    special_ids: Tensor | None = None  # never masked
    continuation: Tensor | None = None  # (V,) bool, True for '##' tokens (word and span masking)
    pad_id: int = 0
    sep_id: int | None = None  # causal: a row's closing [SEP] (packing's block end) is not a target
    split: tuple[float, float] = BERT_SPLIT  # shares of the chosen tokens replaced by [MASK] and by random tokens
    rtd: bool = False  # ELECTRA: every real token is judged original or replaced (a loss part "rtd")
    partial: int = 6  # permutation: 1/partial of the tokens are the targets (XLNet's K)

    @property
    def objective(self) -> str:
        """The name of the loss this masking trains: "lm" (next token), "plm" (permutation) or "mlm"."""
        return {"causal": "lm", "permutation": "plm"}.get(self.kind, "mlm")

    def apply(self, input_ids: Tensor, generator: torch.Generator) -> Masked:
        if self.kind == "causal":
            return next_token_labels(input_ids, input_ids != self.pad_id, self.sep_id)
        maskable = ~torch.isin(input_ids, self.special_ids)  # special_ids include [PAD]
        if self.kind == "permutation":
            return permutation_targets(input_ids, input_ids != self.pad_id, maskable, generator, self.partial)
        common = dict(mask_id=self.mask_id, random_ids=self.random_ids, rate=self.rate, split=self.split)
        if self.kind == "token":
            return mask_tokens(input_ids, maskable, generator, **common)
        word_start = ~self.continuation[input_ids]
        if self.kind == "whole_word":
            return mask_whole_words(input_ids, maskable, word_start, generator, **common)
        return mask_spans(input_ids, maskable, word_start, generator, **common)


class EpochSampler:
    """Global batches as consecutive slices of a fresh permutation per epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ValueError(f"{n} training instances are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.n // self.batch_size)
        if getattr(self, "_epoch", None) != epoch:  # one permutation per epoch, not per step
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]


class LanguageSampler:
    """Each row of a batch picks a language with probability q_i, then a random block of it."""

    def __init__(self, offsets: np.ndarray, probabilities: np.ndarray, batch_size: int, seed: int):
        self.offsets, self.probabilities = offsets, probabilities  # offsets: (L + 1,) block ranges
        self.batch_size, self.seed = batch_size, seed

    def indices(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step, 1])
        language = rng.choice(len(self.probabilities), size=self.batch_size, p=self.probabilities)
        low, high = self.offsets[language], self.offsets[language + 1]
        return low + (rng.random(self.batch_size) * (high - low)).astype(np.int64)


class BlockRows:
    """Rows of full blocks (N, T): no padding, one segment."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def rows(self, indices: np.ndarray) -> dict[str, Tensor]:
        ids = torch.from_numpy(np.asarray(self.blocks[indices], dtype=np.int64))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class PairRows:
    """Rows of BERT sentence pairs, right-padded, with segment ids (and NSP labels if `nsp`)."""

    def __init__(self, pairs: SentencePairs, pad_id: int, nsp: bool = True):
        self.pairs, self.pad_id, self.nsp = pairs, pad_id, nsp

    def rows(self, indices: np.ndarray) -> dict[str, Tensor]:
        p = self.pairs
        lengths = p.starts[indices + 1] - p.starts[indices]
        ids = right_pad([p.ids[p.starts[i]:p.starts[i + 1]] for i in indices], self.pad_id)
        positions = np.arange(ids.shape[1])[None, :]
        mask = positions < lengths[:, None]
        types = (positions >= p.a_lengths[indices][:, None]) & mask
        rows = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype(np.int64)),
                "token_type_ids": torch.from_numpy(types.astype(np.int64))}
        if self.nsp:
            rows["next_sentence_label"] = torch.from_numpy(p.is_random_next[indices].astype(np.int64))
        return rows


class MaskedSteps:
    """The loop's StepData: each step's global batch, masked afresh at every step.

    The whole global batch is masked with one generator seeded by (seed, step), then split by rank
    and into micro-batches, so neither the number of processes nor accumulation changes a mask (nor,
    for ELECTRA, the uniform draws its generator's samples are taken at)."""

    def __init__(self, source, sampler, masking: MaskingSpec, micro_batches: int = 1, seed: int = 0):
        self.source, self.sampler, self.masking = source, sampler, masking
        self.micro_batches, self.seed = micro_batches, seed

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        batch_size = self.sampler.batch_size
        if batch_size % (world * self.micro_batches):
            raise ValueError(f"batch_size {batch_size} is not divisible by {world} processes x "
                             f"{self.micro_batches} micro-batches")
        fields = self.source.rows(np.sort(self.sampler.indices(step)))
        seed = int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        masked = self.masking.apply(fields["input_ids"], generator)
        fields.update(input_ids=masked.input_ids, labels=masked.labels)
        if self.masking.rtd:  # ELECTRA's generator samples each chosen token by inverting its CDF at this draw
            fields["sample_uniforms"] = torch.rand(masked.input_ids.shape, generator=generator)
        fields.update({name: getattr(masked, name) for name in ("span_starts", "span_ends", "ranks")
                       if getattr(masked, name) is not None})  # span masking's bounds, permutation LM's ranks
        mine = np.array_split(np.arange(batch_size), world)[rank]
        return [_with_counts({k: v[rows] for k, v in fields.items()}, self.masking)
                for rows in np.array_split(mine, self.micro_batches)]


def _with_counts(batch: dict, masking: MaskingSpec) -> dict:
    chosen = int((batch["labels"] != IGNORE_INDEX).sum())
    batch["counts"] = {masking.objective: chosen}
    if masking.rtd:
        batch["counts"]["rtd"] = int(batch["attention_mask"].sum())
    if "span_starts" in batch:
        batch["counts"]["sbo"] = chosen
    if "next_sentence_label" in batch:
        batch["counts"]["nsp"] = len(batch["labels"])
    return batch


# ------------------------------------------------------------------------------ fine-tuning batches


@dataclass
class GroupedBatches:
    """Shuffled batches of similar lengths, one epoch after another.

    Each epoch draws a permutation (seeded by seed and epoch), cuts it into pools of 50 batches,
    sorts each pool by length and cuts it into batches, and shuffles the batches: padding stays
    small while the order stays random. A pool of one batch draws random batches.
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
            cuts = (self._token_cuts(self.lengths[chunk]) if self.equal_tokens
                    else list(range(0, len(chunk), self.batch_size)))
            if len(cuts) > 1 and len(chunk) - cuts[-1] < self.min_batch:
                cuts.pop()
            batches += [chunk[a:b] for a, b in zip(cuts, cuts[1:] + [len(chunk)])]
        if len(batches) > 1 and len(batches[-1]) < self.min_batch:  # pools of one batch: the last is the rest
            batches[-2:] = [np.concatenate(batches[-2:])]
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


def in_length_order(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Batches for prediction: longest first, so padding is minimal and memory peaks early; at most
    `batch_size` rows each, and with `max_tokens` at most that many padded tokens (rows x longest),
    so that many short rows share a batch while long ones do not exhaust memory."""
    order = np.argsort(-lengths, kind="stable")
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        rows = max(1, min(batch_size, max_tokens // int(lengths[order[start]])))
        batches.append(order[start:start + rows])
        start += rows
    return batches
