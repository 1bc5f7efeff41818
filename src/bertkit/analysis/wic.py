"""WiC, the Word-in-Context data set (Pilehvar & Camacho-Collados, 2019): does a word mean the same
in two sentences? Two ways to answer:

- without training the encoder: the cosine between the word's vectors in the two sentences, "same"
  above a threshold fitted on the training pairs, per layer, as they are or z-scored with
  statistics fitted on the training pairs (`target_vectors`, `fit_threshold`); the word's vector
  alone, or averaged with its neighbours' (`window`);
- fine-tuned: a pair classifier (`bertkit finetune pair`) on the two sentences with the target
  word marked (`write_pair_file`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..files import write_text
from ..metrics.classification import accuracy
from ..model import Encoder
from ..postprocess import PostProcess, fit_postprocess
from ..static import StaticVectors
from ..textfiles import read_lines
from ..tokenizer import Tokenizer
from .geometry import plot_per_layer
from .vectors import row_cosines, word_vectors

LABELS = {"T": True, "F": False}
MARKS = ("[", "]")  # around the target word in pair files
EQUAL_COSINE = 1e-6


@dataclass(frozen=True)
class WicPair:
    """A target word in two tokenized sentences, at word positions `first_index` and `second_index`."""

    word: str
    pos: str
    first: tuple[str, ...]
    second: tuple[str, ...]
    first_index: int
    second_index: int
    same: bool | None  # the gold label; None without a gold file


def read_wic(data: str | Path, gold: str | Path | None = None) -> list[WicPair]:
    """A WiC `*.data.txt` (word, PoS, index1-index2, sentence 1, sentence 2 per line) and, when
    given, its `*.gold.txt` (T or F per line, the same number of lines)."""
    labels = None
    if gold is not None:
        labels = []
        for number, line in read_lines(gold):
            if line.strip() not in LABELS:
                raise ValueError(f"{gold}:{number}: expected T or F, got {line!r}")
            labels.append(LABELS[line.strip()])
    pairs = []
    for number, line in read_lines(data):
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{data}:{number}: expected 5 tab-separated fields (word, PoS, index1-index2, "
                             f"sentence 1, sentence 2), got {len(fields)}")
        word, pos, indices, first, second = fields
        first_words, second_words = tuple(first.split()), tuple(second.split())
        try:
            i, j = (int(x) for x in indices.split("-"))
        except ValueError:
            raise ValueError(f"{data}:{number}: expected word indices as index1-index2, got {indices!r}") from None
        if not (0 <= i < len(first_words) and 0 <= j < len(second_words)):
            raise ValueError(f"{data}:{number}: index {indices} is outside the sentences "
                             f"({len(first_words)} and {len(second_words)} words)")
        pairs.append(WicPair(word, pos, first_words, second_words, i, j, None))
    if labels is None:
        return pairs
    if len(labels) != len(pairs):
        raise ValueError(f"{gold} has {len(labels)} labels but {data} has {len(pairs)} pairs; line n labels line n")
    return [replace(p, same=label) for p, label in zip(pairs, labels)]


@dataclass
class TargetVectors:
    """The target word's vectors in each pair's two sentences, per asked-for layer."""

    layers: list[int]
    first: np.ndarray  # (N, L, D) float32; zeros where the target has no subword
    second: np.ndarray
    missing: int  # pairs whose target tokenizes to no subword in either sentence

    def cosines(self, standardize: dict[int, PostProcess] | None = None) -> dict[int, np.ndarray]:
        """Per layer, the cosine of each pair's two vectors (cosine 0 where a vector is missing),
        after that layer's fitted standardization when given (a missing vector stays zero: z-scored,
        it would become -mean/std for all alike)."""
        def z(v: np.ndarray, layer: int) -> np.ndarray:
            return np.where(v.any(-1, keepdims=True), standardize[layer](v), 0) if standardize else v
        return {layer: row_cosines(z(self.first[:, k], layer), z(self.second[:, k], layer))
                for k, layer in enumerate(self.layers)}

    def fit_standardization(self) -> dict[int, PostProcess]:
        """Per layer, z-scores fitted on these pairs' target vectors (both sentences; missing ones left out)."""
        both = {layer: np.concatenate([self.first[:, k], self.second[:, k]]) for k, layer in enumerate(self.layers)}
        return {layer: fit_postprocess(v[v.any(-1)], "standardize") for layer, v in both.items()}


def target_vectors(model: Encoder, tokenizer: Tokenizer, pairs: Sequence[WicPair], layers: Sequence[int],
                   batch_size: int = 32, precision: str = "auto", window: int = 0) -> TargetVectors:
    """The target word's vector (subwords averaged) in each pair's two sentences, per layer; with
    `window` > 0, the mean of the vectors of the target and of the words up to `window` places
    before and after it (the sentence's edges cut the window short)."""
    if window < 0:
        raise ValueError(f"window must be 0 or more words, not {window}")
    sentences = [list(p.first) for p in pairs] + [list(p.second) for p in pairs]
    found = word_vectors(model, tokenizer, sentences, layers=list(layers), combine="concat", split_into_words=True,
                         batch_size=batch_size, precision=precision)
    hidden = model.config.hidden_size
    targets = [p.first_index for p in pairs] + [p.second_index for p in pairs]
    vectors = np.zeros((len(sentences), len(layers), hidden), np.float32)
    for row, (words, index) in enumerate(zip(found, targets)):
        if index in words.positions:
            near = [k for k, position in enumerate(words.positions) if abs(position - index) <= window]
            vectors[row] = words.vectors[near].mean(0).reshape(len(layers), hidden)
    found_both = np.array([t in w.positions for w, t in zip(found, targets)]).reshape(2, len(pairs)).all(0)
    return TargetVectors(list(layers), vectors[:len(pairs)], vectors[len(pairs):], int((~found_both).sum()))


def static_target_vectors(static: StaticVectors, pairs: Sequence[WicPair]) -> TargetVectors:
    """The target word's static vector in each pair's two sentences, as layer 0 (a static model has
    one): the same vector wherever the word form is the same, so the cosine is 1 unless the two forms
    differ ("run" / "ran"). Zeros where the form is not in the vocabulary."""
    vectors = np.zeros((2, len(pairs), 1, static.dim), np.float32)
    found = np.zeros((2, len(pairs)), bool)
    for k, p in enumerate(pairs):
        for side, (words, index) in enumerate(((p.first, p.first_index), (p.second, p.second_index))):
            v = static.word_vector(words[index])
            if v is not None:
                vectors[side, k, 0], found[side, k] = v, True
    return TargetVectors([0], vectors[0], vectors[1], int((~found.all(0)).sum()))


def fit_threshold(cosines: np.ndarray, same: Sequence[bool]) -> float:
    """The threshold that makes "same sense when cosine > threshold" most accurate on these pairs:
    the midpoint between two neighbouring distinct cosines, never between equal ones (cosines within
    EQUAL_COSINE of each other count as equal: rounding must not decide an answer)."""
    same = np.asarray(same, bool)
    cosines = np.asarray(cosines, np.float64)
    order = np.argsort(cosines, kind="stable")
    ranked, truth = cosines[order], same[order]
    # Cutting after the k-th smallest cosine: k "different" answers below, the rest "same".
    right = np.concatenate([[0], np.cumsum(~truth)]) + np.concatenate([np.cumsum(truth[::-1])[::-1], [0]])
    allowed = np.concatenate([[True], ranked[1:] - ranked[:-1] > EQUAL_COSINE, [True]])  # not inside a run of equals
    k = int(np.where(allowed, right, -1).argmax())
    if k == 0:
        return float(ranked[0] - EQUAL_COSINE)
    if k == len(ranked):
        return float(ranked[-1] + EQUAL_COSINE)
    return float((ranked[k - 1] + ranked[k]) / 2)


def threshold_accuracy(cosines: np.ndarray, same: Sequence[bool], threshold: float) -> float:
    """The share of pairs answered right by "same sense when cosine > threshold"."""
    return accuracy(list(same), (np.asarray(cosines) > threshold).tolist())


def marked(words: Sequence[str], index: int, marks: tuple[str, str] = MARKS) -> str:
    """The sentence with its target word between marks: `You must [ carry ] your gear .`"""
    return " ".join([*words[:index], marks[0], words[index], marks[1], *words[index + 1:]])


def write_pair_file(pairs: Sequence[WicPair], path: str | Path, marks: tuple[str, str] = MARKS) -> None:
    """The pairs as a TSV for `bertkit finetune pair` (columns sentence1, sentence2, label: T or F),
    the target word marked in both sentences (WiC's sentences hold no square bracket)."""
    rows = ["sentence1\tsentence2\tlabel"]
    for n, p in enumerate(pairs, start=1):
        if p.same is None:
            raise ValueError(f"pair {n} ({marked(p.first, p.first_index, marks)!r}) has no gold label; a training "
                             "file needs them")
        rows.append(f"{marked(p.first, p.first_index, marks)}\t{marked(p.second, p.second_index, marks)}\t"
                    f"{'T' if p.same else 'F'}")
    write_text(path, "\n".join(rows) + "\n")


def plot_wic(results: dict[int, dict], path: str | Path) -> None:
    """Train and dev accuracy of the threshold method per layer, as they are and z-scored."""
    plot_per_layer(results, (("train_accuracy", "train"), ("dev_accuracy", "dev"),
                             ("zscored_train_accuracy", "train, z-scored"), ("zscored_dev_accuracy", "dev, z-scored")),
                   "accuracy", path, "WiC: cosine of the target's two vectors > threshold (fitted on train)",
                   chance=0.5)
