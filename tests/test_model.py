import numpy as np
import pytest
import torch

import bertkit.model
from bertkit import Encoder, precision, preset
from bertkit.model import (CPU_BF16_ATTENTION_MIN_LENGTH, CPU_SHORT_ATTENTION_MAX_LENGTH, attention,
                           Dropout, attention_inputs, attention_weights, dropout, forward_flops, linear_residual,
                           short_attention)


def random_batch(vocab: int, lengths: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, vocab, (len(lengths), T), generator=g) * mask
    types = (torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Encoder(preset("tiny", vocab_size=500)).eval()


def test_unpadded_path_equals_padded_path(tiny):
    batch = random_batch(500, [17, 3, 9, 1, 17, 12])
    with torch.no_grad():
        fast = tiny(**batch, output_layers=[0, 1]).layers
        plain = tiny(**batch, output_layers=[0, 1], unpad_tokens=False).layers
    real = batch["attention_mask"].bool()
    for i in (0, 1):
        assert (fast[i][real] - plain[i][real]).abs().max() <= 1e-5


def step(model: Encoder, batch: dict, **forward) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward and backward of `model` on `batch` (a fixed random target for its outputs):
    the real tokens' outputs and every parameter's gradient."""
    model.zero_grad()
    real = batch["attention_mask"].bool()
    out = model(**batch, **forward).last_hidden_state.float()
    target = torch.randn(*out.shape, generator=torch.Generator().manual_seed(1))
    (out * target * real[..., None]).sum().backward()
    return out[real], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_gradients_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float) -> None:
    """The same parameters have gradients, each equal to `tolerance` times its largest entry."""
    assert a.keys() == b.keys()
    for name, g in a.items():
        assert (g - b[name]).abs().max() <= tolerance * g.abs().max(), name


def test_attention_in_groups_gives_the_same_outputs_and_gradients():
    """Rows of mixed lengths attend in groups (padding.make_layout(group=True)); without dropout
    the training step is the plain padded one: outputs and every gradient equal."""
    torch.manual_seed(0)
    model = Encoder(preset("tiny", vocab_size=500, hidden_dropout=0.0, attention_dropout=0.0)).train()
    batch = random_batch(500, [17, 3, 9, 1, 17, 12])
    grads = {unpad_tokens: step(model, batch, unpad_tokens=unpad_tokens)[1] for unpad_tokens in (True, False)}
    assert_gradients_equal(grads[True], grads[False], 1e-4)


def test_spare_rows_in_bf16_change_no_output_no_gradient_and_no_dropout_draw(monkeypatch):
    """Under bf16 autocast the flat tensor carries spare rows (padding.rows_for); the outputs and
    every gradient equal those of the same step without them, dropout included: the spare rows draw
    no random numbers, so every mask is the one drawn without them."""
    torch.manual_seed(0)
    model = Encoder(preset("tiny", vocab_size=500)).train()
    batch = random_batch(500, [17, 3, 9, 1, 17, 12, 30])  # 89 tokens: 92 rows, two groups
    outputs, grads = {}, {}
    for spare in (True, False):
        monkeypatch.setattr(Encoder, "kernels_per_shape", lambda self, input_ids: spare)
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs[spare], grads[spare] = step(model, batch)
    assert (outputs[True] - outputs[False]).abs().max() <= 1e-5
    assert_gradients_equal(grads[True], grads[False], 1e-3)


def test_spare_rows_in_bf16_on_cpu_and_not_in_fp32(tiny):
    ids = torch.zeros(1, 4, dtype=torch.long)
    assert not tiny.kernels_per_shape(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tiny.kernels_per_shape(ids)
        assert not tiny.kernels_per_shape(ids.to("meta"))


def test_spare_rows_where_int8_runs_on_amx_and_they_change_no_output(tiny, monkeypatch):
    """int8 on AMX compiles a kernel per shape as bf16 does: its forward carries spare rows, the same outputs."""
    batch = random_batch(500, [60, 45, 30, 20, 9])  # 164 tokens: 168 rows, enough for the packed product
    outputs = {}
    with torch.no_grad(), precision.evaluating(tiny, "int8"):
        assert tiny.kernels_per_shape(batch["input_ids"]) == precision.int8_runs_on_amx()
        for spare in (True, False):
            monkeypatch.setattr(Encoder, "kernels_per_shape", lambda self, input_ids: spare)
            outputs[spare] = tiny(**batch).last_hidden_state
    assert torch.equal(outputs[True], outputs[False])


def test_padding_does_not_change_a_sequence(tiny):
    """A sequence encodes the same alone and beside a longer one."""
    batch = random_batch(500, [5, 20], seed=1)
    alone = {k: v[:1, :5] for k, v in batch.items()}
    with torch.no_grad():
        together = tiny(**batch).last_hidden_state[0, :5]
        single = tiny(**alone).last_hidden_state[0]
    assert (together - single).abs().max() <= 1e-5


def test_output_layers_and_negative_indices(tiny):
    batch = random_batch(500, [4, 6])
    with torch.no_grad():
        out = tiny(**batch, output_layers=[0, -1])
    assert set(out.layers) == {0, 2}
    assert torch.equal(out.layers[2], out.last_hidden_state)


def test_last_layer_stops_early_with_the_same_states(tiny):
    batch = random_batch(500, [4, 6])
    with torch.no_grad():
        full = tiny(**batch, output_layers=[0, 1])
        short = tiny(**batch, output_layers=[0, 1], last_layer=1)
        embeddings_only = tiny(**batch, last_layer=0)
    assert torch.equal(short.layers[1], full.layers[1]) and torch.equal(short.last_hidden_state, full.layers[1])
    assert torch.equal(embeddings_only.last_hidden_state, full.layers[0])
    with pytest.raises(ValueError, match="beyond last_layer=1"):
        tiny(**batch, output_layers=[2], last_layer=1)


def test_too_long_input_is_an_error(tiny):
    with pytest.raises(ValueError, match="positions cover 512"):
        tiny(torch.zeros(1, 513, dtype=torch.long))


def test_bf16_autocast_stays_close_to_fp32(tiny):
    batch = random_batch(500, [30, 7, 12])
    with torch.no_grad():
        ref = tiny(**batch).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny(**batch).last_hidden_state.float()
    real = batch["attention_mask"].bool()
    cos = torch.nn.functional.cosine_similarity(ref[real], low[real], dim=-1)
    assert cos.min() > 0.999


def test_attention_fast_precision_equals_plain_sdpa():
    """The fp32 detour for short bf16 sequences computes what bf16 SDPA computes, more exactly."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[1, ..., 6:] = False
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.0).float()
    assert 10 < CPU_BF16_ATTENTION_MIN_LENGTH
    assert (got - exact).abs().max() < 0.05


def test_attention_inputs_in_one_copy_attend_as_sdpa_does_with_gradients():
    """q, k and v taken from the permuted projections as the encoder takes them (one copy: contiguous in
    fp32, and in fp32 under bf16 autocast for the CPU detour) attend as SDPA does, gradients included."""
    g = torch.Generator().manual_seed(0)
    B, T, nh, hs = 2, 10, 3, 8
    projections = torch.randn(B, T, 3 * nh * hs, generator=g, requires_grad=True)
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[1, ..., 6:] = False
    permuted = projections.view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs), as SelfAttention.attend
    exact = torch.nn.functional.scaled_dot_product_attention(*permuted, attn_mask=mask)
    [exact_grad] = torch.autograd.grad(exact.sum(), projections)
    q, k, v = attention_inputs(permuted)
    assert all(t.is_contiguous() for t in (q, k, v))
    got = attention(q, k, v, mask, 0.0)
    torch.testing.assert_close(got, exact, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), projections)[0], exact_grad, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = attention_inputs(permuted.bfloat16())
        got = attention(q, k, v, mask, 0.0)
    assert q.dtype == got.dtype == torch.float32 and q.is_contiguous()
    assert (got - exact).abs().max() < 0.05  # the projections rounded to bf16
    assert (torch.autograd.grad(got.sum(), projections)[0] - exact_grad).abs().max() < 0.05


def short_inputs(mask_rows: int | None, requires_grad: bool = False):
    """q, k, v (3, 4, 7, 8) and a mask of `mask_rows` rows (None: no mask), every query seeing a key."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 7, 8, generator=g, requires_grad=requires_grad) for _ in range(3))
    mask = None
    if mask_rows is not None:
        mask = (torch.rand(3, 1, mask_rows, 7, generator=g) > 0.4) | torch.eye(7, dtype=torch.bool)[:mask_rows]
        mask[0, ..., 5:] = False  # a padded row's keys
        mask[0, ..., 0] = True
    return q, k, v, mask


@pytest.mark.parametrize("mask_rows", [None, 1, 7])
def test_short_attention_equals_sdpa_with_gradients(mask_rows):
    """The three-product attention for short CPU sequences computes SDPA's outputs and gradients, with
    no mask, a key mask (B, 1, 1, T) and a mask per query (B, 1, T, T)."""
    q, k, v, mask = short_inputs(mask_rows, requires_grad=True)
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = short_attention(q, k, v, mask)
    torch.testing.assert_close(got, exact, atol=1e-6, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(got.sum(), (q, k, v)), torch.autograd.grad(exact.sum(), (q, k, v))):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mask_rows", [None, 1, 7])
def test_short_attention_softmaxes_short_rows_in_place_without_gradients(monkeypatch, spy, mask_rows):
    """Where the CPU's softmax is slow over short rows (AVX-512), inference computes it in place: the same
    outputs as SDPA, with and without masks."""
    monkeypatch.setattr(bertkit.model, "SHORT_SOFTMAX_KEYS", 16)
    calls = spy(bertkit.model, "softmax_in_place")
    q, k, v, mask = short_inputs(mask_rows)
    with torch.no_grad():
        got = short_attention(q, k, v, mask)
    torch.testing.assert_close(got, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               atol=1e-6, rtol=1e-5)
    assert [scores.shape for scores, in calls] == [(12, 7, 7)]


def test_attention_takes_the_short_path_for_short_sequences_without_dropout_only():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    mask[1, ..., 6:] = False
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g) for _ in range(3))
    assert torch.equal(attention(q, k, v, mask, 0.0), short_attention(q, k, v, mask))
    bf16 = [t.bfloat16() for t in (q, k, v)]  # bf16 attends in fp32 on CPU, by the same short path
    assert torch.equal(attention(*bf16, mask, 0.0), short_attention(*(t.float() for t in bf16), mask))
    assert torch.equal(attention(q, k, v, None, 0.0, causal=True),
                       torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.manual_seed(1)  # with dropout, the weights are written out (the same draw of the mask)
    with_dropout = attention(q, k, v, mask, 0.1)
    torch.manual_seed(1)
    assert torch.equal(with_dropout, dropout(attention_weights(q, k, mask), 0.1, True) @ v)
    long = [torch.randn(1, 2, CPU_SHORT_ATTENTION_MAX_LENGTH + 1, 8, generator=g) for _ in range(3)]
    assert torch.equal(attention(*long, None, 0.0), torch.nn.functional.scaled_dot_product_attention(*long))


def test_training_mode_applies_dropout_and_gradients_flow(tiny):
    batch = random_batch(500, [8, 5])
    tiny.train()
    try:
        a = tiny(**batch).last_hidden_state
        b = tiny(**batch).last_hidden_state
        assert not torch.allclose(a, b)
        a.sum().backward()
        assert tiny.embeddings.word.weight.grad is not None
    finally:
        tiny.eval()
        tiny.zero_grad(set_to_none=True)


def test_forward_flops_counts_matrix_products():
    c = preset("tiny")
    one = forward_flops(c, [10])
    assert one == c.num_layers * (2 * (4 * 128 ** 2 + 2 * 128 * 512) * 10 + 4 * 128 * 100)
    assert forward_flops(c, [10, 10]) == 2 * one


def test_minilm_matches_transformers_on_real_sentences(minilm, minilm_dir, sts_sentences):
    from transformers import AutoModel
    model, tokenizer = minilm
    reference = AutoModel.from_pretrained(minilm_dir).eval()
    sentences = sts_sentences[:500]
    worst = {"unpadded": 0.0, "padded": 0.0}
    with torch.no_grad():
        for start in range(0, len(sentences), 50):
            batch = tokenizer.encode(sentences[start:start + 50]).tensors()
            expected = reference(**batch).last_hidden_state
            real = batch["attention_mask"].bool()
            for name, unpad_tokens in (("unpadded", True), ("padded", False)):
                got = model(**batch, unpad_tokens=unpad_tokens).last_hidden_state
                worst[name] = max(worst[name], float((got - expected)[real].abs().max()))
    assert worst["unpadded"] <= 1e-4 and worst["padded"] <= 1e-4, worst
    assert np.isfinite(list(worst.values())).all()


def test_parameter_count_counts_tied_decoder_once():
    from bertkit import add_pretraining_heads
    model = Encoder(preset("tiny", vocab_size=500))
    bare = model.num_parameters()
    add_pretraining_heads(model, mlm=True, nsp=True)
    assert model.num_parameters() == bare
    H = 128
    assert model.num_parameters(include_heads=True) == bare + (H * H + H) + 2 * H + 500 + (2 * H + 2)


def test_layer_out_of_range_is_an_error(tiny):
    batch = random_batch(500, [4])
    with pytest.raises(ValueError, match="layer 3 does not exist.*0..2"):
        tiny(**batch, output_layers=[3])
    with pytest.raises(ValueError, match="layer -4 does not exist"):
        tiny(**batch, output_layers=[-4])


def test_fast_dropout_drops_at_the_asked_rate_and_scales():
    from bertkit.model import dropout, dropout_mask
    torch.manual_seed(0)
    keep = dropout_mask(torch.Size([1000, 1000]), 0.1, torch.device("cpu"))
    assert abs(float(keep.float().mean()) - (1 - 6554 / 65536)) < 1e-3  # p rounded to 6554 / 65536
    x = torch.ones(200, 300, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.75])
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient goes through the same mask and scale
    assert dropout(x, 0.25, training=False) is x


def test_fast_dropout_keeps_an_exact_scale_for_bf16_inputs():
    from bertkit.model import dropout
    x = torch.ones(100, 100, dtype=torch.bfloat16, requires_grad=True)
    y = dropout(x, 0.1, training=True)
    assert y.dtype == torch.float32 and torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.9], rel=1e-6)
    y.sum().backward()
    assert x.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
def test_residual_sum_inside_the_packed_product_is_the_plain_sum_in_fp32_only_and_when_nothing_drops(spy):
    from bertkit.precision import PackedLinear
    fused = spy(PackedLinear, "plus")
    torch.manual_seed(0)
    linear, x, residual = torch.nn.Linear(48, 32), torch.randn(20, 48), torch.randn(20, 32)
    packed = PackedLinear(linear)
    with torch.no_grad():
        for drop in (Dropout(0.5).eval(), Dropout(0.0).train()):
            assert torch.equal(linear_residual(packed, x, residual, drop, None), residual + packed(x))
        assert len(fused) == 2
        dropped = linear_residual(packed, x, residual, Dropout(0.5).train(), None) - residual
        assert 0.3 < (dropped == 0).float().mean() < 0.7  # dropout applies: the plain sum
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # bf16 keeps the plain sum, rounded twice
            packed_bf16, residual_bf16 = PackedLinear(linear, torch.bfloat16), residual.bfloat16()
            got = linear_residual(packed_bf16, x, residual_bf16, Dropout(0.5).eval(), None)
            assert torch.equal(got, residual_bf16 + packed_bf16(x))
    assert len(fused) == 2
