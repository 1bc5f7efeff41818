"""Remove padding once at the encoder's entry and restore it once at its exit.

A batch of variable-length texts is a right-padded (B, T) tensor. Everything in the encoder
except attention works token by token (embeddings, projections, feed-forward, layer norms), so it
runs on the N real tokens of the batch, flattened to (N, H). Attention needs the (B, T) layout back;
it scatters its projections into a padded buffer and gathers the result, as Mosaic BERT's
`bert_padding.py` does for its non-flash path.

`TokenLayout` records where the real tokens sit. With `unpad=False` it keeps every position
(N = B * T): the plain padded path, the same code on more rows, which a test holds equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenLayout:
    batch: int
    seqlen: int
    indices: Tensor | None  # (N,) flat positions of the kept tokens in B * T; None keeps all
    key_mask: Tensor | None  # (B, 1, 1, T) True where attention may look; None: no padding

    @property
    def num_tokens(self) -> int:
        return self.batch * self.seqlen if self.indices is None else self.indices.numel()


def make_layout(attention_mask: Tensor | None, batch: int, seqlen: int, unpad: bool = True) -> TokenLayout:
    """Build the layout of a right-padded batch.

    Args:
        attention_mask: (B, T), 1 for real tokens and 0 for padding, or None for no padding.
        unpad: drop the padded positions (the fast path) or keep them (the plain path).
    """
    if attention_mask is None:
        return TokenLayout(batch, seqlen, None, None)
    mask = attention_mask.bool()
    if mask.shape != (batch, seqlen):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, expected {(batch, seqlen)}")
    if not mask[:, 0].all():
        empty = torch.nonzero(~mask[:, 0]).flatten().tolist()
        raise ValueError(f"rows {empty[:10]} of the batch start with padding: every row needs at "
                         "least one token and padding on the right only")
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("attention_mask has a real token after padding; bertkit expects right "
                         "padding (pad at the end of each row)")
    if mask.all():
        return TokenLayout(batch, seqlen, None, None)
    indices = torch.nonzero(mask.flatten()).flatten() if unpad else None
    return TokenLayout(batch, seqlen, indices, mask[:, None, None, :])


def unpad(x: Tensor, layout: TokenLayout) -> Tensor:
    """(B, T, ...) -> (N, ...) with the layout's kept tokens."""
    flat = x.reshape(layout.batch * layout.seqlen, *x.shape[2:])
    return flat if layout.indices is None else flat.index_select(0, layout.indices)


def repad(x: Tensor, layout: TokenLayout) -> Tensor:
    """(N, ...) -> (B, T, ...), zeros where padding was removed."""
    if layout.indices is None:
        return x.reshape(layout.batch, layout.seqlen, *x.shape[1:])
    out = x.new_zeros(layout.batch * layout.seqlen, *x.shape[1:])
    out.index_copy_(0, layout.indices, x)
    return out.reshape(layout.batch, layout.seqlen, *x.shape[1:])
