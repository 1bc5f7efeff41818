import pytest
import torch

from bertkit import Encoder, add_pretraining_heads, preset
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
