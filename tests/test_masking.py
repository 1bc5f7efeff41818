"""Masking rates on real text, special tokens, determinism, words and spans."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertkit.heads import IGNORE_INDEX
from bertkit.data.masking import budget, mask_spans, mask_tokens, mask_whole_words, word_spans


@pytest.fixture(scope="module")
def wiki_batch(minilm, data_dir):
    """WikiText-2 valid as 128-token rows [CLS] ... [SEP]: about 250k real tokens."""
    _, tokenizer = minilm
    lines = [line.strip() for line in open(data_dir / "wikitext2" / "raw" / "wiki.valid.raw", encoding="utf-8")]
    encoded = tokenizer.encode([x for x in lines if x], overflow="truncate", max_length=100_000)
    ids = [i for r in range(len(encoded)) for i in encoded.ids(r)[1:-1]]
    cls, sep = tokenizer.token_id("[CLS]"), tokenizer.token_id("[SEP]")
    rows = [[cls] + ids[s:s + 126] + [sep] for s in range(0, len(ids) - 126, 126)]
    input_ids = torch.tensor(rows)
    special = torch.tensor(sorted(tokenizer.special_ids))
    maskable = ~torch.isin(input_ids, special)
    vocab = tokenizer.vocab()
    continuation = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    continuation[[i for t, i in vocab.items() if t.startswith("##")]] = True
    random_ids = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids])
    return dict(input_ids=input_ids, maskable=maskable, word_start=~continuation[input_ids],
                mask_id=tokenizer.mask_id, random_ids=random_ids)


def shares(batch, masked):
    chosen = masked.labels != IGNORE_INDEX
    original, corrupted = batch["input_ids"], masked.input_ids
    n = chosen.sum().item()
    return {"chosen": n / batch["maskable"].sum().item(),
            "mask": (chosen & (corrupted == batch["mask_id"])).sum().item() / n,
            "random": (chosen & (corrupted != batch["mask_id"]) & (corrupted != original)).sum().item() / n,
            "kept": (chosen & (corrupted == original)).sum().item() / n}


def assert_rates(got, rate=0.15):
    assert got["chosen"] == pytest.approx(rate, abs=0.005)
    assert got["mask"] == pytest.approx(0.8, abs=0.005)
    assert got["random"] == pytest.approx(0.1, abs=0.005)
    assert got["kept"] == pytest.approx(0.1, abs=0.005)


def assert_specials_untouched(batch, masked):
    special = ~batch["maskable"]
    assert (masked.labels[special] == IGNORE_INDEX).all()
    assert torch.equal(masked.input_ids[special], batch["input_ids"][special])


def run_token_masking(batch, seed, rate=0.15):
    return mask_tokens(batch["input_ids"], batch["maskable"], torch.Generator().manual_seed(seed),
                       mask_id=batch["mask_id"], random_ids=batch["random_ids"], rate=rate)


def test_token_masking_rates_on_real_text(wiki_batch):
    assert wiki_batch["input_ids"].numel() > 200_000
    masked = run_token_masking(wiki_batch, 0)
    assert_rates(shares(wiki_batch, masked))
    assert_specials_untouched(wiki_batch, masked)


def test_configurable_rate(wiki_batch):
    assert shares(wiki_batch, run_token_masking(wiki_batch, 1, rate=0.3))["chosen"] == pytest.approx(0.3, abs=0.005)


def test_same_generator_same_masks_new_seed_new_masks(wiki_batch):
    a, b, c = (run_token_masking(wiki_batch, s) for s in (7, 7, 8))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)


def test_whole_word_masking_takes_whole_words(wiki_batch):
    batch = {k: v[:300] if torch.is_tensor(v) and v.dim() == 2 else v for k, v in wiki_batch.items()}
    masked = mask_whole_words(batch["input_ids"], batch["maskable"], batch["word_start"],
                              torch.Generator().manual_seed(0), mask_id=batch["mask_id"], random_ids=batch["random_ids"])
    chosen = masked.labels != IGNORE_INDEX
    for b in range(len(chosen)):
        for first, end in word_spans(batch["maskable"][b], batch["word_start"][b]):
            assert chosen[b, first:end].all() or not chosen[b, first:end].any()
    assert shares(batch, masked)["chosen"] == pytest.approx(0.15, abs=0.005)
    assert_specials_untouched(batch, masked)


def test_span_masking_rates_lengths_and_per_span_decisions(wiki_batch):
    batch = {k: v[:800].clone() if torch.is_tensor(v) and v.dim() == 2 else v for k, v in wiki_batch.items()}
    batch["input_ids"][:, 60] = 102  # a [SEP] inside every row, as between two packed documents
    batch["maskable"][:, 60] = False
    masked = mask_spans(batch["input_ids"], batch["maskable"], batch["word_start"],
                        torch.Generator().manual_seed(0), mask_id=batch["mask_id"], random_ids=batch["random_ids"])
    got = shares(batch, masked)
    assert got["chosen"] == pytest.approx(0.15, abs=0.005)
    assert_specials_untouched(batch, masked)
    chosen = masked.labels != IGNORE_INDEX
    starts, ends = masked.span_starts[chosen], masked.span_ends[chosen]
    rows = chosen.nonzero()[:, 0]
    row_start = batch["maskable"][rows, starts - 1] == 0  # a row may begin mid-word
    assert (batch["word_start"][rows, starts] | row_start).all()  # spans begin at a word
    span_ids = set(zip(chosen.nonzero()[:, 0].tolist(), starts.tolist()))
    is_mask = masked.input_ids == batch["mask_id"]
    for b, s in span_ids:
        e = masked.span_ends[b, s].item()
        assert is_mask[b, s:e + 1].all() or not is_mask[b, s:e + 1].any()  # one decision per span
    n_words = [sum(1 for t in range(s, masked.span_ends[b, s].item() + 1) if batch["word_start"][b, t])
               for b, s in span_ids]
    assert max(n_words) <= 10
    # Geometric(0.2) truncated to 1..10 has mean 3.8; spans cut at a row's 19-token budget come out shorter
    assert 2.8 < sum(n_words) / len(n_words) < 4.3


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8), st.floats(0.01, 0.9))
def test_budget_is_rounded_share_and_never_zero_for_real_rows(lengths, rate):
    T = max(lengths) + 1
    maskable = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    got = budget(maskable, rate).tolist()
    for n, k in zip(lengths, got):
        assert k == (0 if n == 0 else max(1, round(n * rate)))
