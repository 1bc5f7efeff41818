"""Training instances from a tokenized corpus: BERT sentence pairs, RoBERTa packed blocks, and
language sampling for multilingual corpora.

- `sentence_pairs` follows BERT's create_pretraining_data: segment A is one or more whole sentences
  of a document; B is the true continuation, or (half the time, and always when the chunk holds a
  single sentence) sentences from another document, whose unused sentences go back into the pool.
  Targets are max_length - 3 tokens, shorter with probability 0.1; an over-long pair loses tokens
  from the longer segment, at the front or back at random (counted). The pairs are written once
  beside the corpus shards and read back memory-mapped, so a corpus larger than memory streams.
- `pack_full_sentences` packs the corpus as RoBERTa's FULL-SENTENCES does: contiguous sentences
  fill each block, crossing document boundaries with a [SEP]. Departure from RoBERTa: so that no
  block is padded, a sentence that reaches the end of a block continues at the start of the next
  (the `group_texts` recipe of Hugging Face's run_mlm), instead of moving whole to the next block.
- `language_probabilities`: q_i proportional to p_i ** alpha (XLM; alpha = 0.3 in the chapter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write
from .corpus import Corpus


@dataclass
class SentencePairs:
    """Instances [CLS] A [SEP] B [SEP] stored flat: row r is ids[starts[r]:starts[r + 1]]."""

    ids: np.ndarray  # (total tokens,) int32
    starts: np.ndarray  # (N + 1,) int64
    a_lengths: np.ndarray  # (N,) tokens of [CLS] A [SEP]
    is_random_next: np.ndarray  # (N,) bool: B is from another document (NSP label 1)
    truncated: int  # pairs that lost tokens to fit max_length

    def __len__(self) -> int:
        return len(self.a_lengths)


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> bool:
    """Remove tokens from the longer segment, front or back at random, until both fit."""
    cut = False
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]
        cut = True
    return cut


def sentence_pairs(corpus: Corpus, cls_id: int, sep_id: int, max_length: int = 128,
                   short_seq_prob: float = 0.1, seed: int = 0) -> SentencePairs:
    """BERT's NSP instances from every document of `corpus` (a one-sentence chunk always gets a
    random B, as in BERT), built once into corpus.folder/pairs-.../ and memory-mapped from there.
    Under torch.distributed let one rank build them first."""
    folder = corpus.folder / f"pairs-v1-{max_length}-{short_seq_prob}-{seed}-{cls_id}-{sep_id}"  # v: the algorithm
    if not (folder / "index.npz").exists():
        _write_pairs(corpus, cls_id, sep_id, max_length, short_seq_prob, seed, folder)
    index = np.load(folder / "index.npz")
    ids = np.memmap(folder / "ids.bin", dtype=np.int32, mode="r") if index["starts"][-1] else np.zeros(0, np.int32)
    return SentencePairs(ids, index["starts"], index["a_lengths"], index["is_random_next"], int(index["truncated"]))


def _write_pairs(corpus: Corpus, cls_id: int, sep_id: int, max_length: int, short_seq_prob: float, seed: int,
                 folder: Path) -> None:
    """Stream the pairs' tokens to folder/ids.bin; the per-pair index goes to folder/index.npz."""
    rng = np.random.default_rng(seed)
    max_tokens = max_length - 3
    starts, a_lengths, labels, truncated = [0], [], [], 0
    documents = [d for d in range(corpus.num_documents) if len(corpus.document(d)) > 0]
    with atomic_write(folder / "ids.bin") as tmp, open(tmp, "wb") as out:
        for d in documents:
            for a, b, random_next in _document_pairs(corpus, documents, d, max_tokens, short_seq_prob, rng):
                truncated += _truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    np.asarray([cls_id, *a, sep_id, *b, sep_id], dtype=np.int32).tofile(out)
                    starts.append(starts[-1] + len(a) + len(b) + 3)
                    a_lengths.append(len(a) + 2)
                    labels.append(random_next)
    with atomic_write(folder / "index.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, starts=np.asarray(starts, dtype=np.int64), a_lengths=np.asarray(a_lengths, dtype=np.int64),
                 is_random_next=np.asarray(labels, dtype=bool), truncated=truncated)


def _document_pairs(corpus: Corpus, documents: list[int], d: int, max_tokens: int, short_seq_prob: float,
                    rng: np.random.Generator):
    """Yield (A tokens, B tokens, B is random) for the chunks of document d, as BERT cuts them."""
    sentences = corpus.document(d)
    target = int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens
    chunk: list[int] = []
    length, i = 0, 0
    while i < len(sentences):
        chunk.append(sentences[i])
        length += len(corpus.sentence(sentences[i]))
        if i == len(sentences) - 1 or length >= target:
            a_end = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
            a = [t for s in chunk[:a_end] for t in corpus.sentence(s).tolist()]
            random_next = len(chunk) == 1 or rng.random() < 0.5
            if random_next and len(documents) > 1:
                b = _random_segment(corpus, documents, d, target - len(a), rng)
                i -= len(chunk) - a_end  # the unused sentences are not wasted
            else:
                random_next = False
                b = [t for s in chunk[a_end:] for t in corpus.sentence(s).tolist()]
            yield a, b, random_next
            chunk, length = [], 0
            target = int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens
        i += 1


def _random_segment(corpus: Corpus, documents: list[int], current: int, target: int,
                    rng: np.random.Generator) -> list[int]:
    """Sentences from a random other document, from a random start, until `target` tokens."""
    other = current
    while other == current:
        other = documents[int(rng.integers(len(documents)))]
    sentences = corpus.document(other)
    out: list[int] = []
    for s in sentences[int(rng.integers(len(sentences))):]:
        out += corpus.sentence(s).tolist()
        if len(out) >= target:
            break
    return out


class PackedBlocks:
    """(N, max_length) blocks over a token stream: block k is [CLS] + stream[k*w:(k+1)*w] + [SEP],
    w = max_length - 2. Rows are read on demand, so a memory-mapped stream is never loaded whole.
    Several streams (one per language) concatenate into one index space."""

    def __init__(self, streams: list[np.ndarray], cls_id: int, sep_id: int, max_length: int):
        self.streams, self.cls_id, self.sep_id, self.max_length = streams, cls_id, sep_id, max_length
        self.width = max_length - 2
        counts = [len(s) // self.width for s in streams]
        if min(counts) == 0:
            raise ValueError(f"a corpus holds {min(len(s) for s in streams)} tokens, fewer than one block "
                             f"of {max_length}")
        self.offsets = np.cumsum([0] + counts)  # (streams + 1,) first block of each stream

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index) -> np.ndarray:
        """Rows for an int, a slice or an array of block indices -> (n, max_length) int32 (or one row)."""
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        single = np.ndim(index) == 0
        rows = np.atleast_1d(np.asarray(index, dtype=np.int64))
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"block index out of range for {len(self)} blocks")
        rows = rows % len(self)  # never 0 blocks: the constructor refuses a corpus under one block
        out = np.empty((len(rows), self.max_length), dtype=np.int32)
        out[:, 0], out[:, -1] = self.cls_id, self.sep_id
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for r, (k, s) in enumerate(zip(rows, which)):
            start = (k - self.offsets[s]) * self.width
            out[r, 1:-1] = self.streams[s][start:start + self.width]
        return out[0] if single else out


def full_sentence_stream(corpus: Corpus, sep_id: int) -> np.ndarray:
    """Every document's tokens in order, each followed by [SEP], as a memory-mapped file written
    once beside the corpus shards (documents are copied one at a time, never the whole corpus)."""
    path = corpus.folder / f"stream-sep{sep_id}.bin"
    dtype = np.dtype(corpus.stats["dtype"])
    length = int(corpus.sentence_starts[-1]) + corpus.num_documents
    if not path.exists() or path.stat().st_size != length * dtype.itemsize:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            for d in range(corpus.num_documents):
                for s in corpus.document(d):
                    corpus.sentence(s).tofile(f)
                np.array([sep_id], dtype=dtype).tofile(f)
        tmp.replace(path)
    return np.memmap(path, dtype=dtype, mode="r")


def pack_full_sentences(corpus: Corpus | list[Corpus], cls_id: int, sep_id: int,
                        max_length: int = 512) -> PackedBlocks:
    """FULL-SENTENCES blocks of one corpus, or of several (one per language) in one index space.

    The stream's tail that does not fill a block is dropped (under one block per corpus).
    """
    corpora = corpus if isinstance(corpus, list) else [corpus]
    return PackedBlocks([full_sentence_stream(c, sep_id) for c in corpora], cls_id, sep_id, max_length)


def language_probabilities(sizes: dict[str, int], alpha: float = 0.3) -> dict[str, float]:
    """Sampling probability per language: q_i = p_i^alpha / sum_j p_j^alpha, p_i = n_i / sum_j n_j."""
    if not sizes or any(n <= 0 for n in sizes.values()):
        raise ValueError(f"every language needs a positive size, got {sizes}")
    total = sum(sizes.values())
    weights = {lang: (n / total) ** alpha for lang, n in sizes.items()}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}
