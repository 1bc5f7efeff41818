"""Perturbed copies of sentences: the synthetic pairs a learned metric pre-trains on (BLEURT).

Sellam et al. (2020) pre-train BLEURT on millions of (sentence, perturbed sentence) pairs before it
sees a human rating: mask-and-fill (a contiguous span of up to 15 tokens masked and refilled by a
masked LM), back-translation, and word dropping; each pair is labelled by automatic signals (BLEU,
ROUGE, BERTScore, ...). bertkit keeps mask-and-fill and word dropping, and replaces back-translation
(no translation model here) by swaps of neighbouring words, which keep the words and break the order.
Mask-and-fill samples each masked token from the MLM's top k, left to right, one forward pass per
filled position for a whole batch of sentences (BLEURT uses beam search).

Every random choice comes from an explicit `numpy.random.Generator` or `torch.Generator`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .model import Encoder
from .tokenizer import Tokenizer

PERTURBATIONS = ("mask_fill", "drop", "swap")


def drop_words(words: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Drop between 1 and len - 1 words (uniformly many), chosen at random; one word stays as it is."""
    if len(words) < 2:
        return list(words)
    drop = set(rng.choice(len(words), size=int(rng.integers(1, len(words))), replace=False).tolist())
    return [w for i, w in enumerate(words) if i not in drop]


def swap_words(words: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Swap between 1 and max(1, len // 4) random pairs of neighbouring words."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(int(rng.integers(1, max(1, len(out) // 4) + 1))):
        i = int(rng.integers(0, len(out) - 1))
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


@torch.no_grad()
def mask_and_fill(model: Encoder, tokenizer: Tokenizer, sentences: Sequence[str], generator: torch.Generator, *,
                  max_span: int = 15, top_k: int = 20, batch_size: int = 64, progress: bool = True) -> list[str]:
    """Each sentence with a random contiguous span of 1 .. max_span tokens (at most all but one of
    its tokens) masked and refilled left to right by sampling from the MLM's `top_k` tokens."""
    if model.mlm_head is None:
        raise ValueError("mask-and-fill needs a masked-language model (an MLM head); this model has none")
    encoded = tokenizer.encode(list(sentences), max_length=model.config.max_length, overflow="truncate")
    out = list(sentences)
    unused = {i for token, i in tokenizer.vocab().items() if token.startswith("[unused")}  # never trained
    banned = sorted(tokenizer.special_ids | unused)
    was_training = model.training
    model.eval()
    for first in tqdm(range(0, len(encoded), batch_size), desc="mask and fill", unit="batch",
                      disable=not progress or len(encoded) <= batch_size):
        rows = list(range(first, min(first + batch_size, len(encoded))))
        batch = encoded.tensors(rows, tokenizer.pad_id)
        ids, lengths = batch["input_ids"], batch["attention_mask"].sum(1)
        starts, widths = torch.ones(len(rows), dtype=torch.long), torch.zeros(len(rows), dtype=torch.long)
        for b, n in enumerate(lengths.tolist()):
            inner = n - 2  # tokens between [CLS] and [SEP]; a sentence of one token stays as it is
            if inner >= 2:
                widths[b] = int(torch.randint(1, min(max_span, inner - 1) + 1, (1,), generator=generator))
                starts[b] = 1 + int(torch.randint(0, inner - int(widths[b]) + 1, (1,), generator=generator))
                ids[b, starts[b]:starts[b] + widths[b]] = tokenizer.mask_id
        for step in range(int(widths.max())):
            filling = (widths > step).nonzero().flatten()  # (R,) rows with a mask left at start + step
            positions = starts[filling] + step
            out_rows = model(ids[filling], batch["attention_mask"][filling]).last_hidden_state
            hidden = out_rows[torch.arange(len(filling)), positions]  # (R, H)
            logits = model.mlm_head(hidden).float()  # (R, V)
            logits[:, banned] = float("-inf")
            top = logits.topk(top_k, dim=-1)
            picks = torch.multinomial(top.values.softmax(-1), 1, generator=generator)  # (R, 1)
            ids[filling, positions] = top.indices.gather(1, picks)[:, 0]
        for b, row in enumerate(rows):  # the span's characters replaced; the rest of the text kept verbatim
            if widths[b]:
                start, end = int(starts[b]), int(starts[b] + widths[b])
                offsets = encoded.offsets(row)
                before, after = sentences[row][:offsets[start][0]], sentences[row][offsets[end - 1][1]:]
                fill = tokenizer.decode(ids[b, start:end].tolist())
                if fill.startswith("##"):  # a word piece where a word began: it continues the word before
                    before, fill = before.rstrip(), fill[2:]
                out[row] = before + fill + after
    model.train(was_training)
    return out


def perturbed_pairs(sentences: Sequence[str], model: Encoder | None, tokenizer: Tokenizer | None, seed: int = 0,
                    kinds: Sequence[str] = PERTURBATIONS, drop_after_fill: float = 0.3) -> list[dict]:
    """One perturbed copy of each sentence, the perturbation drawn uniformly from `kinds`; as in
    BLEURT, a share `drop_after_fill` of the mask-and-fill copies also lose words.

    Returns:
        {"reference": sentence, "candidate": perturbed, "perturbation": kind} per sentence, in order.
    """
    unknown = set(kinds) - set(PERTURBATIONS)
    if unknown:
        raise ValueError(f"unknown perturbation(s) {sorted(unknown)}; choose from {', '.join(PERTURBATIONS)}")
    rng = np.random.default_rng(seed)
    chosen = [kinds[int(i)] for i in rng.integers(0, len(kinds), len(sentences))]
    candidates = list(sentences)
    fill = [i for i, k in enumerate(chosen) if k == "mask_fill"]
    if fill:
        if model is None or tokenizer is None:
            raise ValueError("mask_fill perturbations need a masked-language model and its tokenizer")
        filled = mask_and_fill(model, tokenizer, [sentences[i] for i in fill], torch.Generator().manual_seed(seed))
        for i, text in zip(fill, filled):
            candidates[i] = " ".join(drop_words(text.split(), rng)) if rng.random() < drop_after_fill else text
    for i, kind in enumerate(chosen):
        if kind in ("drop", "swap"):
            candidates[i] = " ".join({"drop": drop_words, "swap": swap_words}[kind](sentences[i].split(), rng))
    return [{"reference": s, "candidate": c, "perturbation": k} for s, c, k in zip(sentences, candidates, chosen)]
