import numpy as np
import pytest
import torch

from bertkit import embed, pool


def test_mean_pooled_embeddings_match_sentence_transformers(minilm, minilm_dir, sts_sentences):
    st = pytest.importorskip("sentence_transformers")
    sentences = sts_sentences[:500]
    expected = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, batch_size=32)
    got = embed(*minilm, sentences, precision="fp32", normalize=True, progress=False)
    cosine = (got * expected).sum(1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.99999


def test_bf16_embeddings_stay_close(minilm, sts_sentences):
    sentences = sts_sentences[:200]
    exact = embed(*minilm, sentences, precision="fp32", normalize=True, progress=False)
    fast = embed(*minilm, sentences, precision="bf16", normalize=True, progress=False)
    assert (exact * fast).sum(1).min() > 0.999


def test_results_come_back_in_input_order(minilm, sts_sentences):
    sentences = sts_sentences[:40]
    together = embed(*minilm, sentences, precision="fp32", batch_size=7, progress=False)
    one_by_one = np.stack([embed(*minilm, [s], precision="fp32", progress=False)[0] for s in sentences[:5]])
    assert np.abs(together[:5] - one_by_one).max() < 1e-4


def test_pooling_and_layers_follow_their_definitions(minilm):
    model, tokenizer = minilm
    texts = ["A short one.", "A somewhat longer sentence about cats and dogs."]
    batch = tokenizer.encode(texts).tensors()
    with torch.no_grad():
        out = model(**batch, output_layers=[3, 6])
    mask = batch["attention_mask"]
    cls = embed(model, tokenizer, texts, pooling="cls", precision="fp32", progress=False)
    assert np.allclose(cls, out.last_hidden_state[:, 0].numpy(), atol=1e-5)
    best = embed(model, tokenizer, texts, pooling="max", precision="fp32", progress=False)
    assert np.allclose(best[0], out.last_hidden_state[0, :mask[0].sum()].amax(0).numpy(), atol=1e-5)
    mixed = embed(model, tokenizer, texts, layers=[3, -1], precision="fp32", progress=False)
    expected = pool((out.layers[3] + out.layers[6]) / 2, mask, "mean")
    assert np.allclose(mixed, expected.numpy(), atol=1e-5)


def test_empty_and_whitespace_texts_are_defined(minilm):
    vectors = embed(*minilm, ["", "   ", "word"], precision="fp32", progress=False)
    assert np.isfinite(vectors).all()
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)


def test_long_texts_error_truncate_or_window(minilm):
    long_text = " ".join(["the cat sat on the mat ."] * 900)  # 5,400 words
    with pytest.raises(ValueError, match="more than max_length=512"):
        embed(*minilm, ["short", long_text], progress=False)
    with pytest.warns(UserWarning, match="truncated 1 of 2"):
        cut = embed(*minilm, ["short", long_text], overflow="truncate", precision="fp32", progress=False)
    windows = embed(*minilm, ["short", long_text], overflow="window", precision="fp32", progress=False)
    assert np.isfinite(windows).all() and windows.shape == (2, 384)
    assert np.allclose(cut[0], windows[0], atol=1e-5)
    cosine = windows[1] @ cut[1] / np.linalg.norm(windows[1]) / np.linalg.norm(cut[1])
    assert cosine > 0.9  # a repetitive text: every window says the same


def test_bad_arguments(minilm):
    with pytest.raises(TypeError, match="list of texts"):
        embed(*minilm, "one text")
    with pytest.raises(ValueError, match="pooling must be"):
        embed(*minilm, ["a"], pooling="median", progress=False)
    with pytest.raises(ValueError, match="precision must be"):
        embed(*minilm, ["a"], precision="fp8", progress=False)
