import json

import numpy as np
import pytest
import torch

from bertkit import embed, pool


def test_mean_pooled_embeddings_match_sentence_transformers(minilm, minilm_dir, sts_sentences):
    st = pytest.importorskip("sentence_transformers")
    sentences = sts_sentences[:500]
    expected = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, batch_size=32)
    got = embed(*minilm, sentences, precision="fp32", normalize=True, progress=False)
    cosine = (got * expected).sum(1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.99999


def test_bf16_embeddings_stay_close(minilm, sts_sentences):
    sentences = sts_sentences[:200]
    exact = embed(*minilm, sentences, precision="fp32", normalize=True, progress=False)
    fast = embed(*minilm, sentences, precision="bf16", normalize=True, progress=False)
    assert (exact * fast).sum(1).min() > 0.999


def test_int8_keeps_the_sts_benchmark_figure(minilm, data_dir):
    """all-MiniLM-L6-v2 on STS-B dev (1,500 pairs): int8's Spearman within 0.005 of fp32's."""
    from bertkit.analysis.sts import read_sts, sts_correlations
    first, second, gold = read_sts(data_dir / "stsb" / "sts-dev.csv")
    spearman = {}
    for precision in ("fp32", "int8"):
        vectors = embed(*minilm, first + second, precision=precision, progress=False)
        spearman[precision] = sts_correlations(vectors[:len(first)], vectors[len(first):], gold)["spearman"]
    assert spearman["fp32"] == pytest.approx(0.8672, abs=1e-3)
    assert spearman["int8"] >= spearman["fp32"] - 0.005, spearman


def test_results_come_back_in_input_order(minilm, sts_sentences):
    sentences = sts_sentences[:40]
    together = embed(*minilm, sentences, precision="fp32", batch_size=7, progress=False)
    one_by_one = np.stack([embed(*minilm, [s], precision="fp32", progress=False)[0] for s in sentences[:5]])
    assert np.abs(together[:5] - one_by_one).max() < 1e-4


def test_pooling_and_layers_follow_their_definitions(minilm):
    model, tokenizer = minilm
    texts = ["A short one.", "A somewhat longer sentence about cats and dogs."]
    batch = tokenizer.encode(texts).tensors()
    with torch.no_grad():
        out = model(**batch, output_layers=[3, 6])
    mask = batch["attention_mask"]
    cls = embed(model, tokenizer, texts, pooling="cls", precision="fp32", progress=False)
    assert np.allclose(cls, out.last_hidden_state[:, 0].numpy(), atol=1e-5)
    best = embed(model, tokenizer, texts, pooling="max", precision="fp32", progress=False)
    assert np.allclose(best[0], out.last_hidden_state[0, :mask[0].sum()].amax(0).numpy(), atol=1e-5)
    mixed = embed(model, tokenizer, texts, layers=[3, -1], precision="fp32", progress=False)
    expected = pool((out.layers[3] + out.layers[6]) / 2, mask, "mean")
    assert np.allclose(mixed, expected.numpy(), atol=1e-5)


def test_empty_and_whitespace_texts_are_defined(minilm):
    vectors = embed(*minilm, ["", "   ", "word"], precision="fp32", progress=False)
    assert np.isfinite(vectors).all()
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)


def test_long_texts_error_truncate_or_window(minilm):
    long_text = " ".join(["the cat sat on the mat ."] * 900)  # 5,400 words
    with pytest.raises(ValueError, match="more than max_length=512"):
        embed(*minilm, ["short", long_text], progress=False)
    with pytest.warns(UserWarning, match="truncated 1 of 2"):
        cut = embed(*minilm, ["short", long_text], overflow="truncate", precision="fp32", progress=False)
    windows = embed(*minilm, ["short", long_text], overflow="window", precision="fp32", progress=False)
    assert np.isfinite(windows).all() and windows.shape == (2, 384)
    assert np.allclose(cut[0], windows[0], atol=1e-5)
    cosine = windows[1] @ cut[1] / np.linalg.norm(windows[1]) / np.linalg.norm(cut[1])
    assert cosine > 0.9  # a repetitive text: every window says the same


def test_bad_arguments(minilm):
    with pytest.raises(TypeError, match="list of texts"):
        embed(*minilm, "one text")
    with pytest.raises(ValueError, match="pooling must be"):
        embed(*minilm, ["a"], pooling="median", progress=False)
    with pytest.raises(ValueError, match="precision must be"):
        embed(*minilm, ["a"], precision="fp8", progress=False)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, minilm_dir):
    """A 2-layer, 32-wide encoder with MiniLM's tokenizer: fast enough to embed tens of thousands of lines."""
    from bertkit import Encoder, Tokenizer, preset, save_pretrained
    out = tmp_path_factory.mktemp("tiny-embedder")
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    save_pretrained(Encoder(preset("tiny", vocab_size=tokenizer.vocab_size)), out)
    tokenizer.save(out)
    return out


@pytest.fixture(scope="module")
def many_lines(tmp_path_factory, sts_sentences):
    path = tmp_path_factory.mktemp("lines") / "lines.txt"
    lines = [f"{s} ({i})" if i % 97 else "" for i, s in enumerate(sts_sentences * 2)]  # 6,000 lines, some empty
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_embed_file_streams_chunks_into_the_same_vectors_as_embed(minilm, sts_sentences, tmp_path):
    from bertkit.embed import embed_file
    path = tmp_path / "in.txt"
    path.write_text("\n".join(sts_sentences[:150]) + "\n", encoding="utf-8")
    lines, empty, embedded = embed_file(*minilm, path, tmp_path / "out.npy", chunk_lines=64, precision="fp32",
                                        normalize=True, progress=False)
    assert (lines, empty, embedded) == (150, 0, 150)
    expected = embed(*minilm, sts_sentences[:150], precision="fp32", normalize=True, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]  # no leftovers


def test_embed_file_names_the_line_that_is_too_long_before_any_work(minilm, tmp_path):
    from bertkit.embed import embed_file
    path = tmp_path / "in.txt"
    path.write_text("short\n" * 5 + "word " * 600 + "\nshort\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"in.txt:6: 602 tokens, more than max_length=512; pass --overflow truncate"):
        embed_file(*minilm, path, tmp_path / "out.npy", chunk_lines=4, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    embed_file(*minilm, path, tmp_path / "out.npy", chunk_lines=4, progress=False, overflow="truncate")
    assert np.load(tmp_path / "out.npy").shape == (7, 384)


def _embed_command(model_dir, lines_path, out, *extra) -> list[str]:
    return ["-m", "bertkit.cli", "embed", "--model", str(model_dir), "--input", str(lines_path), "--output", str(out),
            "--chunk-lines", "250", "--dtype", "fp32", *extra]


def _embed_in_process(model_dir, lines_path, out) -> np.ndarray:
    """What the command above writes, computed here (the same function, options and chunks)."""
    from bertkit import Tokenizer, load_pretrained
    from bertkit.embed import embed_file
    embed_file(load_pretrained(model_dir), Tokenizer.from_pretrained(model_dir), lines_path, out, chunk_lines=250,
               precision="fp32", progress=False)
    return np.load(out)


def test_embed_resumes_after_sigkill_into_the_file_an_uninterrupted_run_writes(tiny_model_dir, many_lines, tmp_path):
    import subprocess
    import sys
    import time
    from bertkit import Tokenizer, load_pretrained
    from bertkit.embed import embed_file
    whole = _embed_in_process(tiny_model_dir, many_lines, tmp_path / "whole.npy")
    killed = tmp_path / "killed.npy"
    job = subprocess.Popen([sys.executable, *_embed_command(tiny_model_dir, many_lines, killed)],
                           stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed.npy.progress-0.json"
    deadline = time.time() + 120
    while time.time() < deadline and not progress.exists():
        time.sleep(0.005)
    job.kill()  # SIGKILL: no clean-up runs
    job.wait()
    assert not killed.exists(), "the run finished before it was killed; nothing to resume"
    done = len(json.loads(progress.read_text())["done"])
    with pytest.raises(ValueError, match="pass --resume"):  # leftovers are never overwritten silently
        embed_file(load_pretrained(tiny_model_dir), Tokenizer.from_pretrained(tiny_model_dir), many_lines, killed,
                   chunk_lines=250, precision="fp32", progress=False)
    resumed = subprocess.run([sys.executable, *_embed_command(tiny_model_dir, many_lines, killed, "--resume")],
                             check=True, capture_output=True, text=True)
    total = sum(1 for _ in open(many_lines, encoding="utf-8"))
    assert f"resumed: embedded {total - 250 * done} lines" in resumed.stderr  # finished chunks not recomputed
    assert np.array_equal(np.load(killed), whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.npy", "whole.npy"]


def test_resuming_with_other_options_is_refused(tiny_model_dir, many_lines, tmp_path):
    from bertkit import Tokenizer, load_pretrained
    from bertkit.embed import FileRun, embed_file
    model, tokenizer = load_pretrained(tiny_model_dir), Tokenizer.from_pretrained(tiny_model_dir)
    out = tmp_path / "out.npy"
    run = FileRun(out)
    np.lib.format.open_memmap(run.partial, mode="w+", dtype=np.float32, shape=(3, 32))
    run.progress(0).write_text(json.dumps({"key": "another run", "done": [0]}))
    with pytest.raises(ValueError, match="another input, model or options"):
        embed_file(model, tokenizer, many_lines, out, resume=True, progress=False)


def test_two_processes_under_torchrun_write_what_one_writes(tiny_model_dir, many_lines, tmp_path):
    import subprocess
    import sys
    one = _embed_in_process(tiny_model_dir, many_lines, tmp_path / "one.npy")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    *_embed_command(tiny_model_dir, many_lines, tmp_path / "two.npy")], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), one, atol=1e-6)
