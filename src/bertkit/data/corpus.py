"""Text files -> documents -> sentences -> token ids, written once to memory-mapped shards.

Documents are whole files, or (`documents="blank_line"`) blank-line separated blocks. Inside a
document, hard-wrapped lines of a paragraph are joined and split into sentences by NLTK's Punkt
(Kiss & Strunk, 2006), trained unsupervised on the start of the corpus itself, so no model download
is needed. Sentences are tokenized in batches by the Rust tokenizer and appended to shards of raw
token ids (uint16 when the vocabulary fits, else uint32); an index records where every sentence and
document starts. Nothing is held whole in memory: a corpus far larger than RAM streams through.

The shards live in a folder keyed by the corpus files (path, size, modification time) and the
tokenizer, so the next run with the same inputs reuses them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..files import atomic_write, write_text
from ..textfiles import DecodeErrors, read_lines, text_files
from ..tokenizer import Tokenizer

SHARD_TOKENS = 1 << 25  # tokens per shard file (64 MiB at uint16)
PUNKT_TRAINING_CHARS = 2_000_000


def files_key(files: list[Path], *settings: object) -> str:
    """A cache key of files (path, size, modification time) and the settings that shape what is
    made of them, including how sentences are split (PUNKT_TRAINING_CHARS)."""
    h = hashlib.sha256("\0".join(map(str, (PUNKT_TRAINING_CHARS, *settings))).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def paragraphs(path: Path, errors: DecodeErrors) -> Iterator[tuple[int, str]]:
    """(first line number, paragraph with its lines joined) for each blank-line separated block."""
    for nonblank, group in groupby(read_lines(path, errors), key=lambda numbered: bool(numbered[1].strip())):
        if nonblank:
            lines = list(group)
            yield lines[0][0], " ".join(line.strip() for _, line in lines)


def train_sentence_splitter(files: list[Path], errors: DecodeErrors):
    """A Punkt sentence splitter trained on the first PUNKT_TRAINING_CHARS characters of the corpus."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer
    sample, size = [], 0
    for text in (text for f in files for _, text in paragraphs(f, errors)):
        sample.append(text)
        size += len(text)
        if size > PUNKT_TRAINING_CHARS:
            break
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train("\n\n".join(sample), finalize=True)
    return PunktSentenceTokenizer(trainer.get_params())


@dataclass
class Corpus:
    """Token ids of sentences in memory-mapped shards, with sentence and document boundaries."""

    folder: Path
    sentence_starts: np.ndarray  # (S + 1,) global token offset where each sentence starts
    document_starts: np.ndarray  # (D + 1,) sentence index where each document starts
    shard_starts: np.ndarray  # (K + 1,) global token offset where each shard starts
    stats: dict

    @classmethod
    def open(cls, folder: str | Path) -> "Corpus":
        folder = Path(folder)
        index = np.load(folder / "index.npz")
        return cls(folder, index["sentence_starts"], index["document_starts"], index["shard_starts"],
                   json.loads((folder / "meta.json").read_text()))

    def __post_init__(self) -> None:
        dtype = np.dtype(self.stats["dtype"])
        self.shards = [np.memmap(self.folder / f"shard-{k:05d}.bin", dtype=dtype, mode="r")
                       if self.shard_starts[k + 1] > self.shard_starts[k] else np.zeros(0, dtype)
                       for k in range(len(self.shard_starts) - 1)]

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    @property
    def num_documents(self) -> int:
        return len(self.document_starts) - 1

    def sentence(self, i: int) -> np.ndarray:
        """Token ids of sentence i (a sentence never crosses a shard boundary)."""
        start, end = int(self.sentence_starts[i]), int(self.sentence_starts[i + 1])
        k = int(np.searchsorted(self.shard_starts, start, side="right")) - 1
        base = int(self.shard_starts[k])
        return self.shards[k][start - base:end - base]

    def document(self, d: int) -> range:
        """The sentence indices of document d."""
        return range(int(self.document_starts[d]), int(self.document_starts[d + 1]))


def build_corpus(paths: list[str | Path], tokenizer: Tokenizer, cache_dir: str | Path, *,
                 documents: str = "file", errors: DecodeErrors = "strict", batch_sentences: int = 20_000,
                 progress: bool = True) -> Corpus:
    """Tokenize a corpus into shards under cache_dir/<key>/, or reuse them if they exist.

    Args:
        paths: text files or folders of .txt files.
        documents: "file" (a document per file) or "blank_line" (blank lines separate documents).
        errors: invalid UTF-8 is an error naming file and line ("strict") or replaced and reported.
    """
    if documents not in ("file", "blank_line"):
        raise ValueError(f"documents must be 'file' or 'blank_line', not {documents!r}")
    files = [f for p in paths for f in text_files(p)]
    folder = Path(cache_dir) / files_key(files, tokenizer.to_json(), documents)
    if (folder / "meta.json").exists():
        return Corpus.open(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(folder, np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    pending: list[str] = []
    document_starts, empty_documents = [0], 0
    for document in document_sentences(files, documents, errors, progress, "tokenize corpus"):
        for sentence in document:
            pending.append(sentence)
            if len(pending) >= batch_sentences:
                writer.add(tokenizer, pending)
                pending = []
        if writer.num_sentences + len(pending) == document_starts[-1]:  # no sentence since the last
            empty_documents += 1
        else:
            document_starts.append(writer.num_sentences + len(pending))
    writer.add(tokenizer, pending)
    if writer.num_tokens == 0:
        writer.file.close()
        shutil.rmtree(folder)
        raise ValueError(f"{', '.join(str(f) for f in files)}: no text in the corpus (every file is empty or blank)")
    stats = {"files": [str(f) for f in files], "documents": len(document_starts) - 1,
             "empty_documents": empty_documents, "sentences": writer.num_sentences, "tokens": writer.num_tokens,
             "dtype": np.dtype(writer.dtype).name, "documents_mode": documents}
    writer.close(np.asarray(document_starts, dtype=np.int64), stats)
    return Corpus.open(folder)


def document_sentences(files: list[Path], documents: str = "file", errors: DecodeErrors = "strict",
                       progress: bool = True, desc: str = "split sentences") -> Iterator[Iterator[str]]:
    """Each document of the corpus as an iterator over its sentences, split by a Punkt splitter
    trained on the corpus's start; a progress bar over the files' bytes."""
    splitter = train_sentence_splitter(files, errors)
    total_bytes = sum(f.stat().st_size for f in files)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
        for f in files:
            for block in _documents(f, documents, errors):
                yield (sentence for text in block for sentence in splitter.tokenize(text))
            bar.update(f.stat().st_size)


def _documents(path: Path, documents: str, errors: DecodeErrors) -> Iterator[Iterator[str]]:
    """Each document of a file as an iterator over its paragraphs (a whole file is never read at once)."""
    if documents == "file":
        yield (text for _, text in paragraphs(path, errors))
    else:
        yield from (iter([text]) for _, text in paragraphs(path, errors))


class _ShardWriter:
    def __init__(self, folder: Path, dtype):
        self.folder, self.dtype = folder, dtype
        self.sentence_starts, self.shard_starts = [0], [0]  # global token offsets
        self.num_tokens = 0
        self.file = open(folder / "shard-00000.bin.tmp", "wb")

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    def add(self, tokenizer: Tokenizer, sentences: list[str]) -> None:
        for ids in tokenizer.token_ids(sentences):
            if self.num_tokens + len(ids) - self.shard_starts[-1] > SHARD_TOKENS:
                self._next_shard()
            np.asarray(ids, dtype=self.dtype).tofile(self.file)
            self.num_tokens += len(ids)
            self.sentence_starts.append(self.num_tokens)

    def _next_shard(self) -> None:
        self._finish_file()
        self.shard_starts.append(self.num_tokens)
        self.file = open(self.folder / f"shard-{len(self.shard_starts) - 1:05d}.bin.tmp", "wb")

    def _finish_file(self) -> None:
        self.file.close()
        tmp = Path(self.file.name)
        tmp.replace(tmp.with_suffix(""))

    def close(self, document_starts: np.ndarray, stats: dict) -> None:
        self._finish_file()
        self.shard_starts.append(self.num_tokens)
        with atomic_write(self.folder / "index.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, sentence_starts=np.asarray(self.sentence_starts, dtype=np.int64),
                     document_starts=document_starts, shard_starts=np.asarray(self.shard_starts, dtype=np.int64))
        write_text(self.folder / "meta.json", json.dumps(stats, indent=2))  # written last: marks the corpus complete
