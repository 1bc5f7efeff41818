"""Retrieval over a document collection: dense (bertkit's `embed`), BM25 (the `bm25s` library) or
both fused; collections, qrels and runs read and written in the formats IR test collections use.

- Dense: documents are embedded once, a chunk at a time, into a memory-mapped (N, H) float32 matrix,
  so a collection larger than memory is no problem; queries are searched exactly (the inner product
  of unit vectors, i.e. cosine), one block of documents at a time, keeping the top k.
- Hybrid: reciprocal rank fusion (Cormack et al., 2009): a document's score is the sum over runs of
  1 / (60 + its rank there); it needs no score calibration between the runs.
- Files: collections in SMART format (`.I id` records with a `.W` text field, as Cranfield ships) or
  TSV `id<TAB>text`; qrels as `query doc grade` or TREC's `query iteration doc grade`; runs in TREC
  format `query Q0 doc rank score tag`. Every bad line is an error naming the file and the line.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .embed import embed, vectors_key
from .files import atomic_write, write_text
from .metrics.ranking import Qrels, Run, rank_documents
from .model import Encoder
from .textfiles import read_fields, read_lines
from .tokenizer import Tokenizer

# Cranfield's relevance codes (1 most relevant ... 4 least, -1 no interest) as nDCG gains.
CRANFIELD_GRADES = {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}
RRF_K = 60
QUERY_BLOCK = 1024  # queries scored together in a dense search


# ---------------------------------------------------------------------------------- files


def read_collection(path: str | Path, ids: str = "given") -> dict[str, str]:
    """{id: text} of a SMART-format file (`.I id`, text in `.W`; `.T` title joined before it) or a
    TSV file of `id<TAB>text` lines.

    Args:
        ids: "given" keeps each record's id; "position" numbers records 1, 2, ... in file order
            (Cranfield's qrels number its queries so, whatever their `.I`).

    Raises:
        ValueError: an empty collection, a duplicate id, or a line that fits neither format (file:line).
    """
    lines = [(n, line) for n, line in read_lines(path) if line.strip()]
    smart = bool(lines) and lines[0][1].startswith(".I")
    records = _smart_records(path, lines) if smart else _tsv_records(path, lines)
    if not records:
        raise ValueError(f"{path}: no documents; expected SMART records (.I id, .W text) or id<TAB>text lines")
    if ids == "position":
        return {str(i): text for i, (_, _, text) in enumerate(records, start=1)}
    if ids != "given":
        raise ValueError(f"ids must be 'given' or 'position', not {ids!r}")
    out: dict[str, str] = {}
    for line, doc_id, text in records:
        if doc_id in out:
            raise ValueError(f"{path}:{line}: document id {doc_id!r} appears twice")
        out[doc_id] = text
    return out


def _smart_records(path, lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """(line, id, title + text) of each `.I` record."""
    records, field = [], None
    for n, line in lines:
        tag = re.fullmatch(r"\.([A-Z])(?:\s+(\S+))?\s*", line)
        if tag and tag[1] == "I":
            if not tag[2]:
                raise ValueError(f"{path}:{n}: a .I record without an id")
            records.append([n, tag[2], {"T": [], "W": []}])
        elif tag:
            field = tag[1]
        elif not records:
            raise ValueError(f"{path}:{n}: text before the first .I record")
        elif field in ("T", "W"):
            records[-1][2][field].append(line.strip())
    return [(n, doc_id, " ".join(fields["T"] + fields["W"]).strip()) for n, doc_id, fields in records]


def _tsv_records(path, lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    records = []
    for n, line in lines:
        doc_id, tab, text = line.partition("\t")
        if not tab or not doc_id.strip() or len(doc_id.split()) > 1:
            raise ValueError(f"{path}:{n}: expected id<TAB>text, the id one word")
        records.append((n, doc_id.strip(), text.strip()))
    return records


def read_qrels(path: str | Path, grades: Mapping[int, int] | None = None) -> Qrels:
    """{query: {document: grade}} from `query doc code` or `query iteration doc code` lines.

    Args:
        grades: {code: grade} for collections whose codes are not gains (CRANFIELD_GRADES); None
            takes each code as its grade.

    Raises:
        ValueError: a malformed line, a code outside `grades`, or a document judged twice (file:line).
    """
    qrels: dict[str, dict[str, int]] = {}
    for n, line, fields in read_fields(path):
        if len(fields) not in (3, 4) or not re.fullmatch(r"-?\d+", fields[-1]):
            raise ValueError(f"{path}:{n}: expected 'query doc grade' or 'query iteration doc grade', got {line!r}")
        query, doc, code = fields[0], fields[-2], int(fields[-1])
        if grades is not None and code not in grades:
            raise ValueError(f"{path}:{n}: relevance code {code} is not one of {sorted(grades)}")
        if doc in qrels.setdefault(query, {}):
            raise ValueError(f"{path}:{n}: query {query} judges document {doc} twice")
        qrels[query][doc] = grades[code] if grades is not None else code
    if not qrels:
        raise ValueError(f"{path}: no judgments")
    return qrels


def read_run(path: str | Path, queries: Sequence[str] | None = None,
             documents: Sequence[str] | None = None) -> Run:
    """{query: {document: score}} of a TREC run file (`query Q0 doc rank score tag`).

    Args:
        queries, documents: the known ids; a line naming another is an error (a run of another
            collection, or of queries numbered another way).
    """
    known_queries, known_docs = (set(x) if x is not None else None for x in (queries, documents))
    run: dict[str, dict[str, float]] = {}
    for n, line, fields in read_fields(path):
        try:
            query, _, doc, _, score = fields[:5]
            value = float(score)
        except ValueError:
            raise ValueError(f"{path}:{n}: expected 'query Q0 doc rank score tag', got {line!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}:{n}: score {score!r} is not a finite number")
        if known_queries is not None and query not in known_queries:
            raise ValueError(f"{path}:{n}: query {query!r} is not in the qrels")
        if known_docs is not None and doc not in known_docs:
            raise ValueError(f"{path}:{n}: document {doc!r} is not in the collection")
        if doc in run.setdefault(query, {}):
            raise ValueError(f"{path}:{n}: query {query} lists document {doc} twice")
        run[query][doc] = value
    return run


def write_run(path: str | Path, run: Run, tag: str = "bertkit") -> None:
    """Write `run` in TREC format, each query's documents in rank order."""
    lines = [f"{query} Q0 {doc} {rank} {scores[doc]!r} {tag}\n" for query, scores in run.items()
             for rank, doc in enumerate(rank_documents(scores), start=1)]
    write_text(path, "".join(lines))


# ---------------------------------------------------------------------------------- retrieval


def build_index(model: Encoder, tokenizer: Tokenizer, documents: Mapping[str, str], folder: str | Path, *,
                batch_size: int = 32, precision: str = "auto", chunk: int = 8192, progress: bool = True) -> Path:
    """Embed `documents` (unit vectors, mean pooling, long documents as windows) into
    folder/vectors.npy, memory-mapped, with folder/ids.json and folder/key.txt (`vectors_key` of the
    model, tokenizer, precision and documents); returns the folder."""
    folder = Path(folder)
    (folder / "key.txt").unlink(missing_ok=True)  # an interrupted build leaves no key, so is never reused
    ids, texts = list(documents), list(documents.values())
    with atomic_write(folder / "vectors.npy") as tmp:
        vectors = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(len(texts), model.config.hidden_size))
        for start in tqdm(range(0, len(texts), chunk), desc="index", disable=not progress or len(texts) <= chunk):
            vectors[start:start + chunk] = embed(model, tokenizer, texts[start:start + chunk], normalize=True,
                                                 batch_size=batch_size, precision=precision, overflow="window",
                                                 progress=progress)
        vectors.flush()
        del vectors
    write_text(folder / "ids.json", json.dumps(ids))
    # written last: an index with a key is complete
    write_text(folder / "key.txt", vectors_key(model, tokenizer, precision, list(documents.items())))
    return folder


def search_index(folder: str | Path, query_vectors: np.ndarray, query_ids: Sequence[str], k: int = 100,
                 block: int = 65536) -> Run:
    """The top `k` documents of the index in `folder` for each query vector (unit length), exactly."""
    folder = Path(folder)
    doc_ids = json.loads((folder / "ids.json").read_text())
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    run = {}
    for first in range(0, len(query_ids), QUERY_BLOCK):  # (QUERY_BLOCK, block) scores at a time
        queries = torch.from_numpy(np.ascontiguousarray(query_vectors[first:first + QUERY_BLOCK], dtype=np.float32))
        best_scores = torch.full((len(queries), 0), -torch.inf)
        best_rows = torch.zeros((len(queries), 0), dtype=torch.long)
        for start in range(0, len(doc_ids), block):
            scores = queries @ torch.from_numpy(np.array(vectors[start:start + block])).T  # (Q, block) in memory
            scores, found = scores.topk(min(k, scores.shape[1]), dim=1)  # this block's best, then the overall best
            candidates = torch.cat([best_scores, scores], 1)
            best_scores, keep = candidates.topk(min(k, candidates.shape[1]), dim=1)
            best_rows = torch.cat([best_rows, found + start], 1).gather(1, keep)
        run |= {q: {doc_ids[r]: s for r, s in zip(rows.tolist(), scores.tolist())}
                for q, rows, scores in zip(query_ids[first:first + QUERY_BLOCK], best_rows, best_scores)}
    return run


def dense_run(model: Encoder, tokenizer: Tokenizer, documents: Mapping[str, str], queries: Mapping[str, str],
              folder: str | Path, k: int = 100, *, batch_size: int = 32, precision: str = "auto",
              progress: bool = True) -> Run:
    """Embed the documents into `folder` (reused when it holds an index of the same documents, model
    and precision) and search it."""
    folder = Path(folder)
    key = folder / "key.txt"
    if not (key.exists() and key.read_text() == vectors_key(model, tokenizer, precision, list(documents.items()))):
        build_index(model, tokenizer, documents, folder, batch_size=batch_size, precision=precision, progress=progress)
    query_vectors = embed(model, tokenizer, list(queries.values()), normalize=True, batch_size=batch_size,
                          precision=precision, overflow="window", progress=progress)
    return search_index(folder, query_vectors, list(queries), k)


def bm25_run(documents: Mapping[str, str], queries: Mapping[str, str], k: int = 100, progress: bool = True) -> Run:
    """BM25 top `k` per query: bm25s's defaults (Lucene's variant, k1 1.5, b 0.75, English stop
    words) on lower-cased words Porter-stemmed by nltk."""
    try:
        import bm25s
    except ImportError:
        raise ImportError("BM25 retrieval needs the bm25s package: pip install 'bertkit[retrieval]'") from None
    from nltk.stem import PorterStemmer
    porter = PorterStemmer()
    stem = lambda words: [porter.stem(w) for w in words]  # noqa: E731
    doc_ids = list(documents)
    index = bm25s.BM25()
    index.index(bm25s.tokenize(list(documents.values()), stemmer=stem, show_progress=progress), show_progress=progress)
    query_tokens = bm25s.tokenize(list(queries.values()), stemmer=stem, show_progress=progress)
    rows, scores = index.retrieve(query_tokens, k=min(k, len(doc_ids)), show_progress=progress)
    return {q: {doc_ids[r]: float(s) for r, s in zip(row, score) if s > 0}
            for q, row, score in zip(queries, rows, scores)}


def fuse(runs: Sequence[Run], k: int = 100) -> Run:
    """Reciprocal rank fusion of `runs`: score = sum of 1 / (RRF_K + rank); the top `k` per query."""
    fused: dict[str, Counter] = defaultdict(Counter)
    for run in runs:
        for query, scores in run.items():
            fused[query].update({doc: 1.0 / (RRF_K + rank) for rank, doc in enumerate(rank_documents(scores), start=1)})
    return {q: {doc: scores[doc] for doc in rank_documents(scores)[:k]} for q, scores in fused.items()}
