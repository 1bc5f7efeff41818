"""Lexical-sample WSD (NLTK's Senseval "hard" and "interest"): the reader, the nearest sense by hand,
a floor on real data, the command."""

import json

import numpy as np
import pytest

from bertkit.analysis.lexical import nearest_sense_folds, read_senseval, sense_centroids
from bertkit.analysis.wsd import instance_vectors


def test_senseval_files_are_read_with_their_targets_and_senses(data_dir):
    instances, senses = read_senseval(data_dir / "nltk_senseval" / "hard.pos")
    assert len(instances) == len(senses) == 4333  # PROVENANCE.md
    assert senses.count("HARD1") == 3455 and set(senses) == {"HARD1", "HARD2", "HARD3"}
    assert all(i.words[i.index].lower().startswith("hard") for i in instances)  # hard, harder, hardest
    assert {i.lemma for i in instances} == {"hard"} and instances[0].pos == "ADJ"
    interest, _ = read_senseval(data_dir / "nltk_senseval" / "interest.pos")
    assert len(interest) == 2368 and interest[0].words[interest[0].index] == "interest" and interest[0].pos == "NOUN"


def test_nearest_sense_by_hand():
    rng = np.random.default_rng(0)
    centres = {"a": np.eye(4)[0], "b": np.eye(4)[1]}
    senses = ["a"] * 30 + ["b"] * 10
    vectors = np.stack([centres[s] + 0.1 * rng.standard_normal(4) for s in senses])
    for by in ("centroid", "example"):
        got = nearest_sense_folds(vectors, senses, folds=5, by=by)
        assert got["accuracy"] == 1.0 and got["most_frequent_sense"] == pytest.approx(0.75)
        assert got["senses"]["b"] == {"contexts": 10, "accuracy": 1.0}
    # A sense in two opposite clusters: its centroid (their mean) points nowhere in particular; the
    # nearest example still finds the sense.
    points = np.array([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]] * 5 + [[0.0, 1.0], [0.05, 1.0]] * 5)
    labels = ["a"] * 20 + ["b"] * 10
    assert nearest_sense_folds(points, labels, folds=5, by="example")["accuracy"] == 1.0
    assert nearest_sense_folds(points, labels, folds=5, by="centroid")["accuracy"] < 0.8
    unit = sense_centroids(np.array([[2.0, 0], [0, 3.0], [0, 1.0]]), ["x", "y", "y"])
    np.testing.assert_allclose(unit["x"], [1, 0])
    np.testing.assert_allclose(unit["y"], [0, 1])
    with pytest.raises(ValueError, match="folds must be between 2 and the 40 contexts"):
        nearest_sense_folds(vectors, senses, folds=41)


def test_nearest_sense_beats_the_most_frequent_sense_on_interest(minilm, data_dir):
    """Contexts of "interest" (6 senses, the most frequent 53%): sense centroids and nearest tagged
    contexts of MiniLM's last-layer vectors, 5-fold cross-validated, on the first 800 contexts."""
    instances, senses = read_senseval(data_dir / "nltk_senseval" / "interest.pos")
    vectors = instance_vectors(*minilm, instances[:800], [-1], precision="fp32")
    matrix = np.stack([vectors[i.id] for i in instances[:800]])
    centroid, example = (nearest_sense_folds(matrix, senses[:800], by=by) for by in ("centroid", "example"))
    assert centroid["accuracy"] > centroid["most_frequent_sense"] + 0.1, centroid  # all contexts: 0.707 vs 0.529
    assert example["accuracy"] > example["most_frequent_sense"] + 0.2, example  # all contexts: 0.891


def test_a_senseval_file_without_a_head_word_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.pos"
    bad.write_text('<corpus lang="en">\n<lexelt item="hard-a">\n<instance id="x1">\n'
                   '<answer instance="x1" senseid="HARD1"/>\n<context>\n <wf pos="JJ">hard</wf> \n</context>\n'
                   '</instance>\n</lexelt>\n</corpus>\n')
    with pytest.raises(ValueError, match=r"bad.pos: instance 1 \(hard-a\) has no <head> word"):
        read_senseval(bad)


def test_the_lexical_sample_command(minilm_dir, data_dir, tmp_path, capsys):
    from bertkit.cli import main

    hard = tmp_path / "senseval" / "hard.pos"
    hard.parent.mkdir()
    text = (data_dir / "nltk_senseval" / "hard.pos").read_text()
    hard.write_text(text[:text.index("<instance", 40_000)] + "</lexelt>\n</corpus>\n")  # the first contexts
    out = tmp_path / "lexical.json"
    assert main(["analyze", "lexical-sample", "--model", str(minilm_dir), "--data", str(hard), "--output",
                 str(out), "--dtype", "fp32"]) == 0
    got = json.loads(out.read_text())["results"][str(hard)]
    assert got["centroid"]["contexts"] == hard.read_text().count("<instance ") and 0 <= got["example"]["accuracy"] <= 1
    assert (tmp_path / "lexical-hard.png").stat().st_size
    assert "most frequent sense" in capsys.readouterr().out
