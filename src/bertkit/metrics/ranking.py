"""Ranking metrics for retrieval: precision@k, recall@k, AP@k, MAP, MRR, nDCG@k, R-precision.

A run gives each query's documents a score; qrels give each query's judged documents a relevance
grade. Conventions, each the one trec_eval (and so `pytrec_eval`) uses unless said:
- a run is ranked by score, highest first; tied scores are ordered by document id, the greater id
  (as a string) first, so a ranking never depends on the order a run was written in;
- a document is relevant when its grade is at least `relevance_threshold` (trec_eval's
  `-l`, default 1); unjudged documents are not relevant;
- nDCG uses the grade itself as the gain (negative grades count 0) and discounts rank i by
  log2(i + 1); the ideal ranking sorts every judged grade of the query;
- a query with relevant documents that the run does not answer scores 0 on every metric and counts
  in the means (trec_eval's `-c`); queries of the run without relevant documents in the qrels are
  left out of the means (trec_eval leaves them out too) and counted in the result.

Departure, on purpose: `ap_at_k` is average precision as Jurafsky & Martin define it, the mean of
Precision@r over the relevant documents at or above rank k (so it divides by the relevant documents
retrieved there); `average_precision` is trec_eval's `map` (it divides by all relevant documents of
the query, so a relevant document never retrieved counts as precision 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]  # query -> document -> relevance grade
Run = Mapping[str, Mapping[str, float]]  # query -> document -> score


def rank_documents(scores: Mapping[str, float]) -> list[str]:
    """Document ids by score, highest first; ties by document id, greatest first (trec_eval's order)."""
    return sorted(scores, key=lambda doc: (scores[doc], doc), reverse=True)


def precision_at(relevant: np.ndarray, k: int) -> float:
    """Share of the first `k` ranks that hold a relevant document (`relevant`: 0/1 by rank); a run
    shorter than `k` counts the missing ranks as not relevant."""
    return float(relevant[:k].sum()) / k


def recall_at(relevant: np.ndarray, k: int, num_relevant: int) -> float:
    """Share of the query's `num_relevant` relevant documents found in the first `k` ranks."""
    return float(relevant[:k].sum()) / num_relevant if num_relevant else 0.0


def _precisions_at_hits(relevant: np.ndarray) -> np.ndarray:
    """Precision@r at each rank r that holds a relevant document."""
    hits = np.flatnonzero(relevant)
    return np.arange(1, len(hits) + 1) / (hits + 1)


def ap_at_k(relevant: np.ndarray, k: int) -> float:
    """Average precision as the chapter defines it: the mean Precision@r over the relevant documents
    at ranks r <= k; 0 when none of the first k is relevant."""
    precisions = _precisions_at_hits(relevant[:k])
    return float(precisions.mean()) if len(precisions) else 0.0


def average_precision(relevant: np.ndarray, num_relevant: int, k: int | None = None) -> float:
    """trec_eval's average precision (`map`, or `map_cut_k` with `k`): the summed Precision@r over
    the relevant documents at ranks r <= k, divided by all `num_relevant` of the query."""
    return float(_precisions_at_hits(relevant[:k]).sum()) / num_relevant if num_relevant else 0.0


def reciprocal_rank(relevant: np.ndarray) -> float:
    """1 / the rank of the first relevant document; 0 when none is retrieved."""
    hits = np.flatnonzero(relevant)
    return 1.0 / (hits[0] + 1) if len(hits) else 0.0


def r_precision(relevant: np.ndarray, num_relevant: int) -> float:
    """Precision@R with R the query's number of relevant documents."""
    return precision_at(relevant, num_relevant) if num_relevant else 0.0


def ndcg_at(gains: np.ndarray, judged_gains: Sequence[float], k: int) -> float:
    """Normalised discounted cumulative gain of the first `k` ranks.

    Args:
        gains: (N,) the gain of the document at each rank (its grade, 0 when unjudged or negative).
        judged_gains: the gains of every judged document of the query, for the ideal ranking.
    """
    ideal = np.sort(np.clip(np.asarray(judged_gains, dtype=np.float64), 0, None))[::-1][:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    best = float(ideal @ discounts[:len(ideal)])
    found = gains[:k]
    return float(found @ discounts[:len(found)]) / best if best > 0 else 0.0


def query_scores(ranking: Sequence[str], judgments: Mapping[str, int], ks: Sequence[int] = (5, 10),
                 relevance_threshold: int = 1) -> dict[str, float]:
    """Every metric of one query's ranked document ids against its judgments {document: grade}.

    Returns:
        {"map", "ap@k", "map@k", "mrr", "P@k", "recall@k", "ndcg@k", "ndcg", "Rprec"} for each k in `ks`.
    """
    relevant = np.array([doc in judgments and judgments[doc] >= relevance_threshold for doc in ranking], dtype=np.int64)
    num_relevant = sum(1 for grade in judgments.values() if grade >= relevance_threshold)
    gains = np.clip(np.array([judgments.get(doc, 0) for doc in ranking], dtype=np.float64), 0, None)
    judged = list(judgments.values())
    scores = {"map": average_precision(relevant, num_relevant), "mrr": reciprocal_rank(relevant),
              "Rprec": r_precision(relevant, num_relevant),
              "ndcg": ndcg_at(gains, judged, max(len(ranking), len(judgments), 1))}
    for k in ks:
        scores |= {f"P@{k}": precision_at(relevant, k), f"recall@{k}": recall_at(relevant, k, num_relevant),
                   f"ap@{k}": ap_at_k(relevant, k), f"map@{k}": average_precision(relevant, num_relevant, k),
                   f"ndcg@{k}": ndcg_at(gains, judged, k)}
    return scores


def evaluate_run(qrels: Qrels, run: Run, ks: Sequence[int] = (5, 10), relevance_threshold: int = 1) -> dict:
    """Score a run against qrels, per query and as means over the queries with relevant documents.

    Args:
        qrels: {query: {document: grade}}.
        run: {query: {document: score}}; higher scores rank first (ties: see the module docstring).
        ks: cut-offs for P@k, recall@k, AP@k, MAP@k and nDCG@k.
        relevance_threshold: the lowest grade that counts as relevant for the binary metrics.

    Returns:
        {"per_query": {query: {metric: value}}, "mean": {metric: value}, "queries": how many are
        averaged, "unanswered": queries with relevant documents that the run has no results for (each
        scores 0), "unjudged": run queries without relevant documents in the qrels (left out)}.

    Raises:
        ValueError: no query of the qrels has a relevant document, or a k is not positive.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive, got {list(ks)}")
    scored = sorted(q for q, judged in qrels.items() if any(g >= relevance_threshold for g in judged.values()))
    if not scored:
        raise ValueError(f"no query in the qrels has a document of grade >= {relevance_threshold}")
    per_query = {q: query_scores(rank_documents(run.get(q, {})), qrels[q], ks, relevance_threshold) for q in scored}
    mean = {metric: float(np.mean([s[metric] for s in per_query.values()])) for metric in per_query[scored[0]]}
    return {"per_query": per_query, "mean": mean, "queries": len(scored),
            "unanswered": sorted(q for q in scored if not run.get(q)), "unjudged": sorted(set(run) - set(scored))}
