"""Pseudo-log-likelihood: equal to the one-copy-at-a-time transformers loop, both variants."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bertkit import Tokenizer, load_pretrained
from bertkit.cli import main
from bertkit.pseudo_perplexity import corpus_pseudo_perplexity, masked_copies, pseudo_log_likelihoods

transformers = pytest.importorskip("transformers")

SENTENCES = ["The souvenir shop sold antidisestablishmentarianism pamphlets.",
             "A cat sat on the mat.",
             "Unbelievably, the quizzical zookeeper juxtaposed xylophones.",
             "",
             "Yes."]


@pytest.fixture(scope="module")
def models(tmp_path_factory, minilm_dir):
    """A random BERT with an MLM head as transformers holds it, and the same weights in bertkit."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128)
    reference = transformers.BertForMaskedLM(config).eval()
    folder = tmp_path_factory.mktemp("mlm")
    reference.save_pretrained(folder)
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    tokenizer.save(folder)
    return reference, load_pretrained(folder), tokenizer, folder


def naive_pll(reference, tokenizer, sentence: str, word_l2r: bool) -> tuple[float, int]:
    """One masked copy per forward pass, the whole vocabulary at every position (the plain loop)."""
    row = tokenizer.encode([sentence])
    ids, words = row.ids(0), row.word_ids(0)
    total, scored = 0.0, 0
    with torch.no_grad():
        for t, word in enumerate(words):
            if word is None:
                continue
            masked = list(ids)
            for u in range(t, len(ids)):
                if u == t or (word_l2r and words[u] == word):
                    masked[u] = tokenizer.mask_id
                else:
                    break
            logits = reference(torch.tensor([masked])).logits[0, t]
            total += logits.log_softmax(-1)[ids[t]].item()
            scored += 1
    return total, scored


@pytest.mark.parametrize("variant", ["original", "word-l2r"])
def test_equal_to_the_one_copy_at_a_time_loop(models, variant):
    reference, model, tokenizer, _ = models
    scores = pseudo_log_likelihoods(model, tokenizer, SENTENCES, variant=variant, batch_size=7, precision="fp32",
                                    progress=False)
    for sentence, score in zip(SENTENCES, scores):
        pll, scored = naive_pll(reference, tokenizer, sentence, word_l2r=variant == "word-l2r")
        assert score.tokens == scored
        assert score.pll == pytest.approx(pll, rel=1e-5, abs=1e-5)


def test_word_l2r_masks_the_rest_of_the_word_only():
    # [CLS] sou ##ven ##ir shop [SEP], words 0 0 0 1
    ids, words = [101, 1, 2, 3, 4, 102], [None, 0, 0, 0, 1, None]
    assert masked_copies(ids, words, "original") == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert masked_copies(ids, words, "word-l2r") == [(1, 4), (2, 4), (3, 4), (4, 5)]
    with pytest.raises(ValueError, match="variant must be"):
        masked_copies(ids, words, "l2r")


def test_scores_do_not_depend_on_batch_size_or_order(models):
    _, model, tokenizer, _ = models
    one = pseudo_log_likelihoods(model, tokenizer, SENTENCES, batch_size=1, precision="fp32", progress=False)
    many = pseudo_log_likelihoods(model, tokenizer, SENTENCES[::-1], batch_size=64, precision="fp32", progress=False)
    for a, b in zip(one, many[::-1]):
        assert a.tokens == b.tokens and a.pll == pytest.approx(b.pll, rel=1e-5, abs=1e-5)
    assert one[3].tokens == 0 and one[3].pseudo_perplexity is None  # the empty sentence: nothing scored
    expected = math.exp(-sum(s.pll for s in one) / sum(s.tokens for s in one))
    assert corpus_pseudo_perplexity(one) == pytest.approx(expected)


def test_a_model_without_mlm_head_or_a_too_long_sentence_is_refused(models, minilm):
    _, model, tokenizer, _ = models
    with pytest.raises(ValueError, match="no MLM head"):
        pseudo_log_likelihoods(minilm[0], minilm[1], ["a sentence"], progress=False)
    with pytest.raises(ValueError, match="input 0 has 602 tokens"):
        pseudo_log_likelihoods(model, tokenizer, ["word " * 600], progress=False)
    with pytest.raises(ValueError, match="every sentence is empty"):
        corpus_pseudo_perplexity(pseudo_log_likelihoods(model, tokenizer, [""], progress=False))


def test_cli_writes_per_sentence_scores_and_names_the_metric(models, tmp_path, capsys):
    _, model, tokenizer, folder = models
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    code = main(["pseudo-perplexity", "--model", str(folder), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "pll.jsonl"), "--variant", "word-l2r", "--dtype", "fp32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metric"] == "pseudo-perplexity (word-l2r)" and summary["empty_lines"] == 1
    records = [json.loads(line) for line in open(tmp_path / "pll.jsonl", encoding="utf-8")]
    assert len(records) == len(SENTENCES) and records[0]["text"] == SENTENCES[0]  # a record per line
    assert records[3]["tokens"] == 0 and records[3]["pseudo_perplexity"] is None
    scores = pseudo_log_likelihoods(model, tokenizer, SENTENCES, variant="word-l2r", precision="fp32",
                                    progress=False)
    assert [r["pll"] for r in records] == pytest.approx([s.pll for s in scores], rel=1e-6)
    assert summary["pseudo_perplexity"] == pytest.approx(corpus_pseudo_perplexity(scores), rel=1e-6)
    code = main(["pseudo-perplexity", "--model", str(folder), "--input", str(tmp_path / "missing.txt")])
    assert code == 2 and "missing.txt" in capsys.readouterr().err
