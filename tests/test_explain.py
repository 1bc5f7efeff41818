"""Attention weights out of the encoder (held equal to transformers') and attention rollout."""

import numpy as np
import pytest
import torch

from bertkit.explain import attention_rollout, attentions


@pytest.fixture(scope="module")
def batch(minilm, sts_sentences):
    _, tokenizer = minilm
    return tokenizer.encode(sts_sentences[:24]).tensors()  # padded: the sentences differ in length


def test_attention_weights_equal_transformers(minilm, minilm_dir, batch):
    from transformers import AutoModel

    model, _ = minilm
    reference = AutoModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(**batch, output_attentions=True).attentions
    real = batch["attention_mask"].bool()
    queries = real[:, None, :, None]  # (B, 1, T, 1): transformers fills padded query rows too
    for unpad_tokens in (True, False):
        with torch.no_grad():
            out = model(**batch, output_attentions=True, unpad_tokens=unpad_tokens)
            plain = model(**batch, unpad_tokens=unpad_tokens).last_hidden_state
        assert len(out.attentions) == len(expected) == 6
        for got, want in zip(out.attentions, expected):
            assert got.shape == want.shape == (24, 12, real.shape[1], real.shape[1])
            assert float(((got - want) * queries).abs().max()) <= 1e-5
            assert torch.equal(got[~queries.expand_as(got)], torch.zeros_like(got[~queries.expand_as(got)]))
        assert float((out.last_hidden_state - plain)[real].abs().max()) <= 1e-5  # same states either path


def test_rows_sum_to_one_over_real_tokens(minilm, batch):
    weights = attentions(minilm[0], **batch)
    real = batch["attention_mask"].bool()
    for layer in weights:
        sums = layer.sum(-1)  # (B, nh, T)
        assert torch.allclose(sums[real[:, None, :].expand_as(sums)], torch.ones(()), atol=1e-5)
        assert float(layer[~real[:, None, None, :].expand_as(layer)].abs().max()) == 0.0  # padded keys


def naive_rollout(weights: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema's compute_joint_attention for one sequence: heads averaged, identity added,
    rows renormalised, joint[i] = aug[i] @ joint[i - 1]."""
    joint = None
    for layer in weights:  # (nh, T, T)
        aug = layer.mean(0) + np.eye(layer.shape[-1])
        aug = aug / aug.sum(-1, keepdims=True)
        joint = aug if joint is None else aug @ joint
    return joint


def test_rollout_equals_the_reference_loop_per_sentence(minilm, batch):
    weights = attentions(minilm[0], **batch)
    rollout = attention_rollout(weights, batch["attention_mask"])
    lengths = batch["attention_mask"].sum(1).tolist()
    for b, n in enumerate(lengths):
        want = naive_rollout([w[b, :, :n, :n].double().numpy() for w in weights])
        np.testing.assert_allclose(rollout[b, :n, :n].numpy(), want, atol=1e-5)
        assert float(rollout[b, n:].abs().sum() + rollout[b, :, n:].abs().sum()) == 0.0  # padding stays out
    one = attention_rollout(weights[:1])
    assert torch.allclose(one, (weights[0].mean(1) + torch.eye(one.shape[-1])) / 2)
