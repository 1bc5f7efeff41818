"""The causal encoder (recipe arlm): equal to transformers' BertLMHeadModel, a next-token loss, and
reproducible generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from bertkit import Encoder, Tokenizer, load_pretrained, preset, save_pretrained
from bertkit.data.batches import MaskingSpec
from bertkit.generate import Sampling, generate, generate_ids, next_token_probabilities
from bertkit.heads import add_pretraining_heads
from bertkit.train.pretrain import Pretrainer


def causal_model(vocab_size: int = 200, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=vocab_size, max_position_embeddings=64, causal=True)
    return add_pretraining_heads(Encoder(config), mlm=True).eval()


def padded_batch(vocab_size: int = 200, lengths=(12, 5, 9)) -> dict:
    g = torch.Generator().manual_seed(1)
    T = max(lengths)
    ids = torch.randint(5, vocab_size, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def test_causal_encoder_equals_transformers_bert_lm_head_model(tmp_path):
    model = causal_model()
    save_pretrained(model, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(theirs).__name__ == "BertLMHeadModel" and theirs.config.is_decoder
    batch = padded_batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = theirs(**batch).logits
        for unpad in (True, False):
            ours = model.mlm_head(model(**batch, unpad_tokens=unpad).last_hidden_state)
            assert torch.allclose(ours[real], expected[real], atol=1e-5)
    assert load_pretrained(tmp_path).config.causal  # is_decoder read back


def test_a_token_never_sees_the_tokens_after_it():
    model = causal_model()
    batch = padded_batch(lengths=(12,))
    changed = batch["input_ids"].clone()
    changed[0, 7:] = 3
    with torch.no_grad():
        for explicit in (False, True):  # SDPA's causal path and the explicit weights (output_attentions)
            a = model(**batch, output_attentions=explicit).last_hidden_state
            b = model(changed, batch["attention_mask"], output_attentions=explicit).last_hidden_state
            assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6) and not torch.allclose(a[0, 7:], b[0, 7:])
        weights = model(**batch, output_attentions=True).attentions[0]
        assert float(weights[0].triu(1).abs().max()) == 0.0


def test_next_token_loss_equals_shifted_cross_entropy():
    model = causal_model()
    batch = padded_batch()
    masked = MaskingSpec(kind="causal", pad_id=0).apply(batch["input_ids"], torch.Generator())
    assert torch.equal(masked.input_ids, batch["input_ids"])
    loss = Pretrainer(model)({**batch, "labels": masked.labels})
    assert set(loss) == {"lm"}
    with torch.no_grad():
        logits = model.mlm_head(model(**batch).last_hidden_state)
    expected = 0.0
    for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):  # token t + 1 from position t, real tokens only
        expected += F.cross_entropy(logits[row, :n - 1], batch["input_ids"][row, 1:n], reduction="sum")
    assert torch.allclose(loss["lm"], expected, rtol=1e-5)


def test_the_closing_sep_of_a_packed_block_is_not_a_target():
    ids = torch.tensor([[2, 11, 12, 13, 3], [2, 11, 3, 0, 0]])  # [CLS] ... [SEP], the second padded
    labels = MaskingSpec(kind="causal", pad_id=0, sep_id=3).apply(ids, torch.Generator()).labels
    assert labels.tolist() == [[11, 12, 13, -100, -100], [11, -100, -100, -100, -100]]


def test_generate_on_the_command_line(tmp_path, minilm_dir, capsys):
    from bertkit.cli import main

    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    save_pretrained(causal_model(vocab_size=tokenizer.vocab_size), tmp_path)
    tokenizer.save(tmp_path)
    args = ["generate", "--model", str(tmp_path), "the river", "--max-new-tokens", "5", "--dtype", "fp32"]
    assert main(args + ["--temperature", "1", "--top-k", "20", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(args + ["--temperature", "1", "--top-k", "20", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first and first.strip()
    assert main(args + ["--top-k", "20"]) != 0
    assert "give a temperature > 0 with them" in capsys.readouterr().err


def test_top_k_and_top_p_keep_what_they_say():
    logits = torch.tensor([0.5, 0.1, 0.25, 0.15]).log()
    assert torch.allclose(next_token_probabilities(logits, Sampling(1.0)), torch.tensor([0.5, 0.1, 0.25, 0.15]))
    assert torch.allclose(next_token_probabilities(logits, Sampling(1.0, top_k=2)), torch.tensor([2 / 3, 0, 1 / 3, 0]))
    # nucleus 0.7: 0.5 alone falls short, 0.5 + 0.25 reaches it: the two are kept
    assert torch.allclose(next_token_probabilities(logits, Sampling(1.0, top_p=0.7)), torch.tensor([2 / 3, 0, 1 / 3, 0]))
    assert torch.allclose(next_token_probabilities(logits, Sampling(1.0, top_p=0.5)), torch.tensor([1.0, 0, 0, 0]))
    # top-p reads the top-k distribution renormalised (transformers' order): 0.5 / 0.75 = 0.67 >= 0.6
    assert torch.allclose(next_token_probabilities(logits, Sampling(1.0, top_k=2, top_p=0.6)), torch.tensor([1.0, 0, 0, 0]))
    with pytest.raises(ValueError, match="top_p must be in"):
        Sampling(1.0, top_p=0.0)


def test_greedy_generation_equals_transformers_generate(tmp_path):
    model = causal_model()
    save_pretrained(model, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = [2, 17, 45, 99]
    ours = generate_ids(model, prompt, 10)
    with torch.no_grad():
        expected = theirs.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert ours == expected[0].tolist()


def test_sampling_with_a_seed_is_reproducible(minilm_dir):
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    model = causal_model(vocab_size=tokenizer.vocab_size)
    sampling = Sampling(temperature=1.0, top_k=50, top_p=0.9)
    texts = [generate(model, tokenizer, "the river bank", 12, sampling, seed=s, stop_at_sep=False) for s in (0, 0, 1)]
    assert texts[0] == texts[1] and texts[0] != texts[2]
    assert len(tokenizer.tokens(texts[0])) > 2


def test_generation_refuses_a_bidirectional_model(minilm):
    model, tokenizer = minilm
    with pytest.raises(ValueError, match="not a causal LM"):
        generate(model, tokenizer, "hello")


def test_perplexity_of_a_bertkit_causal_lm_equals_the_transformers_path(tmp_path, minilm_dir, data_dir, monkeypatch):
    import sys

    from bertkit.perplexity import hf_causal_lm, load_causal_lm, text_perplexity

    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    save_pretrained(causal_model(vocab_size=tokenizer.vocab_size), tmp_path)
    tokenizer.save(tmp_path)
    text = (data_dir / "wikitext2" / "raw" / "wiki.valid.raw").read_text(encoding="utf-8")[:3000]
    with monkeypatch.context() as patch:  # read natively: transformers is not needed
        patch.setitem(sys.modules, "transformers", None)
        ours = load_causal_lm(tmp_path, precision="fp32")
    theirs = hf_causal_lm(transformers.AutoModelForCausalLM.from_pretrained(tmp_path),
                          transformers.AutoTokenizer.from_pretrained(tmp_path), "fp32")
    assert ours.encode(text)[0] == theirs.encode(text)[0] and len(ours.encode(text)[0]) > 64
    a = text_perplexity(ours, text, max_length=48, stride=16)
    b = text_perplexity(theirs, text, max_length=48, stride=16)
    assert a.predicted == b.predicted and a.perplexity == pytest.approx(b.perplexity, rel=1e-5)


def test_generation_stops_at_a_stop_token_and_at_the_last_position():
    model = causal_model()  # 64 positions
    prompt = [2, 17, 45, 99]
    first = generate_ids(model, prompt, 1)[-1]
    assert generate_ids(model, prompt, 10, stop_ids=frozenset({first})) == prompt + [first]  # kept, then stopped
    near = list(range(5, 5 + 63))  # one position left
    assert len(generate_ids(model, near, 10)) == 64
    with pytest.raises(ValueError, match="the prompt has 64 tokens, the model's positions end at 64"):
        generate_ids(model, near + [7], 10)
