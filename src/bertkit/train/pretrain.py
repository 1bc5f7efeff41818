"""Pretraining objectives -> loss sums for the loop: MLM, + NSP (BERT), + SBO (SpanBERT).

`Pretrainer` holds the encoder (with its MLM and NSP heads) and the span boundary head, and turns a
masked batch into loss sums. Only the chosen positions reach the vocabulary projection.

`PackedBlocks` serves RoBERTa-style FULL-SENTENCES blocks (every row full, no padding) as the data
of each step, masking them afresh at every step with a generator seeded by (seed, step, rank,
micro-batch), which is what makes resumption exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.masking import IGNORE_INDEX, Masked, mask_spans, mask_tokens, mask_whole_words
from ..heads import SpanBoundaryHead
from ..model import Encoder

MaskingKind = Literal["token", "whole_word", "span"]


class Pretrainer(nn.Module):
    def __init__(self, encoder: Encoder, sbo: bool = False):
        super().__init__()
        if encoder.mlm_head is None:
            raise ValueError("the encoder has no MLM head; call heads.add_pretraining_heads first")
        self.encoder = encoder
        self.sbo = SpanBoundaryHead(encoder.config) if sbo else None

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Loss sums: "mlm" over chosen tokens, "nsp" over pairs, "sbo" over span tokens."""
        hidden = self.encoder(batch["input_ids"], batch.get("attention_mask"),
                              batch.get("token_type_ids")).last_hidden_state  # (B, T, H)
        labels = batch["labels"]
        chosen = labels != IGNORE_INDEX
        logits = self.encoder.mlm_head(hidden[chosen])  # (M, V): chosen positions only
        parts = {"mlm": F.cross_entropy(logits.float(), labels[chosen], reduction="sum")}
        if "next_sentence_label" in batch:
            nsp = self.encoder.nsp_head(self.encoder.pooler(hidden))
            parts["nsp"] = F.cross_entropy(nsp.float(), batch["next_sentence_label"], reduction="sum")
        if self.sbo is not None:
            parts["sbo"] = span_boundary_loss(self, hidden, labels, batch["span_starts"], batch["span_ends"])
        return parts


def span_boundary_loss(pretrainer: Pretrainer, hidden: Tensor, labels: Tensor, starts: Tensor,
                       ends: Tensor) -> Tensor:
    """Sum of cross-entropies of span tokens predicted from their span's outside boundaries."""
    rows, cols = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
    s, e = starts[rows, cols], ends[rows, cols]
    T = hidden.shape[1]
    left = hidden[rows, (s - 1).clamp(min=0)]
    right = hidden[rows, (e + 1).clamp(max=T - 1)]
    vectors = pretrainer.sbo(left, right, cols - s)
    logits = pretrainer.encoder.mlm_head.decoder(vectors)  # the shared output embedding
    return F.cross_entropy(logits.float(), labels[rows, cols], reduction="sum")


@dataclass
class MaskingSpec:
    kind: MaskingKind = "token"
    rate: float = 0.15
    mask_id: int = 4
    random_ids: Tensor | None = None  # ids a random replacement is drawn from
    special_ids: Tensor | None = None  # never masked
    continuation: Tensor | None = None  # (V,) bool, True for '##' tokens (word and span masking)

    def apply(self, input_ids: Tensor, generator: torch.Generator) -> Masked:
        maskable = ~torch.isin(input_ids, self.special_ids)
        common = dict(mask_id=self.mask_id, random_ids=self.random_ids, rate=self.rate)
        if self.kind == "token":
            return mask_tokens(input_ids, maskable, generator, **common)
        word_start = ~self.continuation[input_ids]
        if self.kind == "whole_word":
            return mask_whole_words(input_ids, maskable, word_start, generator, **common)
        return mask_spans(input_ids, maskable, word_start, generator, **common)


class PackedBlocks:
    """Full blocks of token ids (N, T), shuffled per epoch, masked afresh at every step."""

    def __init__(self, blocks: np.ndarray, masking: MaskingSpec, batch_size: int, micro_batches: int = 1,
                 seed: int = 0):
        if batch_size % micro_batches:
            raise ValueError(f"batch_size {batch_size} is not divisible by micro_batches {micro_batches}")
        if len(blocks) < batch_size:
            raise ValueError(f"{len(blocks)} blocks are fewer than one batch of {batch_size}")
        self.blocks, self.masking = blocks, masking
        self.batch_size, self.micro_batches, self.seed = batch_size, micro_batches, seed

    def indices(self, step: int) -> np.ndarray:
        """The block indices of step `step`'s global batch: consecutive slices of per-epoch shuffles."""
        per_epoch = len(self.blocks) // self.batch_size
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))
        return order[position * self.batch_size:(position + 1) * self.batch_size]

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        """This rank's micro-batches of step `step`. The whole global batch is masked with one
        generator seeded by (seed, step), so the masks do not depend on the number of processes."""
        if self.batch_size % (world * self.micro_batches):
            raise ValueError(f"batch_size {self.batch_size} is not divisible by {world} processes x "
                             f"{self.micro_batches} micro-batches")
        ids = torch.from_numpy(np.asarray(self.blocks[np.sort(self.indices(step))], dtype=np.int64))
        seed = int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0])
        masked = self.masking.apply(ids, torch.Generator().manual_seed(seed))
        fields = {"input_ids": masked.input_ids, "labels": masked.labels, "attention_mask": torch.ones_like(ids)}
        if masked.span_starts is not None:
            fields.update(span_starts=masked.span_starts, span_ends=masked.span_ends)
        mine = np.array_split(np.arange(len(ids)), world)[rank]
        out = []
        for rows in np.array_split(mine, self.micro_batches):
            batch = {k: v[rows] for k, v in fields.items()}
            chosen = int((batch["labels"] != IGNORE_INDEX).sum())
            batch["counts"] = {"mlm": chosen, **({"sbo": chosen} if "span_starts" in batch else {})}
            out.append(batch)
        return out
