"""Lexical-sample word sense disambiguation: many tagged contexts of one word ("hard", "interest"
in NLTK's Senseval files), sense embeddings averaged from tagged contexts, and the nearest sense.

`nearest_sense_folds` measures it the usual way, k-fold cross-validated: each fold's contexts take
the sense whose training centroid is the nearest by cosine (or the sense of the nearest training
context), against the training folds' most frequent sense. `plot_senses` draws the contexts in
2-D (PCA), coloured by sense.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import figure
from .vectors import unit_rows
from .wsd import Instance, nltk_corpus

PENN_TO_UPOS = {"N": "NOUN", "V": "VERB", "J": "ADJ", "R": "ADV"}  # by the tag's first letter


def read_senseval(path: str | Path) -> tuple[list[Instance], list[str]]:
    """The contexts of a Senseval lexical-sample file (NLTK's `*.pos` format) as instances (the
    lemma from the item's name, e.g. "hard-a" -> "hard"), and each one's first tagged sense."""
    from nltk.corpus.reader.senseval import SensevalCorpusReader

    path = Path(path)
    folder = nltk_corpus(path.parent, "senseval", [path.name])
    try:
        found = list(SensevalCorpusReader(str(folder), [path.name]).instances(path.name))
    except (AssertionError, ValueError) as e:  # NLTK's reader asserts on what it cannot parse
        raise ValueError(f"{path}: not a Senseval lexical-sample file NLTK can read ({e or 'malformed'})") from None
    instances, senses = [], []
    for n, context in enumerate(found):
        if context.position is None or not context.senses:
            raise ValueError(f"{path}: instance {n + 1} ({context.word}) has no <head> word or no sense tag")
        words = tuple(w if isinstance(w, str) else w[0] for w in context.context)  # a few words come untagged
        tag = context.context[context.position]
        pos = PENN_TO_UPOS.get(tag[1][:1], "X") if isinstance(tag, tuple) else "X"
        instances.append(Instance(f"{context.word}.{n}", context.word.rsplit("-", 1)[0], pos, words,
                                  context.position, path.name))
        senses.append(context.senses[0])
    if not instances:
        raise ValueError(f"{path}: no <instance> found; expected a Senseval lexical-sample file")
    return instances, senses


def sense_centroids(vectors: np.ndarray, senses: Sequence[str]) -> dict[str, np.ndarray]:
    """Sense embeddings from tagged contexts: the mean of each sense's unit vectors, unit length."""
    unit = unit_rows(vectors)
    return {sense: unit_rows(unit[[s == sense for s in senses]].mean(0)) for sense in dict.fromkeys(senses)}


def nearest_sense_folds(vectors: np.ndarray, senses: Sequence[str], folds: int = 5, seed: int = 0,
                        by: str = "centroid") -> dict:
    """k-fold cross-validated accuracy of the nearest sense against the most frequent sense of the
    training folds; contexts shuffled (seeded) before they are cut into folds. `by` "centroid": the
    sense whose embedding (mean of its training contexts) is nearest by cosine; "example": the sense
    of the nearest training context (1-nearest neighbour)."""
    if by not in ("centroid", "example"):
        raise ValueError(f"by must be 'centroid' or 'example', not {by!r}")
    if len(senses) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(senses)} senses")
    if not 2 <= folds <= len(senses):
        raise ValueError(f"folds must be between 2 and the {len(senses)} contexts, not {folds}")
    senses = np.asarray(senses)
    unit = unit_rows(vectors)
    order = np.random.default_rng(seed).permutation(len(senses))
    nearest, frequent = [], []
    correct_by_sense: Counter = Counter()
    for test in np.array_split(order, folds):
        train = np.setdiff1d(order, test)
        if by == "centroid":
            centroids = sense_centroids(unit[train], senses[train].tolist())
            names = np.array(list(centroids))
            predicted = names[(unit[test] @ np.stack([centroids[s] for s in names]).T).argmax(1)]
        else:
            predicted = senses[train][(unit[test] @ unit[train].T).argmax(1)]
        majority = Counter(senses[train].tolist()).most_common(1)[0][0]
        nearest.append(float((predicted == senses[test]).mean()))
        frequent.append(float((senses[test] == majority).mean()))
        correct_by_sense.update(senses[test][predicted == senses[test]].tolist())
    counts = Counter(senses.tolist())
    return {"by": by, "contexts": len(senses), "folds": folds, "accuracy": float(np.mean(nearest)),
            "most_frequent_sense": float(np.mean(frequent)), "fold_accuracy": nearest,
            "senses": {s: {"contexts": c, "accuracy": correct_by_sense[s] / c} for s, c in counts.most_common()}}


def plot_senses(vectors: np.ndarray, senses: Sequence[str], path: str | Path, title: str) -> None:
    """The contexts' vectors projected on their first two principal components, coloured by sense."""
    centred = vectors - vectors.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    explained = s[:2] ** 2 / (s**2).sum()
    with figure(path, figsize=(6.5, 5)) as (_, ax):
        for sense, count in Counter(senses).most_common():
            keep = np.array([x == sense for x in senses])
            ax.scatter(xy[keep, 0], xy[keep, 1], s=6, alpha=0.5, label=f"{sense} ({count})")
        ax.set_xlabel(f"PC1 ({explained[0]:.0%} of the variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.0%})")
        ax.set_title(title)
        ax.legend(markerscale=3, fontsize=8)
