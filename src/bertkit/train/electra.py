"""ELECTRA (Clark et al., 2020): replaced-token detection, on the same loop and data as MLM.

A small generator (an MLM whose hidden size is a fraction of the discriminator's, 1/4 by default)
predicts the masked tokens; its predictions are *sampled* (no gradient flows through the sample)
into the masked positions, and the discriminator, the encoder that is kept, classifies every
real token as original or replaced. Both train together on

    loss = MLM(generator) + rtd_weight x RTD(discriminator)    (rtd_weight 50, the paper's lambda)

each a mean over its items (masked tokens; real tokens). As the reference implementation does:

- the generator's input masks 85% of the chosen tokens and keeps 15% (no random tokens:
  `masking.ELECTRA_SPLIT`); sampling fills every chosen position;
- a sampled token equal to the original counts as original;
- the two share their embeddings (token, position and segment, and their layer norm); the
  generator projects them down to its width and decodes through them (`EncoderConfig.embedding_size`).

Reproductions found that a generator that becomes too good too fast starves the discriminator
(the replaced tokens become indistinguishable); the paper's 1/4 to 1/2 widths are meant to avoid it.
Here, for bert-mini in 20 CPU minutes, they did not (nor did 1/8 or 1/16): the README has the figures.

The discriminator saves as Hugging Face's `ElectraForPreTraining`, the generator as
`ElectraForMaskedLM` (in the run folder's `generator/`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EncoderConfig
from ..heads import IGNORE_INDEX, add_pretraining_heads, sampled_vocabulary_cross_entropy
from ..model import Encoder


def generator_config(discriminator: EncoderConfig, size: float) -> EncoderConfig:
    """The generator of a discriminator: hidden size `size` x the discriminator's, one head per 64
    dimensions (at least one), a feed-forward 4 x wide, the discriminator's embedding width."""
    hidden = max(1, round(discriminator.hidden_size * size))
    heads = max(1, hidden // 64)
    while hidden % heads:
        heads -= 1
    return discriminator.replace(hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden,
                                 embedding_size=discriminator.embedding_width)


def generator_lr_scale(scale: float) -> Callable[[str], float]:
    """`fit`'s `lr_scale` for an `Electra`: `scale` for the generator's own parameters; the embeddings
    it shares with the discriminator are the discriminator's (named there first) and keep the full rate."""
    return lambda name: scale if name.startswith("generator.") else 1.0


class Electra(nn.Module):
    """The generator and the discriminator, with shared embeddings; `forward` gives the loss sums
    {"mlm": generator's cross-entropy over the chosen tokens, "rtd": rtd_weight x the
    discriminator's binary cross-entropy over the real tokens}."""

    def __init__(self, discriminator: Encoder, generator: Encoder, rtd_weight: float = 50.0,
                 temperature: float = 1.0):
        super().__init__()
        if discriminator.rtd_head is None:
            raise ValueError("the discriminator has no RTD head; call heads.add_pretraining_heads(rtd=True)")
        if generator.config.embedding_width != discriminator.config.embedding_width:
            raise ValueError(f"the generator's embeddings are {generator.config.embedding_width} wide, the "
                             f"discriminator's {discriminator.config.embedding_width}: they must be shared")
        generator.embeddings = discriminator.embeddings
        add_pretraining_heads(generator, mlm=generator.mlm_head is None)
        generator.mlm_head.decoder.weight = discriminator.embeddings.word.weight
        self.discriminator, self.generator, self.rtd_weight = discriminator, generator, rtd_weight
        self.temperature = temperature  # the generator's samples come from softmax(logits / temperature)

    objective = "mlm"  # the vocabulary loss: the generator's

    def blank(self) -> "Electra":
        """A new Electra of the same shapes (to load a trained state into)."""
        discriminator = add_pretraining_heads(Encoder(self.discriminator.config), mlm=False, rtd=True)
        return Electra(discriminator, Encoder(self.generator.config), self.rtd_weight, self.temperature)

    def saved(self) -> dict[str, Encoder]:
        """{folder in the run's out/: encoder}: the discriminator in out/, the generator in out/generator."""
        return {"": self.discriminator, "generator": self.generator}

    def corrupted(self, batch: dict) -> dict[str, Tensor]:
        """The generator's pass: "mlm" its cross-entropy sum over the chosen tokens, "mlm_scores" (M, E)
        the vectors its decoder projects there, "mlm_labels" (M,), and "input_ids" (B, T), the original
        text with the chosen positions filled by samples from the generator (taken at the batch's
        "sample_uniforms", drawn with its masks; without them, from torch's global generator), and
        "replaced" (B, T) bool, True where a sample differs from the original."""
        ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
        chosen = labels != IGNORE_INDEX
        hidden = self.generator(ids, mask, batch.get("token_type_ids")).last_hidden_state
        scores = self.generator.mlm_head.transform(hidden[chosen])  # (M, E)
        uniforms = batch["sample_uniforms"][chosen] if "sample_uniforms" in batch else torch.rand(len(scores))
        decoder = self.generator.mlm_head.decoder
        mlm, sampled = sampled_vocabulary_cross_entropy(scores, decoder.weight, decoder.bias, labels[chosen],
                                                        uniforms.to(scores.device), self.temperature)
        original = torch.where(chosen, labels, ids)
        filled = original.masked_scatter(chosen, sampled)
        return {"mlm": mlm, "mlm_scores": scores, "mlm_labels": labels[chosen], "input_ids": filled,
                "replaced": filled != original}

    def discriminate(self, batch: dict, corrupted: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The discriminator's (N,) logits over the N real tokens of the corrupted text, and its (N,)
        targets (1.0 = replaced)."""
        mask = batch.get("attention_mask")
        real = torch.ones_like(corrupted["replaced"]) if mask is None else mask.bool()
        hidden = self.discriminator(corrupted["input_ids"], mask, batch.get("token_type_ids")).last_hidden_state
        return self.discriminator.rtd_head(hidden[real]), corrupted["replaced"][real].float()

    def forward(self, batch: dict) -> dict[str, Tensor]:
        corrupted = self.corrupted(batch)
        logits, targets = self.discriminate(batch, corrupted)
        rtd = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
        return {"mlm": corrupted["mlm"], "rtd": self.rtd_weight * rtd}

    def outputs(self, batch: dict) -> dict[str, Tensor]:
        """"mlm" (M, V) generator logits at the chosen positions, "rtd" (N,) discriminator logits over the
        real tokens, each with its "_labels"."""
        corrupted = self.corrupted(batch)
        logits, targets = self.discriminate(batch, corrupted)
        return {"mlm": self.generator.mlm_head.decoder(corrupted["mlm_scores"]), "mlm_labels": corrupted["mlm_labels"],
                "rtd": logits, "rtd_labels": targets}


def rtd_counts(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """What a batch's replaced-token detection adds up to: loss sum, correct, tokens, original tokens,
    replaced tokens found, replaced tokens; `rtd_metrics` turns the sums over batches into figures."""
    predicted = logits > 0
    replaced = targets.bool()
    return {"rtd_loss": float(F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")),
            "rtd_correct": int((predicted == replaced).sum()), "rtd_tokens": len(targets),
            "rtd_original": int((~replaced).sum()), "rtd_found": int((predicted & replaced).sum()),
            "rtd_replaced": int(replaced.sum())}


def rtd_metrics(counts: dict[str, float]) -> dict[str, float]:
    """Loss and accuracy per token, the accuracy of calling every token original (the baseline to
    beat) and the share of replaced tokens found."""
    tokens = counts["rtd_tokens"]
    return {"rtd_loss": counts["rtd_loss"] / tokens, "rtd_accuracy": counts["rtd_correct"] / tokens,
            "rtd_baseline": counts["rtd_original"] / tokens,
            "rtd_recall": counts["rtd_found"] / max(1, counts["rtd_replaced"])}
