"""Masking for masked-language-model pretraining: pure functions of their inputs and a generator.

Every random choice is drawn from the `torch.Generator` passed in, so a test can pin it and a
resumed run repeats it; masks are drawn anew at every step, so each epoch sees different masks.

Three ways to choose what to predict, all with a budget of `rate` (15%) of each row's maskable
tokens (special tokens are never chosen):

- `mask_tokens`: BERT's token masking, exactly round(rate * n) tokens per row.
- `mask_whole_words`: whole-word masking; a word is all of its WordPiece tokens.
- `mask_spans`: SpanBERT (Joshi et al., 2020): span lengths in words from Geometric(p) truncated
  to 1..`max_span_words` and renormalised (as SpanBERT's code does: mean 3.8 words for p = 0.2 and
  10), spans starting at word boundaries and never covering a special token, until the budget is
  reached.

A causal LM predicts every next token instead (`next_token_labels`), and a permutation LM the last
tokens of a random factorization order (`permutation_targets`): nothing is masked.

Chosen tokens are then corrupted 80/10/10: replaced by [MASK], by a random token, or kept (ELECTRA's
generator input: 85/0/15). Token
and whole-word masking decide per token (as BERT's create_pretraining_data does); span masking
decides per span, as SpanBERT does. Labels are the original ids at chosen positions and
`IGNORE_INDEX` elsewhere, so the loss covers only chosen tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..heads import IGNORE_INDEX


@dataclass
class Masked:
    input_ids: Tensor  # (B, T) corrupted ids fed to the model
    labels: Tensor  # (B, T) original ids at chosen positions, IGNORE_INDEX elsewhere
    span_starts: Tensor | None = None  # (B, T) for span masking: first position of the token's span
    span_ends: Tensor | None = None  # (B, T) last position of the token's span (inclusive)
    ranks: Tensor | None = None  # (B, T) for permutation LM: each position's place in the factorization order


def next_token_labels(input_ids: Tensor, real: Tensor, closing_id: int | None = None) -> Masked:
    """Causal LM targets: position t predicts token t + 1 (the inputs stay as they are); the last
    position and positions followed by padding predict nothing, nor does the token before a row's
    closing `closing_id` (the [SEP] that packing puts at every block's end is not text).
    (B, T) ids and bool real-token mask."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, :-1] = torch.where(real[:, 1:], input_ids[:, 1:], IGNORE_INDEX)
    if closing_id is not None:
        last = real.sum(1) - 1  # (B,) the last real position
        rows = torch.arange(len(input_ids))
        closes = (last >= 1) & (input_ids[rows, last.clamp(min=0)] == closing_id)
        labels[rows[closes], last[closes] - 1] = IGNORE_INDEX
    return Masked(input_ids, labels)


def permutation_targets(input_ids: Tensor, real: Tensor, maskable: Tensor, generator: torch.Generator,
                        k: int = 6) -> Masked:
    """Permutation LM (XLNet): 1/k of each row's maskable tokens, chosen at random, are the targets
    (partial prediction: round(n / k), at least 1), predicted in a random factorization order. The
    tokens stay in place; the order only decides what each position may see
    (`model.permutation_masks`).

    As XLNet's `_local_perm`: every other real token (special tokens included) is context, rank -1,
    seen by every position and seeing no target; the targets take ranks 0.. in their random order;
    padding comes last (rank T). Labels are the original ids at the targets. (B, T) ids, bool
    real-token and maskable masks.
    """
    B, T = input_ids.shape
    scores = torch.rand(B, T, generator=generator).masked_fill(~maskable, 2.0)  # maskable tokens first, shuffled
    order = scores.argsort(dim=1, stable=True).argsort(dim=1)  # (B, T) each token's place in that shuffle
    chosen = order < budget(maskable, 1 / k)[:, None]
    ranks = torch.where(chosen, order, torch.where(real, -1, T))
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return Masked(input_ids, labels, ranks=ranks)


BERT_SPLIT = (0.8, 0.1)  # of the chosen tokens: 80% [MASK], 10% a random token, 10% kept
ELECTRA_SPLIT = (0.85, 0.0)  # ELECTRA's generator input: 85% [MASK], 15% kept, no random tokens


def budget(maskable: Tensor, rate: float) -> Tensor:
    """(B, T) bool -> (B,) number of tokens to choose per row: round(rate * n), at least 1 if n > 0."""
    n = maskable.sum(1)
    return torch.where(n > 0, (n.double() * rate).round().long().clamp(min=1), n)


def corrupt(input_ids: Tensor, chosen: Tensor, generator: torch.Generator, *, mask_id: int,
            random_ids: Tensor, groups: Tensor | None = None, split: tuple[float, float] = BERT_SPLIT) -> Masked:
    """Replace the chosen positions by [MASK], by a random token, or keep them: 80/10/10 by default.

    Args:
        chosen: (B, T) bool, the positions to predict.
        random_ids: (R,) ids a random replacement is drawn from (the vocabulary minus special tokens).
        groups: (B, T) int, optional: positions with the same group id share one decision (spans).
        split: the shares of [MASK] and of random tokens; the rest is kept (ELECTRA: 85% [MASK], 15% kept).
    """
    B, T = input_ids.shape
    draws = torch.rand(B, T, generator=generator)
    if groups is not None:
        draws = draws.gather(1, groups.clamp(0, T - 1))  # each group reads the draw at its index
    replacement = random_ids[torch.randint(len(random_ids), (B, T), generator=generator)]
    masked, random = split
    corrupted = torch.where(chosen & (draws < masked), torch.full_like(input_ids, mask_id), input_ids)
    use_random = chosen & (draws >= masked) & (draws < masked + random)
    corrupted = torch.where(use_random, replacement, corrupted)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return Masked(corrupted, labels)


def mask_tokens(input_ids: Tensor, maskable: Tensor, generator: torch.Generator, *, mask_id: int,
                random_ids: Tensor, rate: float = 0.15, split: tuple[float, float] = BERT_SPLIT) -> Masked:
    """BERT token masking: exactly `budget(maskable, rate)` tokens per row, 80/10/10 per token.

    Args:
        input_ids: (B, T) token ids.
        maskable: (B, T) bool, False for special tokens and padding.
    """
    B, T = input_ids.shape
    scores = torch.rand(B, T, generator=generator).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(1).argsort(1)  # rank of each position's score within its row
    chosen = ranks < budget(maskable, rate)[:, None]
    return corrupt(input_ids, chosen, generator, mask_id=mask_id, random_ids=random_ids, split=split)


def word_spans(maskable_row: Tensor, word_start_row: Tensor) -> list[tuple[int, int]]:
    """[(first, last+1)] token ranges of the words of one row; a word is a start token and its
    continuation tokens (WordPiece '##...'), among maskable positions only."""
    spans: list[tuple[int, int]] = []
    for t in torch.nonzero(maskable_row).flatten().tolist():
        if word_start_row[t] or not spans or spans[-1][1] != t:
            spans.append((t, t + 1))
        else:
            spans[-1] = (spans[-1][0], t + 1)
    return spans


def mask_whole_words(input_ids: Tensor, maskable: Tensor, word_start: Tensor, generator: torch.Generator, *,
                     mask_id: int, random_ids: Tensor, rate: float = 0.15,
                     split: tuple[float, float] = BERT_SPLIT) -> Masked:
    """Whole-word masking: words in random order, each taken whole if it fits the row's budget.

    Args:
        word_start: (B, T) bool, True where a token begins a word (not a '##' continuation).
    """
    chosen = torch.zeros_like(maskable)
    for b, want in enumerate(budget(maskable, rate).tolist()):
        words = word_spans(maskable[b], word_start[b])
        taken = 0
        for w in torch.randperm(len(words), generator=generator).tolist():
            first, end = words[w]
            if taken + end - first <= want:
                chosen[b, first:end] = True
                taken += end - first
            if taken == want:
                break
    return corrupt(input_ids, chosen, generator, mask_id=mask_id, random_ids=random_ids, split=split)


def mask_spans(input_ids: Tensor, maskable: Tensor, word_start: Tensor, generator: torch.Generator, *,
               mask_id: int, random_ids: Tensor, rate: float = 0.15, p: float = 0.2, max_span_words: int = 10,
               max_attempts: int = 100, split: tuple[float, float] = BERT_SPLIT) -> Masked:
    """SpanBERT span masking, 80/10/10 per span; also returns each masked token's span bounds.

    Spans are sampled (length in words ~ Geometric(p) truncated to 1..`max_span_words`; a start
    word uniformly at random), cut short where they would overrun the budget, and kept when they
    neither overlap a chosen span nor cover a special token, until the budget is met or
    `max_attempts` samples in a row fail.
    """
    B, T = input_ids.shape
    lengths = torch.arange(1, max_span_words + 1, dtype=torch.float64)
    length_probs = p * (1 - p) ** (lengths - 1)  # Geometric(p) on 1..max, renormalised (mean 3.8 for 0.2, 10)
    length_probs /= length_probs.sum()
    chosen = torch.zeros_like(maskable)
    span_starts = torch.full((B, T), -1, dtype=torch.long)
    span_ends = torch.full((B, T), -1, dtype=torch.long)
    for b, want in enumerate(budget(maskable, rate).tolist()):
        words = word_spans(maskable[b], word_start[b])
        taken, failures = 0, 0
        while taken < want and failures < max_attempts and words:
            n_words = int(torch.multinomial(length_probs, 1, generator=generator)) + 1
            w = int(torch.randint(len(words), (1,), generator=generator))
            last = min(w + n_words, len(words)) - 1
            while last >= w and taken + words[last][1] - words[w][0] > want:
                last -= 1  # as SpanBERT does, the span stops where the budget does (whole words here)
            first_tok, end_tok = words[w][0], words[max(last, w)][1]
            if (last < w or chosen[b, first_tok:end_tok].any()
                    or not maskable[b, first_tok:end_tok].all()):  # e.g. a [SEP] between two documents
                failures += 1
                continue
            chosen[b, first_tok:end_tok] = True
            span_starts[b, first_tok:end_tok], span_ends[b, first_tok:end_tok] = first_tok, end_tok - 1
            taken += end_tok - first_tok
            failures = 0
    masked = corrupt(input_ids, chosen, generator, mask_id=mask_id, random_ids=random_ids, groups=span_starts,
                     split=split)
    masked.span_starts, masked.span_ends = span_starts, span_ends
    return masked
