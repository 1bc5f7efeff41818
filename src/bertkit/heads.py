"""Heads that sit on the encoder's hidden states.

The MLM head projects onto the vocabulary through the input embedding matrix (weight tying, as in
BERT). It takes whatever rows it is given: pretraining passes only the masked positions, so the
(H x V) projection, the largest matrix product of a small BERT, runs on 15% of the tokens.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import EncoderConfig
from .model import Encoder, activation


class MLMHead(nn.Module):
    """dense -> activation -> layer norm -> tied decoder + bias."""

    def __init__(self, config: EncoderConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.act = config.hidden_act
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        nn.init.normal_(self.dense.weight, std=config.initializer_range)
        nn.init.zeros_(self.dense.bias)
        nn.init.zeros_(self.decoder.bias)
        self.decoder.weight = word_embeddings.weight

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
