import json

import numpy as np
import pytest
import torch

from bertkit import Tokenizer, load_pretrained
from bertkit.cli import main
from bertkit.retrieval import (CRANFIELD_GRADES, bm25_run, build_index, dense_run, fuse, read_collection, read_qrels,
                               read_run, search_index, write_run)

DOCUMENTS = {"a": "The cat sat on the mat and purred.", "b": "Stock markets fell sharply on Monday.",
             "c": "A recipe for bread: flour, water, yeast and salt.", "d": "The football match ended in a draw."}
QUERIES = {"q1": "how do I bake bread", "q2": "share prices dropped"}


def test_cranfield_files_read_with_their_quirks(data_dir):
    folder = data_dir / "cranfield"
    documents = read_collection(folder / "cran.all.1400")
    queries = read_collection(folder / "cran.qry", ids="position")
    qrels = read_qrels(folder / "cranqrel", CRANFIELD_GRADES)
    assert len(documents) == 1400 and documents["1"].startswith("experimental investigation of the aerodynamics")
    assert list(queries)[:3] == ["1", "2", "3"] and len(queries) == 225  # .I runs 001..365; qrels count by position
    assert "365" not in queries and len(read_collection(folder / "cran.qry")) == 225
    assert len(qrels) == 225 and sum(len(j) for j in qrels.values()) == 1837
    assert sorted({g for j in qrels.values() for g in j.values()}) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name, text, read, message", [
    ("qrels", "1 184 2\n1 29 7\n", lambda p: read_qrels(p, CRANFIELD_GRADES),
     r"qrels:2: relevance code 7 is not one of \[-1, 1, 2, 3, 4\]"),
    ("qrels", "1 184\n", read_qrels, "qrels:1: expected 'query doc grade'"),
    ("run", "q1 Q0 a 1 0.9 x\nq9 Q0 b 2 0.5 x\n", lambda p: read_run(p, queries=["q1"]),
     "run:2: query 'q9' is not in the qrels"),
    ("run", "q1 Q0 zz 1 0.9 x\n", lambda p: read_run(p, documents=DOCUMENTS),
     "run:1: document 'zz' is not in the collection"),
    ("run", "q1 Q0 a one\n", read_run, "run:1: expected 'query Q0 doc rank score tag'"),
    ("docs.tsv", "a\tone\na\ttwo\n", read_collection, "docs.tsv:2: document id 'a' appears twice"),
    ("docs.tsv", "doc 7\tone\n", read_collection, "docs.tsv:1: expected id<TAB>text, the id one word"),
    ("docs.smart", "\n.I\n.W\ntext\n", read_collection, "docs.smart:2: a .I record without an id"),
    ("run", "q1 Q0 a 1 nan x\n", read_run, "run:1: score 'nan' is not a finite number"),
])
def test_bad_files_name_the_line(tmp_path, name, text, read, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        read(tmp_path / name)


def test_a_run_written_reads_back_equal(tmp_path):
    run = {"q1": {"a": 0.5, "b": 0.25, "c": 0.5}, "q2": {"d": 1.0}}
    write_run(tmp_path / "run.txt", run)
    assert read_run(tmp_path / "run.txt") == run
    first = (tmp_path / "run.txt").read_text().splitlines()[0]
    assert first == "q1 Q0 c 1 0.5 bertkit"  # ties: the greater id first, as trec_eval ranks them
    close = {"q": {"a": 0.1234564, "b": 0.1234561}}  # equal to 6 decimals: written in full, ranked alike
    write_run(tmp_path / "close.txt", close)
    assert read_run(tmp_path / "close.txt") == close


def test_search_in_blocks_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(tmp_path / "vectors.npy", vectors)
    (tmp_path / "ids.json").write_text(json.dumps([f"d{i}" for i in range(50)]))
    queries = vectors[:3] + 0.1 * rng.standard_normal((3, 8)).astype(np.float32)
    found = search_index(tmp_path, queries, ["x", "y", "z"], k=5, block=3)  # blocks smaller than k
    for q, query in zip("xyz", queries):
        best = np.argsort(-(vectors @ query))[:5]
        assert list(found[q]) == [f"d{i}" for i in best]
        assert list(found[q].values()) == pytest.approx((vectors @ query)[best].tolist(), abs=1e-6)


def test_reciprocal_rank_fusion_by_hand():
    fused = fuse([{"q": {"a": 3.0, "b": 2.0}}, {"q": {"b": 0.9, "c": 0.1}}])
    assert fused["q"] == pytest.approx({"b": 1 / 62 + 1 / 61, "a": 1 / 61, "c": 1 / 62})
    assert list(fused["q"]) == ["b", "a", "c"]


def test_bm25_and_dense_find_the_obvious_document(tmp_path, minilm_dir):
    assert list(bm25_run(DOCUMENTS, {"q1": "bread recipe"}, k=2, progress=False)["q1"])[0] == "c"
    model, tokenizer = load_pretrained(minilm_dir), Tokenizer.from_pretrained(minilm_dir)
    run = dense_run(model, tokenizer, DOCUMENTS, QUERIES, tmp_path / "index", k=2, precision="fp32", progress=False)
    assert [next(iter(run[q])) for q in QUERIES] == ["c", "b"]  # no shared word with "share prices dropped"
    stamp = (tmp_path / "index" / "vectors.npy").stat().st_mtime_ns
    dense_run(model, tokenizer, DOCUMENTS, QUERIES, tmp_path / "index", k=2, precision="fp32", progress=False)
    assert (tmp_path / "index" / "vectors.npy").stat().st_mtime_ns == stamp  # the same documents: index reused
    with torch.no_grad():
        model.pooler.dense.bias.add_(1.0)  # any other weights: embedded anew
    dense_run(model, tokenizer, DOCUMENTS, QUERIES, tmp_path / "index", k=2, precision="fp32", progress=False)
    assert (tmp_path / "index" / "vectors.npy").stat().st_mtime_ns != stamp
    stamp = (tmp_path / "index" / "vectors.npy").stat().st_mtime_ns
    cased = Tokenizer.from_vocab(minilm_dir / "vocab.txt", lowercase=False)  # another tokenizer: embedded anew
    dense_run(model, cased, DOCUMENTS, QUERIES, tmp_path / "index", k=2, precision="fp32", progress=False)
    assert (tmp_path / "index" / "vectors.npy").stat().st_mtime_ns != stamp
    build_index(model, tokenizer, {"only": "one document"}, tmp_path / "other", progress=False)
    assert np.load(tmp_path / "other" / "vectors.npy").shape == (1, model.config.hidden_size)


def test_bm25_on_cranfield_from_the_command_line(capsys, data_dir, tmp_path):
    folder = data_dir / "cranfield"
    assert main(["retrieve", "--method", "bm25", "--documents", str(folder / "cran.all.1400"), "--queries",
                 str(folder / "cran.qry"), "--query-ids", "position", "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["evaluate-run", "--qrels", str(folder / "cranqrel"), "--run", str(tmp_path / "run"),
                 "--grades", "cranfield", "--documents", str(folder / "cran.all.1400")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["queries"] == 225 and scores["map"] > 0.28 and scores["ndcg@10"] > 0.35  # measured 0.304, 0.372
    assert main(["retrieve", "--method", "dense", "--documents", "x", "--queries", "y", "--output", "z"]) == 2
    assert "--method dense needs --model" in capsys.readouterr().err
