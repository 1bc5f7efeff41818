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


# ------------------------------------------------------------------------------- attribution


@pytest.fixture(scope="module")
def classifier(minilm_dir):
    """all-MiniLM-L6-v2 with a new (random) two-label head: attribution needs no trained head."""
    import bertkit
    from bertkit.tasks.kind import TaskSpec
    from bertkit.tasks.model import TaskModel

    torch.manual_seed(0)
    spec = TaskSpec(task="classify", labels=("neg", "pos"), reader={"text_column": "sentence", "label_column": "label"})
    return TaskModel(bertkit.load_pretrained(minilm_dir), spec).eval()


TEXT = "An unbelievably tedious film, though the acting is superb."


def test_integrated_gradients_are_complete(classifier, minilm):
    """The attributions sum to the output minus the output at the baseline, both computed here
    through the model's own prediction path, within Captum's convergence delta."""
    from bertkit.explain import word_importance

    tokenizer = minilm[1]
    got = word_importance(classifier, tokenizer, TEXT, label="pos", steps=64)
    batch = tokenizer.encode([TEXT]).tensors()
    baseline = batch["input_ids"].clone()
    baseline[0, 1:-1] = tokenizer.pad_id  # every word token replaced, [CLS] and [SEP] kept
    with torch.no_grad():
        output = float(classifier.scores(batch).softmax(-1)[0, 1])
        at_baseline = float(classifier.scores({**batch, "input_ids": baseline}).softmax(-1)[0, 1])
    assert got.output == pytest.approx(output, abs=1e-6) and got.baseline_output == pytest.approx(at_baseline, abs=1e-6)
    total = got.scores["integrated_gradients"].sum() + got.special
    assert abs(total - (output - at_baseline) - got.delta) <= 1e-5
    assert abs(got.delta) <= 0.01 * abs(output - at_baseline) + 1e-6


def test_subword_scores_are_summed_to_words_and_occlusion_masks_whole_words(classifier, minilm):
    from bertkit.explain import word_importance

    tokenizer = minilm[1]
    got = word_importance(classifier, tokenizer, TEXT, label="pos")
    assert got.words == ["An", "unbelievably", "tedious", "film,", "though", "the", "acting", "is", "superb."]
    assert len(tokenizer.tokens("unbelievably")) > 1  # a word of several subwords
    batch = tokenizer.encode([TEXT]).tensors()
    word_ids = tokenizer.encode([TEXT]).word_ids(0)
    masked = batch["input_ids"].clone()
    masked[0, [t for t, w in enumerate(word_ids) if w == 1]] = tokenizer.mask_id  # every subword of "unbelievably"
    with torch.no_grad():
        fall = float(classifier.scores(batch).softmax(-1)[0, 1] - classifier.scores(
            {**batch, "input_ids": masked}).softmax(-1)[0, 1])
    assert got.scores["occlusion"][1] == pytest.approx(fall, abs=1e-6)
    assert all(len(v) == len(got.words) for v in got.scores.values())


def test_word_importance_refuses_what_it_cannot_explain(classifier, minilm):
    from bertkit.explain import word_importance
    from bertkit.tasks.kind import TaskSpec
    from bertkit.tasks.model import TaskModel

    tokenizer = minilm[1]
    with pytest.raises(ValueError, match="label 'maybe' is not one of the model's: neg, pos"):
        word_importance(classifier, tokenizer, TEXT, label="maybe")
    with pytest.raises(ValueError, match="reads single texts, not pairs"):
        word_importance(classifier, tokenizer, TEXT, pair="A second text.")
    with pytest.raises(ValueError, match="unknown attribution method 'attention'"):
        word_importance(classifier, tokenizer, TEXT, methods=["attention"])
    tagger = TaskModel(classifier.encoder, TaskSpec(task="tag", labels=("B-X", "I-X", "O")))
    with pytest.raises(ValueError, match="this is a tag model"):
        word_importance(tagger, tokenizer, TEXT)
    regressor = TaskModel(classifier.encoder, TaskSpec(task="regress"))
    with pytest.raises(ValueError, match="a regression model has one output"):
        word_importance(regressor, tokenizer, TEXT, label="pos")


def test_words_without_tokens_are_listed_not_scored_and_long_inputs_are_cut(classifier, minilm):
    """A lone zero-width space stands for no token: it is listed as unscored, not ranked with a 0;
    an input beyond the model's max_length is cut, and the words cut off are unscored too."""
    from dataclasses import replace

    from bertkit.explain import attention_vs_attribution, word_importance
    from bertkit.tasks.model import TaskModel

    tokenizer = minilm[1]
    got = word_importance(classifier, tokenizer, "good \u200b film", steps=8)
    assert got.words == ["good", "film"] and got.unscored == ["\u200b"]
    assert all(len(v) == 2 for v in got.scores.values())
    short = TaskModel(classifier.encoder, replace(classifier.spec, max_length=8), head=classifier.head)
    with pytest.warns(UserWarning, match="truncated 1 of 1 inputs to 8 tokens"):
        record = attention_vs_attribution(short, tokenizer, TEXT, permutations=3, steps=8)
    assert record["truncated"] and record["words"] == ["An", "unbelievably"]  # 6 word tokens fit
    assert record["unscored"] == TEXT.split()[2:]


def test_pair_and_regression_models_are_explained(classifier, minilm):
    from bertkit.explain import word_importance
    from bertkit.tasks.kind import TaskSpec
    from bertkit.tasks.model import TaskModel

    tokenizer = minilm[1]
    torch.manual_seed(0)
    regressor = TaskModel(classifier.encoder, TaskSpec(task="regress", pair=True)).eval()
    got = word_importance(regressor, tokenizer, "A man plays a guitar.", pair="Someone makes music.", steps=64)
    assert got.label is None and got.words == ["A", "man", "plays", "a", "guitar.", "Someone", "makes", "music."]
    with torch.no_grad():
        score = float(regressor.scores(tokenizer.encode(["A man plays a guitar."], ["Someone makes music."]).tensors())[0, 0])
    assert got.output == pytest.approx(score, abs=1e-6)
    total = got.scores["integrated_gradients"].sum() + got.special
    assert abs(total - (got.output - got.baseline_output) - got.delta) <= 1e-5


def test_edit_attention_is_what_the_layer_attends_with(minilm, batch):
    model = minilm[0]
    with torch.no_grad():
        plain = model(**batch).last_hidden_state
        same = model(**batch, edit_attention=lambda layer, w: w).last_hidden_state
        uniform = model(**batch, edit_attention=lambda layer, w: torch.full_like(w, 1 / w.shape[-1]) if layer == 6 else w,
                        unpad_tokens=False).last_hidden_state
    real = batch["attention_mask"].bool()
    assert float((same - plain)[real].abs().max()) <= 1e-5
    assert float((uniform - plain)[real].abs().max()) > 0.1  # the last layer now attends evenly


def test_analyze_attention_vs_attribution(classifier, minilm, data_dir, tmp_path, capsys):
    import json

    from bertkit.cli import main
    from bertkit.tasks.model import save_task_model

    save_task_model(classifier, minilm[1], tmp_path / "model")
    out = tmp_path / "analysis"
    code = main(["analyze", "attention-vs-attribution", "--model", str(tmp_path / "model"),
                 "--data", str(data_dir / "sst2" / "dev.tsv"), "--out", str(out), "--limit", "4",
                 "--permutations", "5", "--steps", "16"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and records[0]["text"].startswith("it 's a charming")
    for r in records:
        assert all(-1 <= t <= 1 for t in r["tau"].values()) and 0 <= r["flip_share"] <= 1
        assert len(r["words"]) == len(r["text"].split())  # SST-2 is tokenized: its words are the words
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 4 and summary["attention~occlusion"]["inputs"] == 4
    assert (out / "kendall-tau.png").stat().st_size > 0 and (out / "permutation.png").stat().st_size > 0


def test_analyze_refuses_a_regression_model(classifier, minilm, data_dir, tmp_path, capsys):
    from bertkit.cli import main
    from bertkit.tasks.kind import TaskSpec
    from bertkit.tasks.model import TaskModel, save_task_model

    stsb = {"text_column": 5, "pair_column": 6, "label_column": 4, "header": False, "delimiter": "\t"}
    save_task_model(TaskModel(classifier.encoder, TaskSpec(task="regress", pair=True, reader=stsb)), minilm[1],
                    tmp_path / "model")
    code = main(["analyze", "attention-vs-attribution", "--model", str(tmp_path / "model"),
                 "--data", str(data_dir / "stsb" / "sts-dev.csv"), "--out", str(tmp_path / "a"), "--limit", "1"])
    assert code == 2 and "explain a classifier's label; this is a regress model" in capsys.readouterr().err


def test_explain_prints_the_words_and_writes_a_self_contained_page(classifier, minilm, tmp_path, capsys):
    import json
    import re

    from bertkit.cli import main
    from bertkit.tasks.model import save_task_model

    save_task_model(classifier, minilm[1], tmp_path / "model")
    page = tmp_path / "why.html"
    code = main(["explain", "--model", str(tmp_path / "model"), TEXT, "--html", str(page), "--steps", "16",
                 "--label", "neg"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("neg (probability ") and "unbelievably[" in out and "superb.[" in out  # no colour: not a tty
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", text)  # nothing fetched from outside
    data = json.loads(re.search(r"const D = (\{.*?\});\n", text).group(1).replace("<\\/", "</"))
    assert data["words"][1] == "unbelievably" and set(data["rows"]) == {
        "integrated_gradients", "gradient_x_input", "occlusion", "attention", "rollout"}
    assert len(data["attention"]) == 6 and len(data["attention"][0]) == 12 and len(data["rollout"]) == len(data["tokens"])
