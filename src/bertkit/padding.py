"""Remove padding once at the encoder's entry and restore it once at its exit.

A batch of variable-length texts is a right-padded (B, T) tensor. Everything in the encoder
except attention works token by token (embeddings, projections, feed-forward, layer norms), so it
runs on the N real tokens of the batch, flattened to (N, H). Attention needs the (B, T) layout back;
it gathers its projections into a padded layout (`attention_rows`: padded positions hold copies of a
real token, which attention masks) and gathers the real tokens of the result, as Mosaic BERT's
`bert_padding.py` does for its non-flash path (which pads with zeros).

`TokenLayout` records where the real tokens sit. With `unpad=False` it keeps every position
(N = B * T): the plain padded path, the same code on more rows, which a test holds equal.

Attention in groups: in a batch of texts of mixed lengths (randomly drawn training batches), padding
every row to the longest made attention, its softmax and dropout over (B, nh, T, T), the larger
part of a step (random CoNLL-2003 batches trained at 0.74x the speed of length-grouped ones). With
`group=True` the rows are ordered longest first on entry, their tokens follow that order, and
attention runs on groups of consecutive rows, each padded to its own longest row only; the exit
restores the given row order. The result is the same function (a test holds it equal).

Spare rows: in bf16 (and in int8 on AMX), matrix products run on oneDNN kernels compiled for each shape and kept in a
cache of 1,024, and with padding removed the token count N, hence the shape, differs almost every
batch: each new one paid the compilation, and random training batches cycled through more shapes
than the cache holds. With `spare_rows=True` the flat tensor carries spare rows (zeros on entry)
after the N real tokens, up to the next of a few sizes (`rows_for`: at most 1/16 more rows), so
that the shapes repeat. Attention and the exit ignore them, dropout draws no random numbers for
them (model.dropout), and nothing that reaches an output depends on them: their gradients are zero.

`right_pad` builds such a (B, T) batch from rows of different lengths.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenLayout:
    batch: int
    seqlen: int
    indices: Tensor | None  # (N,) flat positions of the kept tokens in B * T; None keeps all
    key_mask: Tensor | None  # (B, 1, 1, T) True where attention may look; None: no padding
    order: Tensor | None = None  # (B,) the rows in the order their tokens follow; None: as given
    groups: tuple[AttentionGroup, ...] = ()  # attention by groups of rows; () attends the batch at once
    spare: int = 0  # rows after the kept tokens in the flat (N + spare, ...) tensor, zeros on entry
    gather: Tensor | None = None  # (B * T,) per position a kept token of its row, for `attention_rows`

    @property
    def num_tokens(self) -> int:
        """N, the kept tokens (spare rows not counted)."""
        return self.batch * self.seqlen if self.indices is None else self.indices.numel()


@dataclass(frozen=True)
class AttentionGroup:
    start: int  # the group's tokens are rows start:end of the (N, ...) tokens
    end: int
    layout: TokenLayout  # of the group's rows, padded to the group's longest


# A row joins the current group while its length is at least this share of the group's longest:
# attention over a group costs about rows * longest^2, and each group adds a fixed cost per layer.
GROUP_MIN_SHARE = 0.6


def make_layout(attention_mask: Tensor | None, batch: int, seqlen: int, unpad: bool = True,
                group: bool = False, spare_rows: bool = False) -> TokenLayout:
    """Build the layout of a right-padded batch.

    Args:
        attention_mask: (B, T), 1 for real tokens and 0 for padding, or None for no padding.
        unpad: drop the padded positions (the fast path) or keep them (the plain path).
        group: with `unpad`, attend by groups of rows of similar length (see the module docstring)
            where that saves attention work; the layout's `order` and `groups` then say how.
        spare_rows: with `unpad`, round the flat row count up with zero rows (`rows_for`).
    """
    if attention_mask is None:
        return TokenLayout(batch, seqlen, None, None)
    mask = attention_mask.bool()
    if mask.shape != (batch, seqlen):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, expected {(batch, seqlen)}")
    check_right_padded(mask, "attention_mask")
    layout = None
    if unpad and group:
        row_lengths = mask.sum(1)
        order = row_lengths.argsort(descending=True, stable=True)
        lengths = row_lengths[order].tolist()  # longest first
        bounds = group_bounds(lengths)
        if len(bounds) > 1:
            layout = grouped_layout(mask[order], order, lengths, bounds)
    layout = layout or checked_layout(mask, unpad)
    if unpad and spare_rows:
        return dataclasses.replace(layout, spare=rows_for(layout.num_tokens) - layout.num_tokens)
    return layout


def rows_for(n: int) -> int:
    """n rounded up to a multiple of the power of two that is 1/16 to 1/32 of it (n < 32: n itself):
    16 sizes between each power of two and the next, at most 1/16 more rows than tokens."""
    step = 1 << max(0, n.bit_length() - 5)
    return -(-n // step) * step


def check_right_padded(mask: Tensor, name: str) -> None:
    """Refuse a (B, T) bool mask with a row that starts with padding, or with a real position after
    padding: every row holds at least one real position, and padding only at its end."""
    if not mask[:, 0].all():
        empty = torch.nonzero(~mask[:, 0]).flatten().tolist()
        raise ValueError(f"rows {empty[:10]} of the batch start with padding: every row needs at least one real "
                         "position, at its start (right padding: masks are left-aligned)")
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError(f"{name} has a real position after padding; bertkit expects right padding (pad at the "
                         "end of each row: masks are left-aligned)")


def checked_layout(mask: Tensor, unpad: bool = True) -> TokenLayout:
    """The layout of a (B, T) boolean mask already known to be right-padded with no empty row."""
    B, T = mask.shape
    if mask.all():
        return TokenLayout(B, T, None, None)
    if not unpad:
        return TokenLayout(B, T, None, mask[:, None, None, :])
    flat = mask.flatten()
    # at a real position its own token, at padding the row's last real one (rows start with a real token)
    gather = flat.cumsum(0) - 1
    return TokenLayout(B, T, torch.nonzero(flat).flatten(), mask[:, None, None, :], gather=gather)


def group_bounds(lengths: list[int]) -> list[tuple[int, int]]:
    """Consecutive groups (first row, end row) of lengths sorted longest first."""
    bounds, first = [], 0
    for row, n in enumerate(lengths):
        if n < GROUP_MIN_SHARE * lengths[first]:
            bounds.append((first, row))
            first = row
    return bounds + [(first, len(lengths))]


def grouped_layout(mask: Tensor, order: Tensor, lengths: list[int], bounds: list[tuple[int, int]]) -> TokenLayout:
    """The layout of `mask`'s rows in `order` (longest first; `mask` and `lengths` already in it),
    with one attention group per bound, each padded to its first row's length."""
    starts = [0] + list(itertools.accumulate(lengths))
    groups = tuple(AttentionGroup(starts[a], starts[b], checked_layout(mask[a:b, :lengths[a]])) for a, b in bounds)
    B, T = mask.shape
    return TokenLayout(B, T, torch.nonzero(mask.flatten()).flatten(), mask[:, None, None, :], order, groups)


def right_pad(rows: Sequence[Sequence[int]], fill: int, width: int | None = None) -> np.ndarray:
    """(len(rows), width) int64: each row from the left, `fill` after it; `width` defaults to the longest row."""
    out = np.full((len(rows), max(map(len, rows), default=0) if width is None else width), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def unpad(x: Tensor, layout: TokenLayout) -> Tensor:
    """(B, T, ...) -> (N + spare, ...): the layout's kept tokens, then its spare rows (zeros)."""
    x = x if layout.order is None else x.index_select(0, layout.order)
    flat = x.reshape(layout.batch * layout.seqlen, *x.shape[2:])
    flat = flat if layout.indices is None else flat.index_select(0, layout.indices)
    return with_spare_rows([flat], layout)


def with_spare_rows(parts: Sequence[Tensor], layout: TokenLayout) -> Tensor:
    """The layout's N rows, given in `parts` (each (rows, ...)), then its spare rows (zeros): (N + spare,
    ...), in one concatenation."""
    if layout.spare:
        parts = [*parts, parts[0].new_zeros(layout.spare, *parts[0].shape[1:])]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def attention_rows(x: Tensor, layout: TokenLayout) -> Tensor:
    """(N + spare, ...) -> (B, T, ...) for attention: `repad`'s rows, except that each padded position holds
    a copy of its row's last real token instead of zeros, gathered in one step (no zero-filled buffer to
    copy into). Attention masks those keys and the padded queries' outputs are dropped on exit, so the
    copies change no result (tests hold the encoder's outputs and gradients equal to its padded path's).
    all-MiniLM-L6-v2 bf16 on the AMX Xeon, best of 3, two alternating runs: offline batches of 32 on two
    threads 1,827 and 1,714 sentences/s against 1,771 and 1,629; calls of 18 random STS-B sentences on one
    thread 869 and 839 against 838 and 821; fp32 level (734 and 695 against 737 and 719)."""
    if layout.gather is None:  # nothing padded, or the plain path: repad's reshape
        return repad(x, layout)
    return x.index_select(0, layout.gather).view(layout.batch, layout.seqlen, *x.shape[1:])


def repad(x: Tensor, layout: TokenLayout) -> Tensor:
    """(N + spare, ...) -> (B, T, ...), zeros where padding was removed; spare rows dropped."""
    x = x[:layout.num_tokens] if layout.spare else x
    if layout.indices is None:
        return x.reshape(layout.batch, layout.seqlen, *x.shape[1:])
    out = x.new_zeros(layout.batch * layout.seqlen, *x.shape[1:])
    out.index_copy_(0, layout.indices, x)
    out = out.reshape(layout.batch, layout.seqlen, *x.shape[1:])
    return out if layout.order is None else out.index_select(0, layout.order.argsort())
