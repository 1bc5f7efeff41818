import pytest
import torch
import torch.nn.functional as F

from bertkit import Encoder, add_pretraining_heads, preset
from bertkit import heads
from bertkit.heads import SpanBoundaryHead


def test_mlm_decoder_is_tied_to_the_input_embeddings():
    model = add_pretraining_heads(Encoder(preset("tiny", vocab_size=300)), mlm=True)
    assert model.mlm_head.decoder.weight is model.embeddings.word.weight
    assert model.mlm_head(torch.randn(5, 128)).shape == (5, 300)


def test_nsp_needs_the_pooler():
    with pytest.raises(ValueError, match="needs the pooler"):
        add_pretraining_heads(Encoder(preset("tiny", pooler=False)), nsp=True)


def test_span_boundary_head_shapes_and_long_spans():
    head = SpanBoundaryHead(preset("tiny"), max_span_tokens=8)
    left, right = torch.randn(4, 128), torch.randn(4, 128)
    assert head(left, right, torch.tensor([0, 1, 2, 7])).shape == (4, 128)
    with pytest.raises(ValueError, match="9 tokens long, more than the span boundary head's 8"):
        head(left, right, torch.tensor([0, 8, 1, 1]))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_vocabulary_cross_entropy_equals_cross_entropy_of_the_logits(precision, monkeypatch):
    monkeypatch.setattr(heads, "_CHUNK_BYTES", 4 * 300 * 7)  # 7 rows per chunk: 3 chunks, the last partial
    torch.manual_seed(0)
    x, weight, bias = torch.randn(20, 32), 0.1 * torch.randn(300, 32), torch.randn(300)
    labels = torch.randint(300, (20,))

    def loss_and_grads(loss_fn):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(*leaves)
        (2.5 * loss).backward()
        return [loss.detach()] + [t.grad for t in leaves]

    expected = loss_and_grads(lambda x, w, b: F.cross_entropy(F.linear(x, w, b).float(), labels, reduction="sum"))
    fused = loss_and_grads(lambda x, w, b: heads.vocabulary_cross_entropy(x, w, b, labels))
    tolerance = 1e-5 if precision == "fp32" else 2e-2  # bf16: chunk sums are added in fp32, not rounded once
    for ours, theirs in zip(fused, expected):
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("grad", [True, False])
def test_draws_taken_with_the_loss_equal_draws_from_the_softmax(grad, temperature, monkeypatch):
    """ELECTRA's generator samples from the logits its loss computes, chunk by chunk: the same ids as
    `draw` over the whole softmax of logits / temperature, the same loss and gradients as without
    drawing (the temperature changes the draws only)."""
    monkeypatch.setattr(heads, "_CHUNK_BYTES", 4 * 300 * 7)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(20, 32, requires_grad=grad), torch.randn(300, 32), torch.randn(300)
    labels, uniforms = torch.randint(300, (20,)), torch.rand(20)
    loss, drawn = heads.sampled_vocabulary_cross_entropy(x, weight, bias, labels, uniforms, temperature)
    logits = F.linear(x, weight, bias).detach()
    expected = heads.draw((logits / temperature).softmax(-1), uniforms)
    assert torch.equal(drawn, expected) and len(set(drawn.tolist())) > 10
    if temperature != 1.0:
        assert not torch.equal(drawn, heads.draw(logits.softmax(-1), uniforms))
    torch.testing.assert_close(loss, heads.vocabulary_cross_entropy(x, weight, bias, labels))
    if grad:
        loss.backward()
        with_draws, x.grad = x.grad, None
        heads.vocabulary_cross_entropy(x, weight, bias, labels).backward()
        torch.testing.assert_close(with_draws, x.grad)
