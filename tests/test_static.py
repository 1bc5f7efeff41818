"""Static word vectors (skip-gram through gensim): neighbours on real text, save and load, SIF by
hand, the bad inputs, and the static model in the analyses."""

import json

import numpy as np
import pytest

from bertkit.analysis.geometry import anisotropy
from bertkit.analysis.wic import fit_threshold, read_wic, static_target_vectors
from bertkit.analysis.wsd import Instance
from bertkit.cli import main
from bertkit.static import StaticVectors, remove_common_component, train_static

gensim = pytest.importorskip("gensim", reason="static word vectors need gensim: pip install 'bertkit[static]'")


@pytest.fixture(scope="module")
def gutenberg(data_dir, tmp_path_factory) -> StaticVectors:
    """Skip-gram on the 18 Gutenberg books (2.4M words): 100 dimensions, a window of 2 (narrow windows
    put words of one kind together), one worker so the run repeats exactly."""
    return train_static([data_dir / "gutenberg_nltk"], dim=100, window=2, epochs=5, workers=1, seed=0,
                        errors="replace", cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_skip_gram_puts_obvious_neighbours_together(gutenberg):
    neighbours = [w for w, _ in gutenberg.keyed.most_similar("king", topn=10)]
    assert {"prince", "queen"} & set(neighbours), neighbours
    assert "whales" in [w for w, _ in gutenberg.keyed.most_similar("whale", topn=10)]
    assert gutenberg.keyed.similarity("father", "mother") > gutenberg.keyed.similarity("father", "whale")
    assert gutenberg.info["words"] > 2_000_000 and gutenberg.info["vocabulary"] > 10_000


@pytest.mark.parametrize("binary", [True, False])
def test_saving_and_loading_keeps_vectors_and_counts(gutenberg, tmp_path, binary):
    gutenberg.save(tmp_path, binary=binary)
    assert (tmp_path / ("vectors.bin" if binary else "vectors.txt")).exists()
    back = StaticVectors.load(tmp_path)
    assert back.keyed.index_to_key == gutenberg.keyed.index_to_key
    np.testing.assert_allclose(back.keyed.vectors, gutenberg.keyed.vectors, rtol=0, atol=0 if binary else 1e-6)
    words = ["the", "king", "whale"]
    assert [back.keyed.get_vecattr(w, "count") for w in words] == \
        [gutenberg.keyed.get_vecattr(w, "count") for w in words]
    np.testing.assert_array_equal(back.probability(words), gutenberg.probability(words))
    assert back.info["dim"] == 100 and back.lowercase
    from gensim.models import KeyedVectors  # the files are word2vec's: gensim reads them without bertkit
    plain = KeyedVectors.load_word2vec_format(str(tmp_path / ("vectors.bin" if binary else "vectors.txt")),
                                              binary=binary)
    np.testing.assert_allclose(plain["king"], gutenberg.keyed["king"], atol=0 if binary else 1e-6)


def _toy(counts: dict[str, int], vectors: np.ndarray) -> StaticVectors:
    from gensim.models import KeyedVectors

    keyed = KeyedVectors(vectors.shape[1])
    keyed.add_vectors(list(counts), vectors)
    for word, count in counts.items():
        keyed.set_vecattr(word, "count", count)
    return StaticVectors(keyed)


def test_sif_by_hand():
    """Arora et al. (2017), Algorithm 1: v_s = mean over words of a / (a + p(w)) v_w, then each v_s
    minus its projection on the first singular vector u of the matrix of the v_s."""
    counts = {"the": 60, "cat": 20, "sat": 15, "mat": 5}
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 5)).astype(np.float32)
    static = _toy(counts, vectors)
    texts = ["The cat sat", "the mat", "cat, mat!"]  # "," and "!" are out of the vocabulary
    a = 0.01
    p = {w: c / 100 for w, c in counts.items()}
    v = dict(zip(counts, vectors.astype(np.float64)))
    by_hand = np.stack([np.mean([a / (a + p[w]) * v[w] for w in words], 0)
                        for words in (["the", "cat", "sat"], ["the", "mat"], ["cat", "mat"])])
    u = np.linalg.svd(by_hand)[2][0]
    by_hand -= np.outer(by_hand @ u, u)
    got, seen = static.sentence_vectors(texts, "sif", a=a)
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    assert seen == {"words": 9, "unknown_words": 2, "empty_sentences": 0}
    plain, _ = static.sentence_vectors(texts, "mean")
    np.testing.assert_allclose(plain[1], vectors[[0, 3]].mean(0), atol=1e-6)
    empty, seen = static.sentence_vectors(["!!"], "mean")
    assert not empty.any() and seen["empty_sentences"] == 1
    x = np.array([[1.0, 2.0], [3.0, 4.0]])  # the removed direction is gone from what it was fitted on
    assert np.abs(remove_common_component(x, x) @ np.linalg.svd(x)[2][0]).max() < 1e-6
    with pytest.raises(ValueError, match="fit_on fits SIF's common component"):
        static.sentence_vectors(texts, "mean", fit_on=texts)
    with pytest.raises(ValueError, match="SIF fits its common component on at least 2 sentences, got 1"):
        static.sentence_vectors(["the cat"], "sif")
    one, _ = static.sentence_vectors(["the cat"], "sif", fit_on=texts)
    assert one.any()


def test_bad_corpora_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="empty.txt: no words in the corpus"):
        train_static([empty], cache_dir=tmp_path / "cache", progress=False)
    small = tmp_path / "small.txt"
    small.write_text("The cat sat on the mat. The dog sat on the log.\n")
    with pytest.raises(ValueError, match="min_count 50 leaves no vocabulary: the most frequent word, 'the', occurs "
                                         "4 times in the corpus's 14 words; lower --min-count"):
        train_static([small], min_count=50, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(FileNotFoundError, match="no static.json"):
        StaticVectors.load(tmp_path)


def test_a_static_model_in_wic_is_one_answer_per_word_form(gutenberg, data_dir):
    """The same form twice: cosine 1 (float64, so rounding cannot split these pairs), hence one
    answer for all of them, as they are and z-scored; a word without a vector stays at cosine 0."""
    folder = data_dir / "wic"
    train = read_wic(folder / "train" / "train.data.txt", folder / "train" / "train.gold.txt")
    pairs = read_wic(folder / "dev" / "dev.data.txt", folder / "dev" / "dev.gold.txt")
    train_vectors, vectors = static_target_vectors(gutenberg, train), static_target_vectors(gutenberg, pairs)
    same_form = np.array([p.first[p.first_index].lower() == p.second[p.second_index].lower() for p in pairs])
    known = vectors.first[:, 0].any(-1) & vectors.second[:, 0].any(-1)
    assert vectors.missing == int((~known).sum()) > 0
    zscores = train_vectors.fit_standardization()
    for fitted in (None, zscores):
        cosines = vectors.cosines(fitted)[0]
        np.testing.assert_allclose(cosines[same_form & known], 1.0, atol=1e-12)
        assert (cosines[~same_form & known] < 1 - 1e-4).all() and not cosines[~known].any()
        threshold = fit_threshold(train_vectors.cosines(fitted)[0], [p.same for p in train])
        assert len(set(cosines[same_form & known] > threshold)) == 1


def test_gloss_disambiguation_with_a_static_model(gutenberg, data_dir):
    from bertkit.analysis.wsd import StaticSenseVectors, disambiguate, static_instance_vectors, wordnet

    wn = wordnet(data_dir / "wordnet3")
    words = ("He", "sat", "on", "the", "bank", "of", "the", "river")
    instances = [Instance("i0", "bank", "NOUN", words, 4, "d0"), Instance("i1", "xyzzy", "NOUN", ("a", "xyzzy"), 1, "d0"),
                 Instance("i2", "sit", "VERB", words, 1, "d0")]
    vectors = static_instance_vectors(gutenberg, instances)
    assert set(vectors) == {"i0", "i2"}  # "xyzzy": neither form nor lemma in the vocabulary
    np.testing.assert_array_equal(vectors["i2"], gutenberg.word_vector("sat"))
    senses = StaticSenseVectors(gutenberg, wn)
    keys = [lemma.key() for lemma in wn.lemmas("bank", "n")]
    assert senses(keys).shape == (len(keys), 100)
    np.testing.assert_allclose(np.linalg.norm(senses(keys), axis=1), 1, atol=1e-5)
    answers, tally = disambiguate(wn, instances, vectors, senses)
    assert answers["i0"] in keys  # the word's one vector picks a sense of bank
    assert tally == {"first_sense_backoff": 0, "unanswered": 1}  # xyzzy: WordNet knows no such noun
    assert gutenberg.word_vector("belong_to") is not None  # WordNet lemmas: "_" is a space


def test_a_static_model_has_one_context(gutenberg):
    sentences = ["The king spoke to the queen.", "The whale swam; the king slept.", "A man and a king."]
    vectors, sentence, words, unknown = gutenberg.text_vectors(sentences)
    result = anisotropy(vectors, sentence, words, pairs=200)
    assert result["self_similarity"] == pytest.approx(1.0)  # "king" and "the" in three sentences: one vector each
    assert 0 < result["anisotropy"] < 1 and unknown == 0 and len(words) == 21


def test_commands_with_a_static_model(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A man is playing a guitar. A woman is slicing an onion. A man plays the bank of a river.\n"
                      "The bank of the river is green. A man is playing a flute.\n")
    out = tmp_path / "vectors"
    assert main(["train-static", "--corpus", str(corpus), "--out", str(out), "--dim", "8", "--min-count", "1",
                 "--epochs", "1", "--workers", "1", "--cache", str(tmp_path / "cache")]) == 0
    assert (out / "vectors.bin").exists() and json.loads((out / "static.json").read_text())["vocabulary"] > 10
    sts = tmp_path / "sts.csv"
    sts.write_text("g\tf\ty\t1\t5.0\tA man is playing a guitar.\tA man plays a guitar.\n"
                   "g\tf\ty\t2\t0.5\tA woman is slicing an onion.\tThe bank of the river.\n"
                   "g\tf\ty\t3\t2.0\tA man is playing a flute.\tA man is slicing an onion.\n")
    for weighting in ("mean", "sif"):
        assert main(["analyze", "sts", "--model", str(out), "--data", str(sts), "--weighting", weighting,
                     "--output", str(tmp_path / f"sts-{weighting}.json")]) == 0
        result = json.loads((tmp_path / f"sts-{weighting}.json").read_text())
        assert result["pairs"] == 3 and -1 <= result["spearman"] <= 1 and result["weighting"] == weighting
    lines = tmp_path / "lines.txt"
    lines.write_text("A man is playing a guitar.\nThe bank of the river is green.\nA woman is slicing an onion.\n")
    assert main(["analyze", "anisotropy", "--model", str(out), "--input", str(lines), "--pairs", "50",
                 "--output", str(tmp_path / "geometry.json")]) == 0
    assert json.loads((tmp_path / "geometry.json").read_text())["layers"]["0"]["self_similarity"] == pytest.approx(1)
    assert main(["embed", "--model", str(out), "--input", str(lines), "--output", str(tmp_path / "x.npy")]) == 2
    assert "static word vectors (bertkit train-static); bertkit embed needs an encoder" in capsys.readouterr().err
    assert main(["analyze", "sts", "--model", str(out), "--data", str(sts), "--fit-on", str(sts)]) == 2
    assert "--fit-on fits SIF's common component" in capsys.readouterr().err
    assert main(["analyze", "sts", "--model", str(out), "--data", str(sts), "--pooling", "cls"]) == 2
    assert "--pooling: an option of encoders, not of" in capsys.readouterr().err
    wic = tmp_path / "wic"
    wic.mkdir()
    for name in ("train", "dev"):
        (wic / f"{name}.data.txt").write_text("bank\tN\t4-1\tA man plays the bank of a river .\tThe bank of the river .\n"
                                             "play\tV\t2-2\tA man playing a guitar .\tA woman plays a flute .\n")
        (wic / f"{name}.gold.txt").write_text("T\nF\n")
    assert main(["analyze", "wic", "--model", str(out), "--train", str(wic / "train.data.txt"),
                 "--dev", str(wic / "dev.data.txt"), "--output", str(tmp_path / "wic.json")]) == 0
    result = json.loads((tmp_path / "wic.json").read_text())
    assert list(result["layers"]) == ["0"] and result["same_share"] == {"train": 0.5, "dev": 0.5}
    assert result["layers"]["0"]["train_accuracy"] == 1.0  # bank / bank (cosine 1): T; playing / plays: F
