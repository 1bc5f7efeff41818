"""Looking inside an encoder: its attention weights, and attention rollout.

Attention weights say where each position read from in one layer; they are not, on their own, an
explanation of a prediction (Jain & Wallace, 2019). Rollout (Abnar & Zuidema, 2020) follows the
weights through the layers, with the residual connection counted as attention to oneself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .model import Encoder


@torch.no_grad()
def attentions(encoder: Encoder, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> list[Tensor]:
    """The attention weights of every layer, each (B, nh, T, T) in fp32 (rows of padding are 0)."""
    return encoder(input_ids, attention_mask, token_type_ids, output_attentions=True).attentions


def attention_rollout(weights: Sequence[Tensor], attention_mask: Tensor | None = None) -> Tensor:
    """Attention rollout: (B, T, T), row i the share of each input token in position i after the last
    layer. Per layer the heads are averaged and the residual connection added as the identity,
    A' = (A + I) / 2 (rows still sum to 1), and the layers multiplied: A'_L ... A'_1.

    Args:
        weights: per layer, (B, nh, T, T) attention weights (`attentions`).
        attention_mask: (B, T), 1 for tokens and 0 for padding; padded positions get rows and
            columns of 0. None when nothing is padded.
    """
    B, _, T, _ = weights[0].shape
    identity = torch.eye(T, device=weights[0].device).expand(B, T, T)
    if attention_mask is not None:
        identity = identity * attention_mask[:, :, None].to(identity.dtype)
    rollout = identity
    for layer in weights:
        rollout = ((layer.mean(1) + identity) / 2) @ rollout
    return rollout
