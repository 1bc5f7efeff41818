import math
import re
from collections import Counter

import numpy as np
import pytest

from bertkit.metrics.ranking import (ap_at_k, average_precision, evaluate_run, ndcg_at, precision_at,
                                     rank_documents, reciprocal_rank)
from bertkit.retrieval import CRANFIELD_GRADES, read_collection, read_qrels

# Our metric name -> pytrec_eval's.
TREC_NAMES = {"map": "map", "map@5": "map_cut_5", "map@10": "map_cut_10", "mrr": "recip_rank", "P@5": "P_5",
              "P@10": "P_10", "recall@5": "recall_5", "recall@10": "recall_10", "ndcg@5": "ndcg_cut_5",
              "ndcg@10": "ndcg_cut_10", "ndcg": "ndcg", "Rprec": "Rprec"}


def test_the_chapter_example_by_hand():
    # Relevant at ranks 1, 3 and 6 of 10; 4 relevant documents exist.
    relevant = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    assert precision_at(relevant, 5) == 2 / 5
    assert ap_at_k(relevant, 10) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)  # over the relevant retrieved
    assert average_precision(relevant, 4) == pytest.approx((1 + 2 / 3 + 3 / 6) / 4)  # trec_eval: over all relevant
    assert ap_at_k(relevant, 2) == 1.0 and ap_at_k(np.zeros(5), 5) == 0.0
    assert reciprocal_rank(np.array([0, 0, 1])) == pytest.approx(1 / 3) and reciprocal_rank(np.zeros(3)) == 0.0
    gains = np.array([3.0, 0.0, 2.0])
    expected = (3 + 2 / math.log2(4)) / (3 + 2 / math.log2(3))
    assert ndcg_at(gains, [3, 2], 3) == pytest.approx(expected)


def test_ties_break_by_document_id_whatever_the_order_of_the_run():
    scores = {"d1": 0.5, "d3": 0.5, "d2": 0.9, "d10": 0.5}
    assert rank_documents(scores) == ["d2", "d3", "d10", "d1"]
    assert rank_documents(dict(reversed(list(scores.items())))) == rank_documents(scores)


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="no query in the qrels has a document of grade >= 1"):
        evaluate_run({"q": {"d": 0}}, {"q": {"d": 1.0}})
    with pytest.raises(ValueError, match="cut-offs must be positive"):
        evaluate_run({"q": {"d": 1}}, {"q": {"d": 1.0}}, ks=(0,))


@pytest.fixture(scope="module")
def cranfield(data_dir):
    """Cranfield qrels and a tf-idf run whose scores are rounded so that ties occur, the case where
    rankings differ between implementations."""
    folder = data_dir / "cranfield"
    documents = read_collection(folder / "cran.all.1400")
    queries = read_collection(folder / "cran.qry", ids="position")  # as the qrels number them
    qrels = read_qrels(folder / "cranqrel", CRANFIELD_GRADES)
    tokenize = lambda text: re.findall(r"[a-z]+", text.lower())  # noqa: E731
    doc_ids = list(documents)
    counts = [Counter(tokenize(documents[d])) for d in doc_ids]
    df = Counter(term for c in counts for term in c)
    idf = {t: math.log(len(doc_ids) / n) for t, n in df.items()}
    run = {}
    for query, text in queries.items():
        terms = set(tokenize(text)) & set(idf)
        scores = {d: round(sum(c[t] * idf[t] for t in terms) / (1 + sum(c.values())) ** 0.5, 1)
                  for d, c in zip(doc_ids, counts)}
        run[query] = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:100])
    return qrels, run


@pytest.mark.parametrize("threshold", [1, 3])
def test_every_query_equals_pytrec_eval_on_cranfield(cranfield, threshold):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = cranfield
    ties = sum(len(scores) - len(set(scores.values())) for scores in run.values())
    assert ties > 1000  # the run must exercise tie-breaking
    ours = evaluate_run(qrels, run, ks=(5, 10), relevance_threshold=threshold)
    theirs = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_NAMES.values()), relevance_level=threshold).evaluate(run)
    assert ours["unanswered"] == [] and ours["queries"] == len([q for q in theirs if any(
        g >= threshold for g in qrels[q].values())])
    for query, scores in ours["per_query"].items():
        for name, trec_name in TREC_NAMES.items():
            assert scores[name] == pytest.approx(theirs[query][trec_name], abs=1e-6), (query, name)


def test_unanswered_queries_score_zero_and_count_in_the_mean(cranfield):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = cranfield
    partial = {q: docs for q, docs in run.items() if int(q) % 5}  # every fifth query unanswered
    ours = evaluate_run(qrels, partial)
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"map", "recip_rank"}).evaluate(partial)
    assert len(ours["unanswered"]) == 45 and ours["queries"] == 225
    # trec_eval -c: the mean over all qrels queries, the unanswered ones as 0
    assert ours["mean"]["map"] == pytest.approx(sum(s["map"] for s in theirs.values()) / 225, abs=1e-9)
    assert all(ours["per_query"][q]["mrr"] == 0.0 for q in ours["unanswered"])
