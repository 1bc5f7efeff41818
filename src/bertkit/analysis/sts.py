"""Semantic textual similarity without training: the cosine of two sentence vectors against the
gold similarity scores (STS-B: 0-5), as Spearman's and Pearson's correlation. The sentence vectors
come from an encoder (`embed`, pooled) or from static word vectors (averaged, or SIF-weighted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.readers import read_table
from ..metrics.classification import pearson, spearman
from .vectors import row_cosines


def read_sts(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """An STS-B `sts-*.csv` (tab-separated, no header: genre, file, year, id, score, sentence 1,
    sentence 2): the first sentences, the second sentences, the gold scores."""
    examples = read_table(path, 5, 4, 6, header=False, label_kind="score")
    return [e.text for e in examples], [e.pair for e in examples], np.array([e.label for e in examples])


def sts_correlations(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> dict:
    """Spearman and Pearson correlation between the pairs' cosines and the gold scores."""
    cosines = row_cosines(first, second)
    return {"spearman": spearman(cosines, gold), "pearson": pearson(cosines, gold), "pairs": len(gold)}
