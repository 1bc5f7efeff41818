"""Perturbations for a learned metric's synthetic pairs: what each one changes, and reproducibility."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from bertkit import Tokenizer, load_pretrained
from bertkit.perturb import drop_words, mask_and_fill, perturbed_pairs, swap_words

transformers = pytest.importorskip("transformers")

SENTENCES = ["A man is playing a large flute in the park.", "Three dogs run across the snowy field together.",
             "Hi", "The quick brown fox jumps over the lazy dog near the old barn."]


@pytest.fixture(scope="module")
def mlm(tmp_path_factory, minilm_dir):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    folder = tmp_path_factory.mktemp("mlm")
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    return load_pretrained(folder), Tokenizer.from_pretrained(minilm_dir)


def test_drop_and_swap_keep_the_words_they_should():
    words = "one two three four five six seven eight".split()
    for seed in range(20):
        dropped = drop_words(words, np.random.default_rng(seed))
        assert 1 <= len(dropped) < len(words)
        assert [w for w in words if w in dropped] == dropped  # order kept, nothing invented
        swapped = swap_words(words, np.random.default_rng(seed))
        assert Counter(swapped) == Counter(words)
    assert drop_words(["alone"], np.random.default_rng(0)) == ["alone"]


def test_mask_and_fill_changes_one_span_and_is_reproducible(mlm):
    model, tokenizer = mlm
    first = mask_and_fill(model, tokenizer, SENTENCES, torch.Generator().manual_seed(3), batch_size=2)
    again = mask_and_fill(model, tokenizer, SENTENCES, torch.Generator().manual_seed(3), batch_size=2)
    assert first == again
    assert first[2] == "Hi"  # one token between [CLS] and [SEP]: nothing to mask
    for before, after in zip(SENTENCES, first):
        assert not any(t in after for t in ("[MASK]", "[CLS]", "[SEP]", "[PAD]"))
        old, new = tokenizer.tokens(before)[1:-1], tokenizer.tokens(after)[1:-1]
        prefix = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        suffix = next((i for i, (a, b) in enumerate(zip(old[::-1], new[::-1])) if a != b), 0)
        assert prefix + suffix >= len(old) - 15  # everything but one span of at most 15 tokens kept


def test_perturbed_pairs_draw_every_kind_and_refuse_what_they_cannot_do(mlm, minilm):
    model, tokenizer = mlm
    sentences = SENTENCES * 10
    pairs = perturbed_pairs(sentences, model, tokenizer, seed=1)
    assert [p["reference"] for p in pairs] == sentences
    assert set(Counter(p["perturbation"] for p in pairs)) == {"mask_fill", "drop", "swap"}
    assert pairs == perturbed_pairs(sentences, model, tokenizer, seed=1)
    assert sum(p["candidate"] != p["reference"] for p in pairs) > len(pairs) // 2
    with pytest.raises(ValueError, match="need a masked-language model"):
        perturbed_pairs(sentences, None, None, kinds=("mask_fill",))
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturbed_pairs(sentences, None, None, kinds=("backtranslate",))
    with pytest.raises(ValueError, match="MLM head"):
        mask_and_fill(minilm[0], tokenizer, sentences, torch.Generator())
