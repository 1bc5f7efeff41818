import pytest
import torch

from bertkit import Encoder, Tokenizer, add_pretraining_heads, load_pretrained, preset
from bertkit.fill_mask import fill_mask

transformers = pytest.importorskip("transformers")


def test_fill_mask_matches_transformers(tmp_path, minilm_dir):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128)
    reference = transformers.BertForMaskedLM(config).eval()
    reference.save_pretrained(tmp_path)
    model, tokenizer = load_pretrained(tmp_path), Tokenizer.from_pretrained(minilm_dir)
    text = "the capital of [MASK] is [MASK] ."
    got = fill_mask(model, tokenizer, text, top_k=3)
    batch = tokenizer.encode([text]).tensors()
    with torch.no_grad():
        probs = reference(**batch).logits[0].softmax(-1)
    positions = (batch["input_ids"][0] == tokenizer.mask_id).nonzero().flatten()
    assert len(got) == 2
    for candidates, position in zip(got, positions):
        top = probs[position].topk(3)
        assert [c.token_id for c in candidates] == top.indices.tolist()
        assert [c.probability for c in candidates] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_fill_mask_needs_a_head_and_a_mask(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match="no MLM head"):
        fill_mask(model, tokenizer, "a [MASK]")
    with_head = add_pretraining_heads(Encoder(preset("tiny")), mlm=True)
    with pytest.raises(ValueError, match="no \\[MASK\\] token"):
        fill_mask(with_head, tokenizer, "nothing to fill")
