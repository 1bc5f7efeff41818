import json
import math

import numpy as np
import pytest
import torch

from bertkit.bertscore import (bertscore, compute_baseline, default_layer, idf_table, load_baseline, match, rescale,
                               save_baseline, score_layers, text_token_ids, token_vectors, token_weights, windows)
from bertkit.cli import main

PARITY_LAYER = 4  # every best match is positive there, where bert_score's padded maximum is exact (see below)


def sts_pairs(data_dir, limit=None):
    """(candidates, references, human scores) of STS-B dev: sentence 1 against sentence 2."""
    rows = [line.rstrip("\n").split("\t") for line in open(data_dir / "stsb" / "sts-dev.csv", encoding="utf-8")]
    rows = rows[:limit]
    return [r[5] for r in rows], [r[6] for r in rows], [float(r[4]) for r in rows]


def naive_pair(c: np.ndarray, r: np.ndarray, wc: np.ndarray, wr: np.ndarray) -> tuple[float, float, float]:
    """One pair by the definition, with loops: (Tc, H), (Tr, H) unit vectors, their weights."""
    best_c = [max(float(ci @ rj) for rj in r) for ci in c]
    best_r = [max(float(ci @ rj) for ci in c) for rj in r]
    p = sum(w * b for w, b in zip(wc, best_c)) / sum(wc)
    rr = sum(w * b for w, b in zip(wr, best_r)) / sum(wr)
    return p, rr, 2 * p * rr / (p + rr)


def test_matching_equals_the_definition_pair_by_pair():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, 9)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    vectors = torch.nn.functional.normalize(torch.randn(int(lengths.sum()), 2, 8, dtype=torch.float64,
                                                        generator=torch.Generator().manual_seed(0)), dim=-1).float()
    weights = rng.random(int(lengths.sum()))
    cand, ref = rng.integers(0, 9, 20), rng.integers(0, 9, 20)
    P, R, F = match(vectors, offsets, weights, cand, ref)
    for layer in range(2):
        for n, (c, r) in enumerate(zip(cand, ref)):
            at = lambda t: slice(offsets[t], offsets[t + 1])  # noqa: E731
            expected = naive_pair(vectors[at(c), layer].double().numpy(), vectors[at(r), layer].double().numpy(),
                                  weights[at(c)], weights[at(r)])
            assert (P[layer, n], R[layer, n], F[layer, n]) == pytest.approx(expected, abs=1e-6)


def test_special_tokens_weigh_zero_but_take_part_in_the_maximum():
    # candidate [CLS] x [SEP], reference [CLS] y [SEP]; x is nearest to the reference's [SEP]
    v = torch.tensor([[1.0, 0, 0], [0, 0.6, 0.8], [0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    offsets = np.array([0, 3, 6])
    weights, _ = token_weights([np.array([101, 7, 102]), np.array([101, 8, 102])], np.array([101, 102]), None)
    assert weights.tolist() == [0, 1, 0, 0, 1, 0]
    P, R, _ = match(v[:, None, :], offsets, weights, np.array([0]), np.array([1]))
    assert P[0, 0] == pytest.approx(0.8)  # x's best match is the reference's [SEP] (0.8), not y (0.6)
    assert R[0, 0] == pytest.approx(0.6)


def test_idf_follows_the_formula_and_zeroes_special_tokens():
    refs = [np.array([101, 5, 6, 102]), np.array([101, 5, 5, 102]), np.array([101, 7, 102])]
    table = idf_table(refs, vocab_size=200)
    assert table[5] == pytest.approx(math.log(4 / 3))  # in 2 of 3 references (twice in one: counted once)
    assert table[6] == pytest.approx(math.log(4 / 2)) and table[9] == pytest.approx(math.log(4))  # unseen: log(M + 1)
    assert table[101] == table[102] == 0.0
    weights, unweighted = token_weights([np.array([101, 5, 102]), np.array([101, 102])], np.array([101, 102]),
                                        np.zeros(200))
    assert weights.tolist() == [0, 1, 0, 0, 0] and unweighted == 1  # all idf 0: equal weights; empty: not counted


def test_windows_read_each_token_where_it_has_most_context():
    bounds, source = windows(10, size=4, stride=1)
    assert bounds.tolist() == [[0, 4], [3, 7], [6, 10]]
    assert source.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # token 3: no context either way in 0 and 1: the earlier
    for length in range(0, 40):
        bounds, source = windows(length, size=7, stride=3)
        assert bounds[0, 0] == 0 and bounds[-1, 1] == length and (bounds[1:, 0] == bounds[:-1, 1] - 3).all()
        for p in range(length):
            context = [min(p - s, e - 1 - p) if s <= p < e else -1 for s, e in bounds]
            assert source[p] == int(np.argmax(context))


def test_long_texts_are_windowed_and_short_ones_untouched(minilm, sts_sentences):
    model, tokenizer = minilm
    text = " ".join(sts_sentences[:12])  # about 130 tokens
    ids = text_token_ids(tokenizer, [text])
    vectors, _, windowed = token_vectors(model, tokenizer, ids, [3], precision="fp32", progress=False)
    with torch.no_grad():
        plain = model(torch.from_numpy(ids[0])[None], output_layers=[3]).layers[3][0]
    assert windowed == 0 and torch.allclose(vectors[:, 0], torch.nn.functional.normalize(plain, dim=-1), atol=1e-6)
    # a 50-token window: each token's vector is the one from its window of most context
    vectors, _, windowed = token_vectors(model, tokenizer, ids, [3], precision="fp32", max_length=50, stride=16,
                                         progress=False)
    bounds, source = windows(len(ids[0]) - 2, 48, 16)
    assert windowed == 1 and len(bounds) > 2
    cls, sep = tokenizer.role_id("cls"), tokenizer.role_id("sep")
    for k, (s, e) in enumerate(bounds):
        window = torch.tensor([cls, *ids[0][1 + s:1 + e], sep])[None]
        with torch.no_grad():
            expected = torch.nn.functional.normalize(model(window, output_layers=[3]).layers[3][0], dim=-1)
        mine = np.flatnonzero(source == k)
        assert torch.allclose(vectors[1 + mine, 0], expected[1 + mine - s], atol=1e-6)
        if k == 0:
            assert torch.allclose(vectors[0, 0], expected[0], atol=1e-6)  # [CLS] from the first window
    assert torch.allclose(vectors[-1, 0], expected[-1], atol=1e-6)  # [SEP] from the last


def test_a_text_longer_than_512_tokens_is_scored_whole(minilm, sts_sentences):
    model, tokenizer = minilm
    long = " ".join(sts_sentences[:200])  # about 1,500 tokens: three windows
    assert len(tokenizer.tokens(long)) > 1200
    half = " ".join(sts_sentences[:100])  # windowed too
    scores = bertscore(model, tokenizer, [long, half], [long, long], layer=-1, precision="fp32", progress=False)
    assert scores.windowed == 2
    assert scores.precision[0] == pytest.approx(1.0, abs=1e-5) and scores.f1[0] == pytest.approx(1.0, abs=1e-5)
    assert scores.recall[1] < scores.precision[1]  # half the text is missing from the candidate


def test_empty_candidate_or_reference_scores_zero(minilm):
    model, tokenizer = minilm
    scores = bertscore(model, tokenizer, ["", "A cat.", "   ", "A dog runs."], ["A cat.", "", "", "A dog runs."],
                       layer=4, idf=True, progress=False)
    assert scores.empty == 3 and not np.isnan(scores.f1).any()
    assert scores.precision[:3].tolist() == scores.recall[:3].tolist() == scores.f1[:3].tolist() == [0.0] * 3
    assert scores.f1[3] == pytest.approx(1.0, abs=1e-5)


def test_scores_do_not_depend_on_order_or_batch_size(minilm, data_dir):
    """In fp32: under bf16 autocast a matrix product's rounding depends on the batch it is in."""
    model, tokenizer = minilm
    cands, refs, _ = sts_pairs(data_dir, 60)
    base = bertscore(model, tokenizer, cands, refs, layer=4, idf=True, batch_size=64, precision="fp32",
                     progress=False)
    order = np.random.default_rng(0).permutation(60)
    shuffled = bertscore(model, tokenizer, [cands[i] for i in order], [refs[i] for i in order], layer=4, idf=True,
                         batch_size=64, precision="fp32", progress=False)
    one = bertscore(model, tokenizer, cands, refs, layer=4, idf=True, batch_size=1, precision="fp32",
                    progress=False)
    for name in ("precision", "recall", "f1"):
        assert np.array_equal(getattr(shuffled, name), getattr(base, name)[order])  # exactly: texts in their own order
        assert np.abs(getattr(one, name) - getattr(base, name)).max() < 1e-6


@pytest.mark.parametrize("idf", [False, True])
def test_equals_the_bert_score_package_on_sts_dev(minilm, minilm_dir, data_dir, idf):
    bert_score = pytest.importorskip("bert_score")
    model, tokenizer = minilm
    cands, refs, _ = sts_pairs(data_dir, 500)
    theirs = bert_score.score(cands, refs, model_type=str(minilm_dir), num_layers=PARITY_LAYER, idf=idf, nthreads=1)
    ours = bertscore(model, tokenizer, cands, refs, layer=PARITY_LAYER, idf=idf, precision="fp32", progress=False)
    for mine, other in zip((ours.precision, ours.recall, ours.f1), theirs):
        assert np.abs(mine - other.numpy()).max() < 1e-4


def test_bert_score_padding_is_the_only_difference_at_the_last_layer(minilm, minilm_dir, data_dir):
    """At the last layer some tokens have only negative similarities. bert_score then takes 0 from
    a padded position, when the partner is shorter than the longest of its batch: with a batch of
    one pair (no padding) it equals bertkit, with its default batch it does not."""
    bert_score = pytest.importorskip("bert_score")
    model, tokenizer = minilm
    cands, refs, gold = sts_pairs(data_dir)
    unrelated = [i for i in np.argsort(gold, kind="stable")[:24]]
    cands, refs = [cands[i] for i in unrelated], [refs[i] for i in unrelated]
    ours = bertscore(model, tokenizer, cands, refs, layer=6, precision="fp32", progress=False)
    alone = bert_score.score(cands, refs, model_type=str(minilm_dir), num_layers=6, batch_size=1)
    batched = bert_score.score(cands, refs, model_type=str(minilm_dir), num_layers=6, batch_size=64)
    assert np.abs(ours.f1 - alone[2].numpy()).max() < 1e-4
    assert np.abs(ours.f1 - batched[2].numpy()).max() > 1e-3


def test_default_layer(minilm, minilm_dir, tmp_path):
    model, _ = minilm
    assert default_layer(model, minilm_dir)[0] == 6  # sentence-transformers: the last
    assert default_layer(model, tmp_path) == (5, "3/4 of the model's 6 layers, rounded up (bert_score's rule of thumb)")


def test_baseline_measured_saved_checked_and_applied(minilm, sts_sentences, tmp_path):
    model, tokenizer = minilm
    baseline = compute_baseline(model, tokenizer, sts_sentences[:400], pairs=300, seed=1, progress=False)
    assert [row["layer"] for row in baseline["layers"]] == list(range(7))
    again = compute_baseline(model, tokenizer, sts_sentences[:400], pairs=300, seed=1, progress=False)
    assert again["layers"] == baseline["layers"]  # seeded
    save_baseline(tmp_path / "b.json", baseline, corpus="sts")
    loaded = load_baseline(tmp_path / "b.json", model, tokenizer)
    rng = np.random.default_rng(5)
    first, second = rng.integers(400, 800, 200), rng.integers(400, 800, 200)
    raw = score_layers(model, tokenizer, [sts_sentences[i] for i in first], [sts_sentences[i] for i in second],
                       layers=[6], progress=False)[6]
    scaled = rescale(raw, loaded)
    b = loaded["layers"][6]["F"]
    assert scaled.rescaled and np.allclose(scaled.f1, (raw.f1 - b) / (1 - b))
    assert abs(scaled.f1.mean()) < 0.1 < raw.f1.mean()  # other random pairs: about 0 once rescaled
    with pytest.raises(ValueError, match="measured without idf but the scores are with it"):
        rescale(score_layers(model, tokenizer, ["a"], ["b"], layers=[6], idf=True, progress=False)[6], loaded)
    with pytest.raises(ValueError, match="no row for layer 9"):
        rescale(raw.__class__(raw.precision, raw.recall, raw.f1, 9, False, False), loaded)
    with torch.no_grad():
        model.embeddings.norm.bias.add_(1.0)
    try:
        with pytest.raises(ValueError, match="measured with another model or tokenizer"):
            load_baseline(tmp_path / "b.json", model, tokenizer)
    finally:
        with torch.no_grad():
            model.embeddings.norm.bias.sub_(1.0)
    (tmp_path / "other.json").write_text('{"layers": []}')
    with pytest.raises(ValueError, match="not a bertkit BERTScore baseline"):
        load_baseline(tmp_path / "other.json", model, tokenizer)


def test_baseline_then_bertscore_from_the_command_line(capsys, minilm_dir, sts_sentences, tmp_path):
    (tmp_path / "corpus.txt").write_text("\n".join(sts_sentences[:200]) + "\n\n", encoding="utf-8")
    (tmp_path / "cands.txt").write_text("A man is playing a guitar.\nA cat sleeps.\n\n", encoding="utf-8")
    (tmp_path / "refs.txt").write_text("Someone plays the guitar.\nThe stock market fell.\nNothing.\n", encoding="utf-8")
    assert main(["bertscore-baseline", "--model", str(minilm_dir), "--corpus", str(tmp_path / "corpus.txt"),
                 "--output", str(tmp_path / "baseline.json"), "--pairs", "100"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["layer", "P", "R", "F"] and len(out.splitlines()) == 8
    assert "1 blank lines skipped" in err
    assert main(["bertscore", "--model", str(minilm_dir), "--candidates", str(tmp_path / "cands.txt"),
                 "--references", str(tmp_path / "refs.txt"), "--baseline", str(tmp_path / "baseline.json"),
                 "--output", str(tmp_path / "scores.jsonl")]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["pairs"] == 3 and summary["layer"] == 6 and "sentence-transformers" in summary["layer_choice"]
    assert summary["empty_pairs"] == 1 and "1 pairs have an empty candidate or reference" in err
    lines = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3] and lines[0]["f1"] > lines[1]["f1"]
    (tmp_path / "short.txt").write_text("one line\n", encoding="utf-8")
    assert main(["bertscore", "--model", str(minilm_dir), "--candidates", str(tmp_path / "cands.txt"),
                 "--references", str(tmp_path / "short.txt")]) == 2
    err = capsys.readouterr().err
    assert "cands.txt has 3 lines but" in err and "short.txt has 1" in err
    assert main(["bertscore", "--model", str(minilm_dir), "--candidates", str(tmp_path / "cands.txt"),
                 "--references", str(tmp_path / "refs.txt"), "--idf", "--baseline", str(tmp_path / "baseline.json")]) == 2
    assert "measured without idf" in capsys.readouterr().err
