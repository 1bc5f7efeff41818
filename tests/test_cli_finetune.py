"""Smoke runs of `bertkit finetune`, `predict` and `evaluate` on a tiny model, and their input errors."""

import json

import pytest

from bertkit.cli import main

from tiny_task_data import conll, lines_head, tiny  # noqa: F401 (conll, tiny: fixtures)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sst2(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("sst2")
    return (lines_head(data_dir / "sst2" / "train.tsv", folder / "train.tsv", 33),
            lines_head(data_dir / "sst2" / "dev.tsv", folder / "dev.tsv", 17))


@pytest.fixture(scope="module")
def classifier(tiny, sst2, tmp_path_factory):
    out = tmp_path_factory.mktemp("sst2-model")
    code = main(["finetune", "classify", "--model", str(tiny), "--train", str(sst2[0]), "--dev", str(sst2[1]),
                 "--text-column", "sentence", "--label-column", "label", "--out", str(out), "--epochs", "1",
                 "--batch-size", "16", "--dtype", "fp32", "--finetune.max_length=64", "--finetune.stride=16"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def tagger(tiny, conll, tmp_path_factory):
    """A tiny tagger that predicts some entities after 4 steps: the random tiny encoder's lr 1e-3, and its
    classifier at that lr too (a tagger's default 30x, 0.03, has it predict O everywhere)."""
    out = tmp_path_factory.mktemp("ner-model")
    code = main(["finetune", "tag", "--model", str(tiny), "--train", str(conll[0]), "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--dtype", "fp32",
                 "--finetune.max_length=128", "--finetune.stride=32", "--finetune.head_lr_scale=1"])
    assert code == 0
    return out


def test_finetune_classify_writes_a_model_and_its_log(classifier):
    names = {p.name for p in classifier.iterdir()}
    assert {"config.json", "model.safetensors", "task.json", "task_head.safetensors", "tokenizer.json",
            "log.jsonl", "dev_metrics.json"} <= names
    assert json.loads((classifier / "task.json").read_text())["labels"] == ["0", "1"]


def test_predict_text_lines_gives_labels_and_probabilities(capsys, classifier, tmp_path):
    (tmp_path / "in.txt").write_text("a gorgeous, witty film\nthe plot is a mess\n\ndull\n", encoding="utf-8")
    code, _, err = run(capsys, "predict", "--model", classifier, "--input", tmp_path / "in.txt",
                       "--output", tmp_path / "out.jsonl", "--dtype", "fp32")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert code == 0 and "wrote 4 predictions" in err and len(records) == 4  # one per line, the empty one too
    for record in records:
        assert record["label"] in ("0", "1") and set(record["probabilities"]) == {"0", "1"}
        assert sum(record["probabilities"].values()) == pytest.approx(1.0)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)


def test_evaluate_repeats_the_dev_metrics(capsys, classifier, sst2):
    code, out, _ = run(capsys, "evaluate", "--model", classifier, "--data", sst2[1], "--dtype", "fp32")
    metrics = json.loads(out)
    assert code == 0 and set(metrics) == {"accuracy", "macro_f1", "mcc"}
    assert metrics == pytest.approx(json.loads((classifier / "dev_metrics.json").read_text()))


def test_predict_text_gives_entities_with_character_offsets(capsys, tagger, tmp_path):
    lines = ["Peter Blackburn went to Brussels, Belgium (U.S.A.) yesterday.",
             "EU rejects German call to boycott British lamb.", "Zürich's café-owners met Ms. O'Neil."]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, _ = run(capsys, "predict", "--model", tagger, "--input", tmp_path / "in.txt",
                     "--output", tmp_path / "out.jsonl", "--dtype", "fp32")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert code == 0 and len(records) == 3
    entities = [(text, e) for text, record in zip(lines, records) for e in record["entities"]]
    assert entities, "the tiny model predicted no entity; nothing to check"
    for text, entity in entities:
        assert text[entity["start"]:entity["end"]] == entity["text"] != ""
        assert entity["label"] in ("LOC", "MISC", "ORG", "PER") and "words" not in entity


def test_predict_conll_gives_word_indices_too(capsys, tagger, conll, tmp_path):
    from bertkit.data.readers import read_conll
    code, _, _ = run(capsys, "predict", "--model", tagger, "--input", conll[1], "--output", tmp_path / "out.jsonl",
                     "--dtype", "fp32")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    sentences = read_conll(conll[1])
    assert code == 0 and len(records) == len(sentences)
    checked = 0
    for sentence, record in zip(sentences, records):
        assert len(record["tags"]) == len(sentence.words)
        for entity in record["entities"]:
            first, end = entity["words"]
            assert entity["text"] == " ".join(sentence.words[first:end]) == sentence.text[entity["start"]:entity["end"]]
            checked += 1
    assert checked


def test_bad_input_names_the_file_and_line(capsys, tagger, tmp_path):
    (tmp_path / "bad.conll").write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    for command in (["predict", "--input", tmp_path / "bad.conll", "--output", tmp_path / "o.jsonl"],
                    ["evaluate", "--data", tmp_path / "bad.conll"]):
        code, _, err = run(capsys, command[0], "--model", tagger, *command[1:])
        assert code == 2 and "bad.conll:2: 3 columns; expected 4" in err
    code, _, err = run(capsys, "predict", "--model", tagger, "--input", tmp_path / "missing.txt",
                       "--output", tmp_path / "o.jsonl")
    assert code == 2 and "missing.txt: no such file" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_finetune_errors_speak_to_the_user(capsys, tiny, sst2, tmp_path):
    code, _, err = run(capsys, "finetune", "classify", "--model", tiny, "--train", sst2[0], "--out", tmp_path)
    assert code == 2 and "train.tsv: which column holds the text? Pass --text-column" in err
    code, _, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", tmp_path / "missing.txt",
                       "--out", tmp_path)
    assert code == 2 and "missing.txt: no such file" in err
    code, _, err = run(capsys, "predict", "--model", tiny, "--input", sst2[1], "--output", tmp_path / "o.jsonl")
    assert code == 2 and "no task.json" in err


def test_predict_refuses_to_write_over_its_input(capsys, tagger, conll, tmp_path):
    copy = tmp_path / "sentences.conll"
    copy.write_text(conll[1].read_text())
    code, _, err = run(capsys, "predict", "--model", tagger, "--input", copy, "--output", copy)
    assert code == 2 and "--output is the input file" in err and copy.read_text() == conll[1].read_text()


@pytest.mark.parametrize("content", ["", "sentence\tlabel\n"], ids=["empty", "header only"])
def test_empty_or_header_only_files_are_errors_not_tracebacks(capsys, classifier, tagger, tmp_path, content):
    data = tmp_path / "data.tsv"
    data.write_text(content)
    for model in (classifier, tagger) if not content else (classifier,):  # a tagger reads no header
        code, _, err = run(capsys, "evaluate", "--model", model, "--data", data)
        assert code == 2 and "data.tsv: no examples in this file" in err
    code, _, err = run(capsys, "predict", "--model", classifier, "--input", data, "--output", tmp_path / "o.jsonl")
    assert code == 2 and "data.tsv: no examples in this file" in err


def test_an_empty_dev_file_is_an_error(capsys, tiny, conll, tmp_path):
    (tmp_path / "dev.conll").write_text("\n")
    code, _, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", conll[0], "--dev", tmp_path / "dev.conll",
                       "--out", tmp_path / "out")
    assert code == 2 and "dev.conll: no examples in this file" in err


def test_evaluate_warns_about_labels_the_model_never_saw(capsys, tagger, tmp_path):
    (tmp_path / "dev.conll").write_text("Paris B-CITY\nsleeps O\n")
    code, _, err = run(capsys, "evaluate", "--model", tagger, "--data", tmp_path / "dev.conll")
    assert code == 0 and "labels ['B-CITY', 'I-CITY'] are not among the model's" in err


def test_out_that_is_a_file_fails_before_any_work(capsys, tiny, tmp_path):
    (tmp_path / "taken").write_text("a file")
    code, _, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", tmp_path / "not-read.conll",
                       "--out", tmp_path / "taken")
    assert code == 2 and "taken: is a file; --out names the folder" in err  # before the missing train file


def test_reading_options_for_hard_files(capsys, tiny, classifier, tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin1"))
    code, _, err = run(capsys, "predict", "--model", classifier, "--input", latin, "--output", tmp_path / "o.jsonl")
    assert code == 2 and "--encoding-errors replace" in err
    code, _, err = run(capsys, "predict", "--model", classifier, "--input", latin, "--output", tmp_path / "o.jsonl",
                       "--encoding-errors", "replace")
    assert code == 0 and "1 lines had invalid UTF-8" in err
    utf16 = tmp_path / "utf16.tsv"
    utf16.write_bytes("sentence\tlabel\ngood\t1\n".encode("utf-16"))
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(bytes(range(256)))
    long = tmp_path / "long.tsv"
    long.write_text("sentence\tlabel\n" + "word " * 40000 + "\t1\nshort\t0\n")  # a 200 KB field
    for data, message in ((utf16, "the file is UTF-16, not UTF-8"), (binary, "this is not a text file"), (long, None)):
        code, _, err = run(capsys, "finetune", "classify", "--model", tiny, "--train", data, "--out",
                           tmp_path / data.stem, "--text-column", "sentence", "--label-column", "label",
                           "--epochs", "1", "--finetune.max_length=32", "--finetune.overflow=truncate")
        assert (code, message is None or message in err) == (2 if message else 0, True), err


def test_strict_spans_refuse_a_span_cut_inside_a_word(capsys, tiny, tmp_path):
    spans = tmp_path / "spans.jsonl"
    spans.write_text('{"text": "Acme Corporation hired Ann.", "spans": [{"start": 0, "end": 8, "label": "ORG"}]}\n' * 4)
    code, _, err = run(capsys, "finetune", "span", "--model", tiny, "--train", spans, "--out", tmp_path / "a",
                       "--epochs", "1")
    assert code == 0 and "4 spans do not start and end on word boundaries" in err
    code, _, err = run(capsys, "finetune", "span", "--model", tiny, "--train", spans, "--out", tmp_path / "b",
                       "--strict-spans")
    assert code == 2 and "spans.jsonl:1: span [0, 8) 'ORG' does not start and end on word boundaries" in err


def test_an_option_the_reader_does_not_take_is_named(capsys, tiny, conll, tmp_path):
    code, _, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", conll[0], "--out", tmp_path,
                       "--label-column", "3")
    assert code == 2 and "read_conll takes no option label_column; its options are delimiter" in err


def test_balanced_weights_for_a_crf_are_refused_before_reading(capsys, tiny, tmp_path):
    code, _, err = run(capsys, "finetune", "tag", "--model", tiny, "--train", tmp_path / "not-read.conll", "--out",
                       tmp_path / "out", "--decoder", "crf", "--finetune.class_weights=balanced")
    assert code == 2 and "does not apply to the tag task with a CRF" in err
