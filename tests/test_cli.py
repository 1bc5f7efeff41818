"""A smoke run of every CLI command, plus the errors a newcomer meets first."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bertkit import Encoder, Tokenizer, add_pretraining_heads, load_pretrained, preset, save_pretrained
from bertkit.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "bertkit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("info", "embed", "similarity", "tokenize", "train-tokenizer", "fill-mask"):
        assert command in result.stdout


def test_info(capsys, minilm_dir):
    code, out, _ = run(capsys, "info", "--model", minilm_dir)
    assert code == 0 and "22,713,216 encoder" in out and "layers        6" in out


def test_embed_writes_one_row_per_line(capsys, minilm_dir, tmp_path):
    (tmp_path / "in.txt").write_text("A man plays a guitar.\n\nA cat sleeps.\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", "--model", minilm_dir, "--input", tmp_path / "in.txt",
                       "--output", tmp_path / "out.npy", "--normalize", "--dtype", "fp32")
    assert code == 0 and "1 empty lines" in err
    vectors = np.load(tmp_path / "out.npy")
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_embed_reports_bad_input(capsys, minilm_dir, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\nna\xefve\n")
    code, _, err = run(capsys, "embed", "--model", minilm_dir, "--input", tmp_path / "bad.txt",
                       "--output", tmp_path / "o.npy")
    assert code == 2 and "bad.txt:2: invalid UTF-8" in err
    code, _, err = run(capsys, "embed", "--model", minilm_dir, "--input", tmp_path / "missing.txt",
                       "--output", tmp_path / "o.npy")
    assert code == 2 and "missing.txt: no such file" in err
    assert not (tmp_path / "o.npy").exists()


def test_similarity_ranks_paraphrases_first(capsys, minilm_dir):
    code, out, _ = run(capsys, "similarity", "--model", minilm_dir, "A man is playing a guitar.",
                       "Someone plays the guitar.", "A chef is cooking pasta.")
    scores = [float(line.split()[0]) for line in out.splitlines()]
    assert code == 0 and len(scores) == 3 and scores[0] == max(scores)


def test_tokenize_prints_json_lines(capsys, minilm_dir):
    code, out, _ = run(capsys, "tokenize", "--tokenizer", minilm_dir, "Hello, world!", "--pair", "again")
    row = json.loads(out)
    assert code == 0 and row["tokens"] == ["[CLS]", "hello", ",", "world", "!", "[SEP]", "again", "[SEP]"]
    assert row["type_ids"] == [0, 0, 0, 0, 0, 0, 1, 1]


def test_train_tokenizer(capsys, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    code, _, err = run(capsys, "train-tokenizer", "--input", corpus, "--out", tmp_path / "tok", "--vocab-size", "60",
                       "--min-frequency", "1")
    assert code == 0 and (tmp_path / "tok" / "vocab.txt").exists() and "60 tokens" in err


def test_fill_mask(capsys, tmp_path, minilm_dir):
    save_pretrained(add_pretraining_heads(Encoder(preset("tiny")), mlm=True), tmp_path)
    for name in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((minilm_dir / name).read_bytes())
    code, out, _ = run(capsys, "fill-mask", "--model", tmp_path, "paris is the [MASK] of france.", "--top-k", "2")
    assert code == 0 and out.startswith("[MASK] #1: ") and out.count("(") == 2


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exit_info:
        main(["teleport"])
    assert exit_info.value.code == 2


def test_embed_with_layers_windows_and_cls(capsys, minilm_dir, tmp_path):
    (tmp_path / "in.txt").write_text("short text\n" + "a long text . " * 400 + "\n", encoding="utf-8")
    code, _, err = run(capsys, "embed", "--model", minilm_dir, "--input", tmp_path / "in.txt", "--output",
                       tmp_path / "out.npy", "--layers=-4,-3,-2,-1", "--pooling", "cls", "--overflow", "window",
                       "--max-length", "128", "--stride", "32")
    assert code == 0, err
    assert np.isfinite(np.load(tmp_path / "out.npy")).all()
    code, _, err = run(capsys, "embed", "--model", minilm_dir, "--input", tmp_path / "in.txt", "--output",
                       tmp_path / "out2.npy")
    assert code == 2 and "in.txt:2: 1602 tokens, more than max_length=512; pass --overflow truncate" in err


def test_embed_checks_its_output_before_any_work(capsys, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\n")
    (tmp_path / "folder").mkdir()
    for output, message in ((texts, "--output is the input file"), (tmp_path / "folder", "is a folder")):
        code = main(["embed", "--model", str(tmp_path / "no-model-here"), "--input", str(texts), "--output", str(output)])
        assert code == 2 and message in capsys.readouterr().err
    assert texts.read_text() == "one text\n"


def test_a_config_json_that_is_not_an_object_is_a_clear_error(capsys, tmp_path):
    save_pretrained(Encoder(preset("tiny", num_layers=1)), tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["info", "--model", str(tmp_path)]) == 2
    assert "config.json: a JSON list; expected an object" in capsys.readouterr().err


def test_empty_corpus_names_its_files(capsys, tmp_path, minilm_dir):
    (tmp_path / "blank.txt").write_text("\n\n")
    assert main(["pretrain", "--corpus", str(tmp_path / "blank.txt"), "--tokenizer", str(minilm_dir), "--out",
                 str(tmp_path / "out"), f"--pretrain.cache={tmp_path / 'cache'}", "--max-steps", "1"]) == 2
    assert "blank.txt: no text in the corpus" in capsys.readouterr().err


def test_score_with_a_learned_metric_and_with_cosine(capsys, minilm_dir, tmp_path):
    from bertkit.data.examples import TextExample
    from bertkit.predict import predict_examples
    from bertkit.tasks.kind import TaskSpec
    from bertkit.tasks.model import TaskModel, save_task_model
    # A model of its own: predicting switches a model between modes, which must not reach the shared fixture's.
    encoder, tokenizer = load_pretrained(minilm_dir), Tokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    learned = TaskModel(encoder, TaskSpec("regress", (), max_length=128, stride=32))
    save_task_model(learned, tokenizer, tmp_path / "learned")
    candidates = ["A man plays a guitar.", "A cat sleeps on the sofa.", ""]
    references = ["Someone is playing music.", "The stock market fell today.", "Anything."]
    (tmp_path / "cand.txt").write_text("\n".join(candidates) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(references) + "\n", encoding="utf-8")
    files = ["--candidates", tmp_path / "cand.txt", "--references", tmp_path / "ref.txt"]
    code, out, err = run(capsys, "score", "--metric", "learned", "--model", tmp_path / "learned", *files,
                         "--output", tmp_path / "learned.jsonl", "--dtype", "fp32")
    assert code == 0, err
    got = [json.loads(x)["score"] for x in open(tmp_path / "learned.jsonl")]
    expected = predict_examples(learned, tokenizer, [TextExample(r, c) for c, r in zip(candidates, references)],
                                precision="fp32")  # read as [CLS] reference [SEP] candidate [SEP]
    assert got == pytest.approx([p["score"] for p in expected], abs=1e-5)
    code, out, err = run(capsys, "score", "--metric", "cosine", "--model", minilm_dir, *files,
                         "--output", tmp_path / "cosine.jsonl", "--dtype", "fp32")
    cosines = [json.loads(x)["score"] for x in open(tmp_path / "cosine.jsonl")]
    assert code == 0 and cosines[0] > 0.4 > cosines[1] and json.loads(out)["pairs"] == 3
    code, _, err = run(capsys, "score", "--metric", "learned", "--model", minilm_dir, *files)
    assert code == 2 and "no task.json" in err
    (tmp_path / "ref.txt").write_text("one line\n", encoding="utf-8")
    code, _, err = run(capsys, "score", "--metric", "cosine", "--model", minilm_dir, *files)
    assert code == 2 and "has 3 lines but" in err and "ref.txt has 1" in err
