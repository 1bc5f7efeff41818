"""Permutation language modelling (XLNet; Yang et al., 2019) on the BERT encoder.

Each row gets its targets, 1/K of its tokens (K = 6), in a random factorization order
(`data.masking.permutation_targets`); the other tokens are context, first in every order and seeing
each other, as in XLNet's partial prediction. The tokens stay in place and the order is applied
through attention masks only. Two streams share the encoder's weights (`Encoder.two_stream`): the
content stream sees a token and the tokens before it in the order, the query stream starts from a
learned vector plus the position and sees only the content of the tokens strictly before it, so its
prediction for a token never depends on that token. Predictions go through the MLM head tied to the
embeddings.

What is left out of XLNet: relative positions (bertkit's encoder has absolute ones), the
segment-level recurrence memory (Transformer-XL) and the bidirectional data pipeline. The result
saves as a BERT encoder with its MLM head (`BertForMaskedLM`) and fine-tunes like any other: the
content stream with full attention is the encoder; the learned query vector is not saved with it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..heads import IGNORE_INDEX, add_pretraining_heads, vocabulary_cross_entropy
from ..model import Encoder


class PermutationLM(nn.Module):
    """The encoder (with its MLM head) and the query stream's learned start vector; `forward` gives
    {"plm": the cross-entropy sum over the targets, predicted from the query stream}."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        if encoder.mlm_head is None:
            raise ValueError("the encoder has no MLM head; call heads.add_pretraining_heads first")
        self.encoder = encoder
        self.query_vector = nn.Parameter(torch.empty(encoder.config.embedding_width).normal_(
            0.0, encoder.config.initializer_range))

    objective = "plm"  # the vocabulary loss's name

    def blank(self) -> "PermutationLM":
        """A new PermutationLM of the same shapes (to load a trained state into)."""
        heads = {name: True for name in self.encoder.pretraining_heads()}
        return PermutationLM(add_pretraining_heads(Encoder(self.encoder.config), **heads))

    def saved(self) -> dict[str, Encoder]:
        """{folder in the run's out/: encoder}: the encoder and its MLM head."""
        return {"": self.encoder}

    def scored(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(M, E) the query stream's vectors at the targets, transformed for the tied decoder, and
        their (M,) labels."""
        _, query = self.encoder.two_stream(batch["input_ids"], batch.get("attention_mask"),
                                           batch.get("token_type_ids"), batch["ranks"], self.query_vector)
        labels = batch["labels"]
        chosen = labels != IGNORE_INDEX
        return self.encoder.mlm_head.transform(query[chosen]), labels[chosen]

    def forward(self, batch: dict) -> dict[str, Tensor]:
        scores, labels = self.scored(batch)
        decoder = self.encoder.mlm_head.decoder
        return {"plm": vocabulary_cross_entropy(scores, decoder.weight, decoder.bias, labels)}

    def outputs(self, batch: dict) -> dict[str, Tensor]:
        """"plm" (M, V) logits at the targets and "plm_labels" (M,)."""
        scores, labels = self.scored(batch)
        return {"plm": self.encoder.mlm_head.decoder(scores), "plm_labels": labels}
