"""WiC: the reader and its errors, the threshold by hand, the pair file finetune reads, a floor on
real data, the command."""

import json

import numpy as np
import pytest

from bertkit.analysis.wic import fit_threshold, read_wic, target_vectors, threshold_accuracy, write_pair_file


def test_wic_files_and_their_errors(data_dir, tmp_path):
    folder = data_dir / "wic" / "dev"
    pairs = read_wic(folder / "dev.data.txt", folder / "dev.gold.txt")
    assert len(pairs) == 638 and sum(p.same for p in pairs) == 319
    assert all(p.first[p.first_index].lower()[:3] == p.word.lower()[:3] or p.pos == "V" for p in pairs[:50])
    data, gold = tmp_path / "x.data.txt", tmp_path / "x.gold.txt"
    data.write_text("bank\tN\t0-1\tbank of a river\tthe bank rates\nbank\tN\t0-9\ta bank\tthe bank\n")
    with pytest.raises(ValueError, match=r"x.data.txt:2: index 0-9 is outside the sentences \(2 and 2 words\)"):
        read_wic(data)
    data.write_text("bank\tN\t0-1\tbank of a river\n")
    with pytest.raises(ValueError, match=r"x.data.txt:1: expected 5 tab-separated fields"):
        read_wic(data)
    data.write_text("bank\tN\t0-1\tbank of a river\tthe bank rates\n")
    gold.write_text("T\nF\n")
    with pytest.raises(ValueError, match="x.gold.txt has 2 labels but .*x.data.txt has 1 pairs"):
        read_wic(data, gold)
    gold.write_text("yes\n")
    with pytest.raises(ValueError, match=r"x.gold.txt:1: expected T or F, got 'yes'"):
        read_wic(data, gold)


def test_the_threshold_by_hand():
    cosines = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert fit_threshold(cosines, [False, False, True, True, True]) == pytest.approx(0.25)
    assert threshold_accuracy(cosines, [False, False, True, True, True], 0.25) == 1.0
    assert threshold_accuracy(cosines, [False, False, True, False, True], fit_threshold(
        cosines, [False, False, True, False, True])) == 0.8  # the best any threshold does here
    assert fit_threshold(cosines, [True] * 5) < 0.1 and fit_threshold(cosines, [False] * 5) >= 0.5
    tied = np.array([0.0, 0.0, 0.0, 0.9])  # never a cut between equal cosines (pairs without a vector sit at 0)
    assert fit_threshold(tied, [False, True, False, True]) == pytest.approx(0.45)


def test_the_pair_file_is_what_finetune_pair_reads(data_dir, tmp_path):
    from bertkit.tasks import read_examples

    pairs = read_wic(data_dir / "wic" / "dev" / "dev.data.txt", data_dir / "wic" / "dev" / "dev.gold.txt")[:20]
    write_pair_file(pairs, tmp_path / "dev.tsv")
    examples = read_examples(tmp_path / "dev.tsv", "pair",
                             {"text_column": "sentence1", "pair_column": "sentence2", "label_column": "label"})
    assert len(examples) == 20 and [e.label == "T" for e in examples] == [p.same for p in pairs]
    first = pairs[0]
    assert f"[ {first.first[first.first_index]} ]" in examples[0].text


def test_wic_threshold_on_real_pairs_beats_chance(minilm, data_dir):
    """1,000 training pairs fit the threshold of layer 3; the 638 dev pairs are scored, as they are
    and z-scored with statistics of the training pairs' target vectors."""
    folder = data_dir / "wic"
    train = read_wic(folder / "train" / "train.data.txt", folder / "train" / "train.gold.txt")[:1000]
    dev = read_wic(folder / "dev" / "dev.data.txt", folder / "dev" / "dev.gold.txt")
    found = {name: target_vectors(*minilm, pairs, [3], precision="fp32") for name, pairs in (("train", train),
                                                                                              ("dev", dev))}
    assert found["train"].missing == found["dev"].missing == 0
    zscores = found["train"].fit_standardization()
    for z in (None, zscores):
        train_cos, dev_cos = found["train"].cosines(z)[3], found["dev"].cosines(z)[3]
        threshold = fit_threshold(train_cos, [p.same for p in train])
        assert threshold_accuracy(dev_cos, [p.same for p in dev], threshold) > 0.55
    both = np.concatenate([found["train"].first[:, 0], found["train"].second[:, 0]]).astype(np.float64)
    a, b = ((x[:, 0] - both.mean(0)) / both.std(0) for x in (found["dev"].first, found["dev"].second))
    by_hand = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(found["dev"].cosines(zscores)[3], by_hand, atol=1e-5)


def test_a_window_averages_the_target_with_its_neighbours(minilm, data_dir):
    from bertkit.analysis.vectors import word_vectors

    pairs = read_wic(data_dir / "wic" / "dev" / "dev.data.txt")[:30]
    got = target_vectors(*minilm, pairs, [2, 6], precision="fp32", window=2)
    alone = target_vectors(*minilm, pairs, [2, 6], precision="fp32")
    assert got.missing == alone.missing == 0
    found = word_vectors(*minilm, [list(p.second) for p in pairs], layers=[2, 6], combine="concat",
                         split_into_words=True, precision="fp32", progress=False)
    for p, words, vector, own in zip(pairs, found, got.second, alone.second):
        near = [k for k, at in enumerate(words.positions) if p.second_index - 2 <= at <= p.second_index + 2]
        assert len(near) == min(p.second_index, 2) + 1 + min(len(p.second) - 1 - p.second_index, 2)  # cut at the edges
        np.testing.assert_allclose(vector.reshape(-1), words.vectors[near].mean(0), atol=1e-5)
        assert not np.allclose(vector, own, atol=1e-3)
    with pytest.raises(ValueError, match="window must be 0 or more words, not -1"):
        target_vectors(*minilm, pairs, [6], window=-1)


def test_the_wic_command(minilm_dir, data_dir, tmp_path, capsys):
    from bertkit.cli import main

    wic = tmp_path / "wic"
    for name in ("train", "dev"):
        (wic / name).mkdir(parents=True)
        for kind in ("data", "gold"):
            lines = (data_dir / "wic" / name / f"{name}.{kind}.txt").read_text().splitlines(True)[:40]
            (wic / name / f"{name}.{kind}.txt").write_text("".join(lines))
    args = ["analyze", "wic", "--model", str(minilm_dir), "--train", str(wic / "train" / "train.data.txt"),
            "--dev", str(wic / "dev" / "dev.data.txt"), "--layers", "3,6", "--output", str(tmp_path / "wic.json"),
            "--pairs-out", str(tmp_path / "pairs")]
    assert main(args) == 0
    got = json.loads((tmp_path / "wic.json").read_text())
    assert sorted(got["layers"]) == ["3", "6"] and got["pairs"] == {"train": 40, "dev": 40}
    assert 0 <= got["layers"]["6"]["zscored_dev_accuracy"] <= 1
    assert len((tmp_path / "pairs" / "dev.tsv").read_text().splitlines()) == 41
    assert main([*args, "--window", "2"]) == 0 and json.loads((tmp_path / "wic.json").read_text())["window"] == 2
    assert main([*args, "--window", "-1"]) == 2
    assert "--window counts words on each side: 0 or more, not -1" in capsys.readouterr().err
    (wic / "dev" / "dev.gold.txt").unlink()
    assert main(args) == 2
    assert "no gold file dev.gold.txt beside it" in capsys.readouterr().err


def test_cosines_that_differ_by_rounding_are_one_value():
    """Two float32 copies of one vector give cosines 1 +- 2e-7: the threshold never cuts between them."""
    cosines = np.array([0.2, 0.5, 1 - 1e-7, 1.0, 1 + 1e-7, 1.0])
    threshold = fit_threshold(cosines, [False, True, False, True, True, False])
    assert threshold == pytest.approx(0.35) or threshold < 0.2
    assert fit_threshold(cosines, [False, False, False, False, True, False]) > 1 + 1e-7  # all "different"
