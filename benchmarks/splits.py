"""Splits that the fine-tuning runs make of data sets without a ready one (no side effects on import:
the tests import this module too)."""

from __future__ import annotations

import json
import re
from pathlib import Path


def split_blocks(path: Path, train: Path, test: Path, fraction: float) -> None:
    """Blank-line separated sentences: the first `fraction` to `train`, the rest to `test`."""
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    cut = round(fraction * len(blocks))
    train.write_text("\n\n".join(blocks[:cut]) + "\n\n", encoding="utf-8")
    test.write_text("\n\n".join(blocks[cut:]) + "\n\n", encoding="utf-8")


def split_lines(path: Path, train: Path, test: Path, is_train) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(x for x in lines if is_train(json.loads(x))), encoding="utf-8")
    test.write_text("".join(x for x in lines if not is_train(json.loads(x))), encoding="utf-8")


def sample_lines(path: Path, out: Path, count: int, seed: int = 0) -> None:
    """`count` lines of `path` drawn at random (seeded), in file order."""
    import numpy as np
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = set(np.random.default_rng(seed).choice(len(lines), size=count, replace=False).tolist())
    out.write_text("".join(x for i, x in enumerate(lines) if i in keep), encoding="utf-8")


def pang_lee_fold(review_id: str) -> int:
    """Fold 1..10 of Pang & Lee (2004)'s cross-validation from a review id like "neg/cv114_19501.txt".

    movie_reviews has no train/test split; its README fixes ten folds by the cvNNN tag
    (cv000-cv099 = fold 1, ..., cv900-cv999 = fold 10).
    """
    m = re.search(r"cv(\d{3})_", review_id)
    if not m:
        raise ValueError(f"review id {review_id!r} has no cvNNN_ tag; expected e.g. 'neg/cv114_19501.txt'")
    return int(m.group(1)) // 100 + 1


def first_documents(rows: list[dict], fraction: float) -> set[str]:
    """The doc_id of the first `fraction` of the documents, in file order (GENIA's train split)."""
    docs = list(dict.fromkeys(r["doc_id"] for r in rows))
    return set(docs[:round(fraction * len(docs))])
