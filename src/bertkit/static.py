"""Static word embeddings: skip-gram with negative sampling (Mikolov et al., 2013), the baseline that
contextual vectors are measured against. One vector per word type, whatever its context.

Training is gensim's word2vec (`sg=1`), not a hand-written one. The corpus is read and split into
sentences exactly as pretraining reads it (`data.corpus.document_sentences`: paragraphs, Punkt
trained on the corpus), and each sentence into the words of BERT's basic tokenizer (lower-cased,
punctuation split off), so a static vocabulary's words are the words a WordPiece model sees before
it splits them. The tokenized corpus is written once (a sentence a line) into a cache folder keyed
by the files and the settings, and gensim trains from that file (its fast `corpus_file` path).

A trained model is a folder: `vectors.bin` (or `vectors.txt`) in word2vec's binary (text) format,
`counts.txt` with each word's corpus count (word2vec's `-save-vocab` format, which SIF weighting
needs), and `static.json` with the settings and corpus figures.

Sentence vectors (`StaticVectors.sentence_vectors`) average the word vectors, or weight them the
SIF way (Arora et al., 2017): weight a / (a + p(w)), then remove the projection on the first
singular vector of the sentence matrix (not centred, as the paper's code does it), fitted on the
sentences themselves unless others are given.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .data.corpus import document_sentences, files_key
from .files import atomic_write, write_text
from .textfiles import DecodeErrors, text_files
from .tokenizer import basic_words

WORDS_FORMAT = "static-words-1"  # the cache key changes with the way sentences become words


@dataclass
class StaticVectors:
    """A trained skip-gram model: gensim's KeyedVectors with each word's corpus count."""

    keyed: "gensim.models.KeyedVectors"  # noqa: F821
    lowercase: bool = True
    info: dict | None = None

    @property
    def dim(self) -> int:
        return self.keyed.vector_size

    def __contains__(self, word: str) -> bool:
        return word in self.keyed.key_to_index

    def words(self, text: str) -> list[str]:
        """`text` split into this model's word units."""
        return basic_words(text, self.lowercase)

    def word_vector(self, word: str) -> np.ndarray | None:
        """The vector of one word (or WordNet lemma: "belong_to"): the mean of its pieces' vectors
        where the basic tokenizer splits it ("mother-in-law" -> mother, -, in, -, law), over the pieces
        in the vocabulary, punctuation left out unless nothing else is; None when no piece is known."""
        known = [w for w in self.words(word.replace("_", " ")) if w in self]
        known = [w for w in known if any(c.isalnum() for c in w)] or known
        return self.keyed[known].mean(0) if known else None

    def text_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        """Every in-vocabulary word of every text: (N, dim) vectors, each row's text index (N,), the
        words, and how many words were out of the vocabulary (left out)."""
        words, rows, unknown = [], [], 0
        for i, text in enumerate(texts):
            split = self.words(text)
            known = [w for w in split if w in self]
            unknown += len(split) - len(known)
            words += known
            rows += [i] * len(known)
        vectors = self.keyed[words] if words else np.zeros((0, self.dim), np.float32)
        return vectors, np.array(rows, dtype=np.int64), words, unknown

    def probability(self, words: Sequence[str]) -> np.ndarray:
        """Each word's unigram probability in the training corpus (its count / the counts' sum over
        the vocabulary)."""
        return self._unigram[[self.keyed.key_to_index[w] for w in words]]

    @functools.cached_property
    def _unigram(self) -> np.ndarray:
        counts = np.asarray([self.keyed.get_vecattr(w, "count") for w in self.keyed.index_to_key], np.float64)
        return counts / counts.sum()

    def sentence_vectors(self, texts: Sequence[str], weighting: str = "mean", a: float = 1e-3,
                         fit_on: Sequence[str] | None = None) -> tuple[np.ndarray, dict]:
        """(len(texts), dim) sentence vectors and counts of what had no vector.

        weighting: "mean" (the known words' vectors averaged) or "sif" (each weighted a / (a + p(w)),
            averaged, then the common component removed: the first singular vector of the weighted
            averages of `fit_on`'s texts, or of these texts' own when `fit_on` is None).
        A word out of the vocabulary is left out (counted in "unknown_words"); a sentence with no
        known word is a zero vector (counted in "empty_sentences"; its cosine with anything is 0).
        """
        if weighting not in ("mean", "sif"):
            raise ValueError(f"weighting must be 'mean' or 'sif', not {weighting!r}")
        if fit_on is not None and weighting != "sif":
            raise ValueError("fit_on fits SIF's common component: it goes with weighting='sif'")
        out, counts = self._averages(texts, weighting == "sif", a)
        if weighting == "sif":
            fit = out if fit_on is None else self._averages(fit_on, True, a)[0]
            if len(fit) < 2:  # one sentence's own direction would take the whole vector away
                raise ValueError(f"SIF fits its common component on at least 2 sentences, got {len(fit)}; "
                                 "give fit_on (e.g. a corpus's sentences) to embed fewer")
            out = remove_common_component(out, fit)
        return out, counts

    def _averages(self, texts: Sequence[str], sif: bool, a: float) -> tuple[np.ndarray, dict]:
        """Per text, its known words' vectors averaged (SIF-weighted with `sif`); and the counts."""
        vectors, rows, words, unknown = self.text_vectors(texts)
        weights = a / (a + self.probability(words)) if sif else np.ones(len(words))
        per_text = np.bincount(rows, minlength=len(texts))
        out = np.zeros((len(texts), self.dim), np.float64)
        np.add.at(out, rows, weights[:, None] * vectors)
        counts = {"words": len(words) + unknown, "unknown_words": unknown,
                  "empty_sentences": int((per_text == 0).sum())}
        return (out / np.maximum(per_text, 1)[:, None]).astype(np.float32), counts

    def save(self, folder: str | Path, binary: bool = True) -> None:
        """vectors.bin (.txt) in word2vec's format, counts.txt, static.json; each written atomically."""
        folder = Path(folder)
        name = "vectors.bin" if binary else "vectors.txt"
        with atomic_write(folder / name) as vectors, atomic_write(folder / "counts.txt") as counts:
            self.keyed.save_word2vec_format(str(vectors), fvocab=str(counts), binary=binary)
        (folder / ("vectors.txt" if binary else "vectors.bin")).unlink(missing_ok=True)  # never two formats
        write_text(folder / "static.json", json.dumps({**(self.info or {}), "lowercase": self.lowercase,
                                                        "vectors": name}, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> StaticVectors:
        """A folder written by `save` (or `bertkit train-static`)."""
        from gensim.models import KeyedVectors

        folder = Path(folder)
        meta = folder / "static.json"
        if not meta.exists():
            raise FileNotFoundError(f"{folder}: no static.json; is it a folder written by bertkit train-static?")
        info = json.loads(meta.read_text())
        name = info.get("vectors", "vectors.bin")
        keyed = KeyedVectors.load_word2vec_format(str(folder / name), fvocab=str(folder / "counts.txt"),
                                                  binary=name.endswith(".bin"))
        return cls(keyed, info.get("lowercase", True), info)


def is_static(folder: str | Path) -> bool:
    """Whether `folder` holds static word vectors (bertkit train-static's output)."""
    return (Path(folder) / "static.json").exists()


def remove_common_component(x: np.ndarray, fit_on: np.ndarray) -> np.ndarray:
    """x minus its projection on the first right singular vector of `fit_on` (not centred)."""
    _, _, vt = np.linalg.svd(np.asarray(fit_on, np.float64), full_matrices=False)
    u = vt[0]
    return (x - np.outer(x @ u, u)).astype(np.float32)


# ------------------------------------------------------------------------------------------ training


def tokenized_corpus(paths: Sequence[str | Path], cache_dir: str | Path, *, lowercase: bool = True,
                     errors: DecodeErrors = "strict", progress: bool = True) -> tuple[Path, Counter]:
    """The corpus as words, a sentence a line (cache_dir/<key>/words.txt, reused when the files and
    settings are the same), and each word's count."""
    files = [f for p in paths for f in text_files(p)]
    path = Path(cache_dir) / files_key(files, WORDS_FORMAT, lowercase, errors) / "words.txt"
    counts: Counter = Counter()
    if path.exists():
        with open(path, encoding="utf-8") as f:
            counts.update(word for line in f for word in line.split())
        return path, counts
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as out:  # makes the folder
        for document in document_sentences(files, "file", errors, progress, "split and tokenize"):
            for sentence in document:
                words = basic_words(sentence, lowercase)
                if words:
                    counts.update(words)
                    out.write(" ".join(words) + "\n")
        if not counts:  # raised inside the block: nothing is published
            raise ValueError(f"{', '.join(str(f) for f in files)}: no words in the corpus (every file is empty or "
                             "blank)")
    return path, counts


def train_static(paths: Sequence[str | Path], *, dim: int = 300, window: int = 5, negative: int = 5,
                 min_count: int = 5, epochs: int = 5, seed: int = 0, workers: int | None = None,
                 lowercase: bool = True, errors: DecodeErrors = "strict",
                 cache_dir: str | Path = ".bertkit-cache", progress: bool = True) -> StaticVectors:
    """Skip-gram with negative sampling (gensim) on text files or folders of .txt files.

    With more than one worker gensim's threads race on shared weights, so two runs with the same seed
    differ slightly; `workers=1` repeats exactly.
    """
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    for name, value in (("dim", dim), ("window", window), ("negative", negative), ("min_count", min_count),
                        ("epochs", epochs)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    corpus, counts = tokenized_corpus(paths, Path(cache_dir) / "static-words", lowercase=lowercase, errors=errors,
                                      progress=progress)
    kept = sum(1 for c in counts.values() if c >= min_count)
    if not kept:
        top, n = counts.most_common(1)[0]
        raise ValueError(f"min_count {min_count} leaves no vocabulary: the most frequent word, {top!r}, occurs {n} "
                         f"times in the corpus's {sum(counts.values()):,} words; lower --min-count")

    start = time.perf_counter()
    with tqdm(total=epochs, desc="skip-gram epochs", unit="epoch", disable=not progress) as bar:
        class EpochBar(CallbackAny2Vec):
            def on_epoch_end(self, model):
                bar.update(1)

        model = Word2Vec(corpus_file=str(corpus), vector_size=dim, window=window, negative=negative,
                         min_count=min_count, epochs=epochs, sg=1, seed=seed,
                         workers=workers or min(os.cpu_count() or 1, 8), callbacks=[EpochBar()])
    info = {"corpus": [str(p) for p in paths], "words": sum(counts.values()), "word_types": len(counts),
            "vocabulary": len(model.wv), "dim": dim, "window": window, "negative": negative,
            "min_count": min_count, "epochs": epochs, "seed": seed,
            "train_seconds": round(time.perf_counter() - start, 1)}
    return StaticVectors(model.wv, lowercase, info)
