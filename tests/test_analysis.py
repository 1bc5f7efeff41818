"""Word vectors in context against the encoder's own hidden states, streaming against in memory."""

import numpy as np
import pytest
import torch

from bertkit.analysis.vectors import word_vectors, write_word_vectors
from bertkit.precision import evaluating


def hidden_states(model, tokenizer, text, split: bool, layers):
    """The text's hidden states alone, computed as word_vectors computes them (fp32 inference's layers)."""
    encoded = tokenizer.encode([text], split_into_words=split)
    with torch.no_grad(), evaluating(model, "fp32"):
        out = model(**encoded.tensors(), output_layers=layers).layers
    return encoded.word_ids(0), [out[model.layer_index(i)][0].numpy() for i in layers]


@pytest.mark.parametrize("subwords", ["mean", "first", "last"])
@pytest.mark.parametrize("combine, layers", [("mean", [-1]), ("sum", [-4, -3, -2, -1]), ("concat", [2, 6])])
def test_word_vectors_equal_the_hidden_states_of_their_subwords(minilm, sts_sentences, subwords, combine, layers):
    model, tokenizer = minilm
    raw = sts_sentences[:12]
    split = [s.split() for s in sts_sentences[12:24]]
    for texts, is_split in ((raw, False), (split, True)):
        got = word_vectors(model, tokenizer, texts, layers=layers, combine=combine, subwords=subwords,
                           precision="fp32", batch_size=5, progress=False)
        for text, found in zip(texts, got):
            word_ids, states = hidden_states(model, tokenizer, text, is_split, layers)
            joined = {"mean": lambda xs: np.mean(xs, 0), "sum": lambda xs: np.sum(xs, 0),
                      "concat": lambda xs: np.concatenate(xs, -1)}[combine](states)  # (T, D)
            words = sorted({w for w in word_ids if w is not None})
            assert len(found.words) == len(words) == found.vectors.shape[0]
            for k, w in enumerate(words):
                tokens = [t for t, x in enumerate(word_ids) if x == w]
                pick = {"mean": tokens, "first": tokens[:1], "last": tokens[-1:]}[subwords]
                np.testing.assert_allclose(found.vectors[k], joined[pick].mean(0), atol=2e-5)
            if is_split:
                assert found.words == text and found.offsets is None
            else:
                assert all(text[a:b] == w for w, (a, b) in zip(found.words, found.offsets))


def test_a_word_without_subwords_is_counted_not_a_crash(minilm):
    model, tokenizer = minilm
    found = word_vectors(model, tokenizer, [["good", "\u200b", "film"]], precision="fp32", progress=False)[0]
    assert found.words == ["good", "film"] and found.empty == 1 and found.vectors.shape == (2, 384)


def test_streamed_vectors_equal_in_memory_ones(minilm, sts_sentences, tmp_path):
    model, tokenizer = minilm
    texts = sts_sentences[:40]
    total = write_word_vectors(model, tokenizer, texts, tmp_path / "vectors", chunk=7, layers=[-2, -1],
                               combine="sum", precision="fp32", progress=False)
    matrix = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    index = (tmp_path / "vectors.tsv").read_text(encoding="utf-8").splitlines()
    memory = word_vectors(model, tokenizer, texts, layers=[-2, -1], combine="sum", precision="fp32", progress=False)
    assert total == matrix.shape[0] == len(index) - 1 == sum(len(f.words) for f in memory)
    # other batches: fp32 sums in another order
    np.testing.assert_allclose(matrix, np.concatenate([f.vectors for f in memory]), rtol=1e-5, atol=1e-5)
    assert index[0] == "text\tword\tword_text" and index[1].split("\t")[:2] == ["0", "0"]
    assert index[-1].split("\t") == ["39", str(len(memory[-1].words) - 1), memory[-1].words[-1]]


# ------------------------------------------------------------------------------- post-processing


@pytest.fixture(scope="module")
def sample(minilm, sts_sentences):
    import bertkit
    return bertkit.embed(*minilm, sts_sentences[:600], precision="fp32", progress=False)


def test_standardization_statistics_equal_numpys(sample):
    from bertkit.postprocess import fit_postprocess

    fitted = fit_postprocess(sample, "standardize")
    np.testing.assert_allclose(fitted.mean, sample.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(1 / fitted.matrix, sample.astype(np.float64).std(0), rtol=1e-10)
    z = fitted(sample).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


@pytest.mark.parametrize("components", [None, 128])
def test_whitening_makes_the_fitted_covariance_the_identity(sample, components):
    from bertkit.postprocess import fit_postprocess

    fitted = fit_postprocess(sample, "whiten", components)
    white = fitted(sample).astype(np.float64)
    assert white.shape == (600, components or fitted.info["components"])
    assert components or 375 <= fitted.info["components"] < 384  # mean-pooled layer-normed vectors: a few empty
    centred = white - white.mean(0)
    np.testing.assert_allclose(centred.T @ centred / len(white), np.eye(white.shape[1]), atol=1e-4)


def test_all_but_the_top_removes_the_mean_and_the_top_directions(sample):
    from bertkit.postprocess import fit_postprocess

    fitted = fit_postprocess(sample, "all_but_the_top")
    assert fitted.matrix.shape == (384, 3) and fitted.info["components"] == 3  # dims / 100
    out = fitted(sample).astype(np.float64)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out @ fitted.matrix, 0, atol=1e-4)  # nothing left along the removed directions


def test_a_saved_postprocess_embeds_as_the_fitted_one(minilm, minilm_dir, sample, sts_sentences, tmp_path):
    import bertkit
    from bertkit.cli import main
    from bertkit.postprocess import fit_postprocess, load_postprocess

    fitted = fit_postprocess(sample, "whiten", 64, info={"layers": [-1]})
    fitted.save(tmp_path / "white.safetensors")
    loaded = load_postprocess(tmp_path / "white.safetensors")
    assert loaded.method == "whiten" and loaded.info == {"layers": [-1], "fitted_on": 600, "components": 64}
    texts = sts_sentences[600:620]
    plain = bertkit.embed(*minilm, texts, precision="fp32", progress=False)
    got = bertkit.embed(*minilm, texts, precision="fp32", progress=False, postprocess=tmp_path / "white.safetensors")
    np.testing.assert_allclose(got, fitted(plain), atol=1e-5)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    model_dir = str(minilm_dir)
    assert main(["analyze", "postprocess-fit", "--model", model_dir, "--input", str(tmp_path / "in.txt"),
                 "--method", "standardize", "--output", str(tmp_path / "z.safetensors"), "--dtype", "fp32"]) == 0
    assert main(["embed", "--model", model_dir, "--input", str(tmp_path / "in.txt"), "--output",
                 str(tmp_path / "z.npy"), "--postprocess", str(tmp_path / "z.safetensors"), "--dtype", "fp32"]) == 0
    z = np.load(tmp_path / "z.npy").astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)  # fitted on these very texts
    with pytest.raises(ValueError, match="fitted on 384-dimensional vectors; these have 3"):
        loaded(np.zeros((2, 3), dtype=np.float32))
    (tmp_path / "bad.safetensors").write_text("not safetensors")
    with pytest.raises(ValueError, match="not a post-processing file written by bertkit"):
        load_postprocess(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------- geometry


def test_anisotropy_measures_by_hand():
    from bertkit.analysis.geometry import anisotropy

    vectors = np.array([[1, 0], [0, 1], [1, 1], [1, 0.0]])  # rows: sentence 0: "bank", "river"; 1: "bank", "money"
    sentence = np.array([0, 0, 1, 1])
    got = anisotropy(vectors, sentence, ["bank", "river", "bank", "money"], pairs=2000, seed=0)
    assert got["self_similarity"] == pytest.approx(1 / np.sqrt(2))  # "bank": [1, 0] against [1, 1]
    assert got["word_types"] == 1  # only "bank" is in two contexts
    mean0, mean1 = np.array([0.5, 0.5]), np.array([1, 0.5])
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    intra = np.mean([np.mean([cos(vectors[0], mean0), cos(vectors[1], mean0)]),
                     np.mean([cos(vectors[2], mean1), cos(vectors[3], mean1)])])
    assert got["intra_sentence"] == pytest.approx(intra)
    cross = np.mean([cos(vectors[i], vectors[j]) for i in (0, 1) for j in (2, 3)])  # every cross-sentence pair
    assert got["anisotropy"] == pytest.approx(cross, abs=0.02)  # sampled pairs
    assert got["self_similarity_adjusted"] == pytest.approx(got["self_similarity"] - got["anisotropy"])


def test_a_rogue_dimension_is_found_and_standardization_removes_it():
    from bertkit.analysis.geometry import anisotropy, rogue_dimensions
    from bertkit.postprocess import fit_postprocess

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4000, 64))
    vectors[:, 17] += 12.0  # one dimension far from zero in every vector
    sentence = np.arange(4000) // 10
    rogue = rogue_dimensions(vectors, sentence, pairs=5000, top=1)
    assert rogue["top"][0]["dimension"] == 17 and rogue["top_share"] > 0.95
    expected = anisotropy(vectors, sentence, [str(i) for i in range(4000)], pairs=5000)["anisotropy"]
    assert rogue["expected_cosine"] == pytest.approx(expected, abs=1e-9)  # the contributions sum to it
    assert 0 < rogue["informativity"] < 0.9  # the cosines' ranking still comes mostly from the other dimensions
    z = fit_postprocess(vectors, "standardize")(vectors)
    assert abs(rogue_dimensions(z, sentence, pairs=5000)["expected_cosine"]) < 0.02


def test_geometry_of_minilm_on_real_sentences(minilm, sts_sentences, tmp_path, minilm_dir, capsys):
    import json

    from bertkit.cli import main

    (tmp_path / "s.txt").write_text("\n".join(sts_sentences[:150]) + "\n")
    assert main(["analyze", "anisotropy", "--model", str(minilm_dir), "--input", str(tmp_path / "s.txt"),
                 "--layers", "0,3,6", "--pairs", "3000", "--output", str(tmp_path / "geometry.json"),
                 "--dtype", "fp32"]) == 0
    got = {int(k): v for k, v in json.loads((tmp_path / "geometry.json").read_text())["layers"].items()}
    assert sorted(got) == [0, 3, 6] and (tmp_path / "geometry.png").stat().st_size > 0
    for layer in got.values():
        assert -1 < layer["anisotropy"] < 1 and layer["pairs"] == 3000 and layer["word_types"] > 50
        assert layer["self_similarity"] > layer["anisotropy"]  # a word is closer to itself than to a random word
        assert len(layer["rogue"]["top"]) == 3
    table = capsys.readouterr().out
    assert "anisotropy" in table and "informativity" in table


# ------------------------------------------------------------------------------- word sense disambiguation


@pytest.fixture(scope="module")
def wn(data_dir):
    from bertkit.analysis.wsd import wordnet
    return wordnet(data_dir / "wordnet3")


@pytest.mark.parametrize("name, f1", [("senseval2", 66.8), ("semeval2007", 55.2)])
def test_the_wordnet_first_sense_baseline_reproduces_the_published_f1(wn, data_dir, name, f1):
    from bertkit.analysis.wsd import first_sense, read_instances, read_key, score

    folder = data_dir / "wsd_raganato" / "Evaluation_Datasets" / name
    instances = read_instances(folder / f"{name}.data.xml")
    answers, unknown = first_sense(wn, instances)
    result = score(answers, read_key(folder / f"{name}.gold.key.txt"))
    assert round(100 * result["f1"], 1) == f1 and unknown == []  # Raganato et al. (2017), table 3


def test_the_scorer_on_a_hand_worked_example():
    from bertkit.analysis.wsd import score

    gold = {"a": {"x%1"}, "b": {"y%1", "y%2"}, "c": {"z%1"}, "d": {"w%1"}}
    got = score({"a": "x%1", "b": "y%2", "c": "z%9"}, gold)  # 2 right of 3 answered, of 4 instances
    assert (got["precision"], got["recall"]) == (2 / 3, 2 / 4)
    assert got["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    with pytest.raises(ValueError, match="instance e is not in the gold key"):
        score({"e": "x%1"}, gold)
    from bertkit.analysis.wsd import Instance, score_by_pos
    pos = {"a": "NOUN", "b": "VERB", "c": "NOUN", "d": "NOUN"}
    instances = [Instance(i, "x", p, ("x",), 0, "d0") for i, p in pos.items()]
    parts = score_by_pos({"a": "x%1", "b": "y%2", "c": "z%9"}, gold, instances)
    assert (parts["NOUN"]["precision"], parts["NOUN"]["recall"]) == (1 / 2, 1 / 3) and parts["VERB"]["f1"] == 1.0


def test_bad_wsd_input(wn, tmp_path):
    from bertkit.analysis.wsd import first_sense, read_instances, read_key

    xml = tmp_path / "bad.data.xml"
    xml.write_text('<corpus>\n<text id="d0">\n<sentence id="s0">\n<wf lemma="a">a</wf>\n</text>\n</corpus>\n')
    with pytest.raises(ValueError, match=r"bad.data.xml:5: malformed XML"):
        read_instances(xml)
    key = tmp_path / "k.txt"
    key.write_text("d0.s0.t0 art%1:09:00::\nd0.s0.t0 art%1:06:00::\n")
    with pytest.raises(ValueError, match=r"k.txt:2: instance d0.s0.t0 is keyed twice"):
        read_key(key)
    xml.write_text('<corpus><text id="d0"><sentence id="s0"><instance id="i0" lemma="xyzzy" pos="NOUN">xyzzy'
                   '</instance><instance id="i1" lemma="art" pos="NOUN">art</instance></sentence></text></corpus>')
    answers, unknown = first_sense(wn, read_instances(xml))
    assert unknown == ["i0"] and answers == {"i1": "art%1:06:00::"}  # the unknown lemma is counted, not guessed


def test_analyze_wsd_from_the_command_line(data_dir, tmp_path, capsys):
    import json

    from bertkit.cli import main

    folder = data_dir / "wsd_raganato" / "Evaluation_Datasets" / "semeval2007"
    args = ["analyze", "wsd", "--data", str(folder / "semeval2007.data.xml"), "--wordnet", str(data_dir / "wordnet3")]
    assert main([*args, "--gold", str(folder / "semeval2007.gold.key.txt"), "--output", str(tmp_path / "k.txt")]) == 0
    assert round(100 * json.loads(capsys.readouterr().out)["f1"], 1) == 55.2
    assert len((tmp_path / "k.txt").read_text().splitlines()) == 455
    partial = tmp_path / "gold.txt"
    partial.write_text("".join((folder / "semeval2007.gold.key.txt").read_text().splitlines(True)[1:]))
    assert main([*args, "--gold", str(partial)]) == 2
    assert "no gold key for instance d000.s000.t000" in capsys.readouterr().err


def test_analyze_wsd_with_gloss_embeddings_from_the_command_line(minilm_dir, data_dir, tmp_path, capsys):
    import json

    from bertkit.cli import main

    xml, key = tmp_path / "two.data.xml", tmp_path / "two.gold.key.txt"
    xml.write_text('<corpus><text id="d0"><sentence id="s0"><wf>She</wf><wf>deposited</wf><wf>her</wf>'
                   '<wf>salary</wf><wf>at</wf><wf>the</wf><instance id="i0" lemma="bank" pos="NOUN">bank</instance>'
                   '</sentence><sentence id="s1"><wf>He</wf><wf>paid</wf><wf>the</wf>'
                   '<instance id="i1" lemma="fee" pos="NOUN">fee</instance></sentence></text></corpus>')
    key.write_text("i0 bank%1:14:00::\ni1 fee%1:21:00::\n")
    args = ["analyze", "wsd", "--data", str(xml), "--gold", str(key), "--wordnet", str(data_dir / "wordnet3"),
            "--method", "gloss", "--cache", str(tmp_path / "cache"), "--dtype", "fp32", "--output", str(tmp_path / "k")]
    assert main(args) == 2
    assert "--method gloss needs --model" in capsys.readouterr().err
    assert main([*args, "--model", str(minilm_dir), "--prior", "0.1", "--one-sense-per-discourse",
                 "--standardize"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["instances"] == got["answered"] == 2 and got["first_sense_backoff"] == 0
    answers = dict(line.split() for line in (tmp_path / "k").read_text().splitlines())
    import bertkit
    from bertkit.analysis.wsd import (SenseVectors, disambiguate, instance_vectors, read_instances, sense_counts,
                                      wordnet)
    model, tokenizer = bertkit.load_pretrained(minilm_dir), bertkit.Tokenizer.from_pretrained(minilm_dir)
    wn, instances = wordnet(data_dir / "wordnet3"), read_instances(xml)
    expected, _ = disambiguate(wn, instances, instance_vectors(model, tokenizer, instances, [-1], "fp32"),
                               SenseVectors(model, tokenizer, wn, tmp_path / "lib", [-1], precision="fp32"),
                               sense_counts(data_dir / "wordnet3"), 0.1, True, standardize=True)
    assert answers == expected and len(list((tmp_path / "cache").rglob("part-*.npy"))) == 1  # one part: every candidate at once
    assert main([*args, "--model", str(minilm_dir), "--examples", "1", "--prior", "0.3"]) == 0
    capsys.readouterr()
    answers = dict(line.split() for line in (tmp_path / "k").read_text().splitlines())
    expected, _ = disambiguate(wn, instances, instance_vectors(model, tokenizer, instances, [-1], "fp32"),
                               SenseVectors(model, tokenizer, wn, tmp_path / "lib", [-1], precision="fp32"),
                               sense_counts(data_dir / "wordnet3"), 0.3, examples=SenseVectors(
                                   model, tokenizer, wn, tmp_path / "lib", [-1], precision="fp32", source="examples"))
    assert answers == expected and len(list((tmp_path / "cache").rglob("part-*.npy"))) == 2  # + the examples' part
    assert main([*args, "--model", str(minilm_dir), "--examples", "-1"]) == 2
    assert "--examples is a weight, 0 or more, not -1" in capsys.readouterr().err


def test_gloss_embeddings_are_cached_and_reused(wn, minilm, tmp_path, monkeypatch):
    from bertkit.analysis import wsd

    words, n = wsd.gloss_words(wn, "change_ringing%1:04:00::")
    assert words[:3] == ["change", "ringing", "-"] and n == 2 and "bells" in " ".join(words)
    keys = ["art%1:06:00::", "art%1:09:00::", "bank%1:17:00::"]
    first = wsd.SenseVectors(*minilm, wn, tmp_path, [-1], precision="fp32", chunk=2)(keys)  # two parts
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-6)
    at_once = wsd.SenseVectors(*minilm, wn, tmp_path / "one", [-1], precision="fp32")(keys)
    np.testing.assert_allclose(first, at_once, atol=1e-5)
    (folder,) = tmp_path.glob("*/part-00001.txt")
    folder.unlink()  # killed after the second part's vectors, before its keys: that part is built again
    assert wsd.SenseVectors(*minilm, wn, tmp_path, [-1], precision="fp32")(keys[2:]).shape == (1, 384)
    monkeypatch.setattr(wsd, "word_vectors", lambda *a, **k: pytest.fail("embedded again"))
    again = wsd.SenseVectors(*minilm, wn, tmp_path, [-1], precision="fp32")(keys[::-1])
    np.testing.assert_allclose(again, first[::-1], atol=1e-6)
    with pytest.raises(pytest.fail.Exception, match="embedded again"):  # another layer: another cache
        wsd.SenseVectors(*minilm, wn, tmp_path, [-2], precision="fp32")(keys[:1])
    (folder.parent / "part-00000.txt").write_text("\n".join(keys) + "\n")  # three keys for two vectors
    with pytest.raises(ValueError, match=r"part-00000.txt: 3 sense keys for 2 vectors; delete"):
        wsd.SenseVectors(*minilm, wn, tmp_path, [-1], precision="fp32")


def test_the_prior_and_one_sense_per_discourse_by_hand(wn):
    from bertkit.analysis.wsd import Instance, candidates, disambiguate

    keys = candidates(wn, "art", "NOUN")  # art%1:06:00:: (first), art%1:04:00::, ...
    table = {k: np.eye(8)[i] for i, k in enumerate(keys)}
    senses = lambda ks, unit=True: np.stack([table[k] for k in ks])  # noqa: E731  (a fake gloss embedding per sense)
    one = Instance("a", "art", "NOUN", ("art",), 0, "d0")
    two = Instance("b", "art", "NOUN", ("art",), 0, "d0")
    vectors = {"a": 0.9 * np.eye(8)[1] + 0.1 * np.eye(8)[0], "b": 0.6 * np.eye(8)[0] + 0.55 * np.eye(8)[2]}
    answers, _ = disambiguate(wn, [one, two], vectors, senses)
    assert answers == {"a": keys[1], "b": keys[0]}
    answers, _ = disambiguate(wn, [one, two], vectors, senses, one_sense_per_discourse=True)
    assert answers == {"a": keys[1], "b": keys[1]}  # summed: keys[1] 0.9 + 0 > keys[0] 0.1 + 0.6
    counts = {keys[0]: 99}  # a strong prior for the first sense
    answers, _ = disambiguate(wn, [one], vectors, senses, counts, prior=1.0)
    assert answers == {"a": keys[0]}
    backoff, tally = disambiguate(wn, [one], {}, senses)
    assert backoff == {"a": keys[0]} and tally["first_sense_backoff"] == 1


def test_example_embeddings_are_the_lemma_in_wordnets_examples(wn, minilm, tmp_path):
    from bertkit.analysis import wsd

    model, tokenizer = minilm
    found = wsd.example_words(wn, "run%2:38:00::", tokenizer.pre_tokenize)  # an inflected form found by morphy
    assert (["The", "children", "ran", "to", "the", "store"], [2]) in found
    assert (["The", "family", "took", "off", "for", "Florida"], [2, 3]) in wsd.example_words(
        wn, "take_off%2:38:00::", tokenizer.pre_tokenize)  # a lemma of two words, the first inflected
    assert wsd.example_words(wn, "ice_cream%1:13:00::", tokenizer.pre_tokenize) == []  # a synset without examples
    assert wn.lemma_from_key("alienation%1:04:00::").synset().examples()  # "his behavior alienated the ..."
    assert wsd.example_words(wn, "alienation%1:04:00::", tokenizer.pre_tokenize) == []  # ... which do not use it
    bank = wsd.example_words(wn, "bank%1:17:01::", tokenizer.pre_tokenize)
    assert [words[at[0]] for words, at in bank] == ["bank", "bank"]
    got = wsd.SenseVectors(model, tokenizer, wn, tmp_path, [-1], precision="fp32", source="examples")(
        ["bank%1:17:01::", "ice_cream%1:13:00::"], unit=False)
    each = word_vectors(model, tokenizer, [words for words, _ in bank], split_into_words=True, precision="fp32",
                        progress=False)
    expected = np.mean([v.vectors[v.positions.index(at[0])] for v, (_, at) in zip(each, bank)], axis=0)
    np.testing.assert_allclose(got[0], expected, atol=1e-5)
    assert not got[1].any()  # no example: a zero vector, which disambiguate leaves out
    gloss = wsd.SenseVectors(model, tokenizer, wn, tmp_path, [-1], precision="fp32")(["bank%1:17:01::"], unit=False)
    assert not np.allclose(gloss, got[:1], atol=1e-3)  # another source, another cache folder
    with pytest.raises(ValueError, match="source must be one of 'gloss', 'examples', not 'semcor'"):
        wsd.SenseVectors(model, tokenizer, wn, tmp_path, [-1], source="semcor")


def test_example_embeddings_join_the_gloss_ones_by_hand(wn):
    from bertkit.analysis.wsd import Instance, candidates, disambiguate

    keys = candidates(wn, "art", "NOUN")
    glosses = {k: np.eye(8)[i] for i, k in enumerate(keys)}
    found = {k: np.zeros(8) for k in keys}
    found[keys[1]] = np.eye(8)[5]  # only the second sense has an example
    table = lambda t: lambda ks, unit=True: np.stack([t[k] for k in ks])  # noqa: E731
    one = Instance("a", "art", "NOUN", ("art",), 0, "d0")
    vectors = {"a": 0.5 * np.eye(8)[0] + 0.4 * np.eye(8)[1] + 0.3 * np.eye(8)[5]}
    alone, _ = disambiguate(wn, [one], vectors, table(glosses))
    assert alone == {"a": keys[0]}  # glosses alone: 0.5 > 0.4
    # with the example, sense 2 is (e1 + e5) / sqrt(2): (0.4 + 0.3) / 1.414 = 0.495, still < 0.5
    assert disambiguate(wn, [one], vectors, table(glosses), examples=table(found))[0] == {"a": keys[0]}
    vectors = {"a": 0.5 * np.eye(8)[0] + 0.4 * np.eye(8)[1] + 0.45 * np.eye(8)[5]}
    assert disambiguate(wn, [one], vectors, table(glosses))[0] == {"a": keys[0]}
    # (0.4 + 0.45) / sqrt(2) = 0.601 > 0.5 (the cosines share the instance's norm)
    assert disambiguate(wn, [one], vectors, table(glosses), examples=table(found))[0] == {"a": keys[1]}
    assert disambiguate(wn, [one], vectors, table(glosses), examples=table(found), example_weight=0)[0] == alone
    # z-scored, a sense without an example still has its gloss alone (z-scores would make its zero row
    # non-zero): with no example anywhere, the answers are the glosses' own
    two = Instance("b", "art", "NOUN", ("art",), 0, "d1")
    vectors["b"] = 0.3 * np.eye(8)[0] + 0.7 * np.eye(8)[2] + 0.1 * np.eye(8)[5]
    none = table({k: np.zeros(8) for k in keys})
    assert (disambiguate(wn, [one, two], vectors, table(glosses), examples=none, standardize=True)[0]
            == disambiguate(wn, [one, two], vectors, table(glosses), standardize=True)[0])
