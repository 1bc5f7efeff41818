"""The geometry of contextual word vectors, per layer: anisotropy and rogue dimensions.

Ethayarajh (2019): the expected cosine of two random words' vectors from different contexts (the
anisotropy baseline); self-similarity, the mean cosine between one word type's vectors in different
contexts; intra-sentence similarity, the mean cosine between a sentence's word vectors and their
mean. The last two are also given minus the baseline ("adjusted"), as the paper reports them.

Timkey & van Schijndel (2021): dimension i's contribution to the expected cosine,
CC_i = E[u_i v_i / (|u| |v|)] over random pairs (the CC_i sum to the expected cosine); the top-k
dimensions and their share of it; and how much the cosines still say without them (informativity:
the Pearson correlation between the pairs' cosines with all dimensions and without the top k).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..files import figure
from ..model import Encoder
from ..tokenizer import Tokenizer
from .vectors import unit_rows, word_vectors


def layer_vectors(model: Encoder, tokenizer: Tokenizer, sentences: Sequence[str], layers: Sequence[int],
                  precision: str = "auto", progress: bool = True) -> tuple[dict[int, np.ndarray], np.ndarray, list[str]]:
    """Every word vector of every sentence at each layer, in one pass: {layer: (N, D)}, the
    sentence index of each row (N,), and each row's word (lower-cased)."""
    found = word_vectors(model, tokenizer, sentences, layers=list(layers), combine="concat", precision=precision,
                         progress=progress)
    stacked = np.concatenate([f.vectors for f in found])
    D = model.config.hidden_size
    per_layer = {layer: stacked[:, i * D:(i + 1) * D] for i, layer in enumerate(layers)}
    sentence = np.repeat(np.arange(len(found)), [len(f.words) for f in found])
    return per_layer, sentence, [w.lower() for f in found for w in f.words]


def random_pairs(sentence: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` pairs of rows from different sentences."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(sentence), count * 2), rng.integers(0, len(sentence), count * 2)
    keep = sentence[a] != sentence[b]
    return a[keep][:count], b[keep][:count]


def anisotropy(vectors: np.ndarray, sentence: np.ndarray, words: Sequence[str], pairs: int = 10_000,
               max_occurrences: int = 20, seed: int = 0) -> dict:
    """The three measures of one layer's (N, D) word vectors, with their sample sizes."""
    unit = unit_rows(vectors, np.float64)
    a, b = random_pairs(sentence, pairs, seed)
    baseline = float((unit[a] * unit[b]).sum(1).mean())
    by_type: dict[str, list[int]] = defaultdict(list)
    for row, word in enumerate(words):
        by_type[word].append(row)
    self_sims = []
    for rows in by_type.values():
        rows = rows[:max_occurrences]
        if len(set(sentence[rows])) < 2:
            continue
        u = unit[rows]
        other = sentence[rows][:, None] != sentence[rows][None, :]  # different contexts only
        self_sims.append(float((u @ u.T)[other].mean()))
    multiword = [rows for rows in (sentence == s for s in np.unique(sentence)) if rows.sum() > 1]
    # each word vector against its sentence's vector, the mean of the sentence's word vectors
    intra = [float((unit[rows] @ unit_rows(vectors[rows].mean(0), np.float64)).mean()) for rows in multiword]
    self_similarity = float(np.mean(self_sims)) if self_sims else None  # None: no word in two contexts
    intra_sentence = float(np.mean(intra)) if intra else None
    return {"anisotropy": baseline, "pairs": len(a),
            "self_similarity": self_similarity,
            "self_similarity_adjusted": None if self_similarity is None else self_similarity - baseline,
            "word_types": len(self_sims), "intra_sentence": intra_sentence,
            "intra_sentence_adjusted": None if intra_sentence is None else intra_sentence - baseline,
            "sentences": len(intra)}


def rogue_dimensions(vectors: np.ndarray, sentence: np.ndarray, pairs: int = 10_000, top: int = 3,
                     seed: int = 0) -> dict:
    """Each dimension's contribution to the expected cosine, the top ones, their share, and the
    informativity of the cosines without them."""
    unit = unit_rows(vectors, np.float64)
    a, b = random_pairs(sentence, pairs, seed)
    contributions = (unit[a] * unit[b]).mean(0)  # (D,) CC_i; they sum to the expected cosine
    order = np.argsort(-contributions)[:top]
    cosine = (unit[a] * unit[b]).sum(1)
    rest = np.setdiff1d(np.arange(vectors.shape[1]), order)
    without = (unit_rows(vectors[a][:, rest], np.float64) * unit_rows(vectors[b][:, rest], np.float64)).sum(1)
    return {"expected_cosine": float(contributions.sum()), "pairs": len(a),
            "top": [{"dimension": int(i), "contribution": float(contributions[i])} for i in order],
            "top_share": float(contributions[order].sum() / contributions.sum()),
            "informativity": float(np.corrcoef(cosine, without)[0, 1])}


def plot_per_layer(results: dict[int, dict], series: Sequence[tuple[str, str]], ylabel: str, path,
                   title: str | None = None, chance: float | None = None) -> None:
    """One PNG: a line per (key, label) of `series` over the layers of `results`, drawn where every
    layer has a value (z-scored series dashed); a dotted chance line when given."""
    layers = sorted(results)
    with figure(path, figsize=(6, 3.6)) as (_, ax):
        for key, label in series:
            values = [results[layer].get(key) for layer in layers]
            if all(v is not None for v in values):
                ax.plot(layers, values, marker="o", label=label, linestyle="--" if "zscored" in key else "-")
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.legend(fontsize=8)


def plot_geometry(results: dict[int, dict], path) -> None:
    """One PNG: per layer, the anisotropy baseline, self- and intra-sentence similarity, and the top
    dimensions' share of the expected cosine (where measured)."""
    plot_per_layer(results, (("anisotropy", "anisotropy (random pairs)"), ("self_similarity", "self-similarity"),
                             ("intra_sentence", "intra-sentence similarity"), ("top_share", "top dimensions' share")),
                   "cosine / share", path)
