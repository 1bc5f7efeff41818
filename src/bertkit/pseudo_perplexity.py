"""Pseudo-log-likelihood and pseudo-perplexity of a masked LM (Salazar et al., 2020).

PLL(W) = sum_t log P(w_t | W with w_t masked): each token of a sentence is masked in turn and
scored by the MLM head; pseudo-perplexity = exp(-sum of PLLs / number of scored tokens) over a
corpus. It is not a perplexity: a masked LM conditions on both sides of the token and its scores do
not form a distribution over sentences, so the two are never compared, and the outputs name which
one they are. [CLS] and [SEP] are never scored.

`variant="word-l2r"` (Kauf & Ivanova, 2023) masks, with each token, the tokens to its right in the
same word (the tokenizer's words), so the later pieces of a multi-token word no longer give the
earlier ones away: the original metric scores "sou ##ven ##ir" from each other and so rates rare
words as likely.

The masked copies run many per forward pass, longest first (the encoder drops the padding), and
the MLM head runs only at each copy's scored position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision as precision_
from .data.batches import in_length_order
from .model import Encoder
from .tokenizer import Tokenizer

Variant = Literal["original", "word-l2r"]


@dataclass(frozen=True)
class SentenceScore:
    pll: float  # summed log-probability of the scored tokens, nats (<= 0)
    tokens: int  # tokens scored: the sentence's tokens without [CLS] / [SEP]

    @property
    def pseudo_perplexity(self) -> float | None:
        """None for a sentence without tokens (an empty line): nothing was scored."""
        return math.exp(-self.pll / self.tokens) if self.tokens else None


def corpus_pseudo_perplexity(scores: Sequence[SentenceScore]) -> float:
    """exp(-sum of PLLs / sum of scored tokens): token-weighted over the corpus."""
    tokens = sum(s.tokens for s in scores)
    if not tokens:
        raise ValueError("no tokens to score: every sentence is empty")
    return math.exp(-sum(s.pll for s in scores) / tokens)


def masked_copies(ids: Sequence[int], word_ids: Sequence[int | None], variant: Variant) -> list[tuple[int, int]]:
    """(scored position, end of the masked span) for each token of one encoded sentence: the copy
    masks positions scored .. end - 1."""
    if variant not in ("original", "word-l2r"):
        raise ValueError(f"variant must be 'original' or 'word-l2r', not {variant!r}")
    copies = []
    for t, word in enumerate(word_ids):
        if word is None:  # [CLS], [SEP]
            continue
        end = t + 1
        while variant == "word-l2r" and end < len(ids) and word_ids[end] == word:
            end += 1
        copies.append((t, end))
    return copies


@torch.no_grad()
def pseudo_log_likelihoods(model: Encoder, tokenizer: Tokenizer, sentences: Sequence[str], *,
                           variant: Variant = "original", batch_size: int = 128, precision: str = "auto",
                           progress: bool = True) -> list[SentenceScore]:
    """The PLL of each sentence, in input order.

    Args:
        sentences: texts of at most the model's length in tokens (a longer one is an error).
        variant: "original" (one token masked per copy) or "word-l2r" (see the module docstring).
        batch_size: masked copies per forward pass.
    """
    if model.mlm_head is None:
        raise ValueError("this model has no MLM head (its checkpoint holds no cls.predictions / lm_head "
                         "weights); pseudo-perplexity needs a masked-language model")
    encoded = tokenizer.encode(list(sentences), max_length=model.config.max_length)
    copies = [(row, t, end) for row in range(len(encoded))
              for t, end in masked_copies(encoded.ids(row), encoded.word_ids(row), variant)]
    copy_rows = np.array([row for row, _, _ in copies], dtype=np.int64)
    lengths = encoded.lengths[copy_rows]
    pll = np.zeros(len(encoded))
    with precision_.evaluating(model, precision) as device, tqdm(total=len(copies), desc="masked copies",
                                                                 unit="copy", disable=not progress) as bar:
        for batch in in_length_order(lengths, batch_size):
            rows = copy_rows[batch]
            inputs = encoded.tensors(rows, tokenizer.pad_id)
            ids = inputs["input_ids"]
            scored = torch.tensor([copies[i][1] for i in batch])
            targets = ids[torch.arange(len(batch)), scored]
            for b, i in enumerate(batch):
                _, t, end = copies[i]
                ids[b, t:end] = tokenizer.mask_id
            hidden = model(ids.to(device), inputs["attention_mask"].to(device)).last_hidden_state
            logits = model.mlm_head(hidden[torch.arange(len(batch)), scored.to(device)]).float()  # (B, V)
            token_ll = logits.log_softmax(-1).gather(1, targets.to(device)[:, None])[:, 0].cpu().numpy()
            np.add.at(pll, rows, token_ll)
            bar.update(len(batch))
    return [SentenceScore(float(p), int(n)) for p, n in zip(pll, np.bincount(copy_rows, minlength=len(encoded)))]
