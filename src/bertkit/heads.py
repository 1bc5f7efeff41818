"""Heads that sit on the encoder's hidden states.

The MLM head projects onto the vocabulary through the input embedding matrix (weight tying, as in
BERT). It takes whatever rows it is given: pretraining passes only the masked positions, so the
(H x V) projection, the largest matrix product of a small BERT, runs on 15% of the tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import EncoderConfig
from .model import Encoder, activation


class MLMHead(nn.Module):
    """dense -> activation -> layer norm -> tied decoder + bias.

    RoBERTa's head uses exact GELU whatever the encoder's activation, as its reference code does.
    """

    def __init__(self, config: EncoderConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.act = "gelu" if config.family == "roberta" else config.hidden_act
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, device="meta")  # no V x H allocation
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = nn.Parameter(torch.zeros(config.vocab_size))
        nn.init.normal_(self.dense.weight, std=config.initializer_range)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., H) -> (..., V) logits."""
        return self.decoder(self.norm(activation(self.act, self.dense(hidden))))


class NSPHead(nn.Module):
    """Next-sentence prediction from the pooled [CLS] vector: 0 = B follows A, 1 = B is random."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, H) -> (B, 2) logits."""
        return self.classifier(pooled)


class SpanBoundaryHead(nn.Module):
    """SpanBERT's span boundary objective: predict each token of a masked span from the encodings
    of the two tokens just outside the span and the token's position inside it.

    y_i = LN(GELU(W2 LN(GELU(W1 [x_{s-1}; x_{e+1}; p_{i-s}])))), projected onto the vocabulary
    through the MLM head's decoder (the shared output embedding).
    """

    def __init__(self, config: EncoderConfig, max_span_tokens: int = 128):
        super().__init__()
        H = config.hidden_size
        self.max_span_tokens = max_span_tokens
        self.position = nn.Embedding(max_span_tokens, H)
        self.mlp = nn.Sequential(nn.Linear(3 * H, H), nn.GELU(), nn.LayerNorm(H, eps=config.layer_norm_eps),
                                 nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H, eps=config.layer_norm_eps))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.initializer_range)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, left: Tensor, right: Tensor, offset: Tensor) -> Tensor:
        """(M, H) left boundary, (M, H) right boundary, (M,) offset in span -> (M, H) vectors."""
        if offset.numel() and int(offset.max()) >= self.max_span_tokens:
            raise ValueError(f"a masked span is {int(offset.max()) + 1} tokens long, more than the span "
                             f"boundary head's {self.max_span_tokens} positions")
        position = self.position(offset)
        return self.mlp(torch.cat([left, right, position], dim=-1))


def add_pretraining_heads(encoder: Encoder, mlm: bool = True, nsp: bool = False) -> Encoder:
    """Attach freshly initialised MLM and/or NSP heads to `encoder` (in place) and return it."""
    config = encoder.config
    if mlm:
        encoder.mlm_head = MLMHead(config, encoder.embeddings.word)
    if nsp:
        if encoder.pooler is None:
            raise ValueError("next-sentence prediction needs the pooler; this config has pooler=False")
        encoder.nsp_head = NSPHead(config)
        encoder.nsp_head.apply(encoder._init_weights)
    return encoder
