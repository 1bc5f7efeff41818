"""Word vectors in context: one vector per input word, from any hidden state or several.

A word's vector combines its subwords' vectors ("mean", or the "first" or "last" subword) in each
asked-for hidden state, and the hidden states are combined by "mean", "sum" (LMMS sums the last
four) or "concat". Words are the pre-split words of `split_into_words=True` inputs, or the words the
tokenizer's pre-tokenizer finds in raw text (punctuation is a word of its own), with their
character offsets. A word that tokenizes to no subword (a lone control character) has no vector:
it is counted in `WordVectors.empty` and left out.

For corpora larger than memory, `write_word_vectors` streams the vectors into a memory-mapped .npy
file with an index (text, word, word text) beside it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import precision as precision_
from ..data.batches import in_length_order
from ..files import atomic_write
from ..heads import first_subwords, pool_words
from ..model import Encoder
from ..padding import right_pad
from ..tokenizer import Tokenizer

COMBINE = ("mean", "sum", "concat")
SUBWORDS = ("mean", "first", "last")


@dataclass
class WordVectors:
    """One text's words and their vectors."""

    words: list[str]
    offsets: list[tuple[int, int]] | None  # character offsets in raw text; None for pre-split words
    vectors: np.ndarray  # (W, D) float32
    empty: int = 0  # words with no subword (no vector; not in `words`)
    positions: list[int] = field(default_factory=list)  # each word's index among the input's words


def unit_rows(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Each row (the last axis) scaled to unit length, in `dtype`; a zero row stays zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of `a` with the same row of `b`, in float64 (two float32 copies of one
    vector give 1 to 1e-15, not float32's +-2e-7); 0 where a row is zero."""
    return (unit_rows(a, np.float64) * unit_rows(b, np.float64)).sum(-1)


def _last_subwords(slots: torch.Tensor) -> torch.Tensor:
    """Slots with only each word's last token kept: (B, T) -> (B, T)."""
    following = torch.cat([slots[:, 1:], torch.full_like(slots[:, :1], -1)], dim=1)
    return torch.where(slots != following, slots, torch.full_like(slots, -1))


@torch.no_grad()
def word_vectors(model: Encoder, tokenizer: Tokenizer, texts: Sequence[str] | Sequence[Sequence[str]], *,
                 layers: int | Sequence[int] = -1, combine: str = "mean", subwords: str = "mean",
                 split_into_words: bool | None = None, batch_size: int = 32, precision: str = "auto",
                 progress: bool = True) -> list[WordVectors]:
    """Vectors of every word of every text, in order.

    Args:
        texts: raw strings, or lists of words (`split_into_words`, default: whether the first
            text is a list).
        layers: hidden state(s): 0 the embeddings, -1 the last layer, negative from the end.
        combine: how several hidden states make one vector: "mean", "sum" or "concat".
        subwords: how a word's subword vectors make one: "mean", "first" or "last".
    """
    if isinstance(texts, str):
        raise TypeError("word_vectors takes a list of texts; wrap a single text in a list")
    if combine not in COMBINE or subwords not in SUBWORDS:
        raise ValueError(f"combine must be one of {COMBINE} and subwords one of {SUBWORDS}, "
                         f"not {combine!r} and {subwords!r}")
    split = (len(texts) > 0 and not isinstance(texts[0], str)) if split_into_words is None else split_into_words
    layer_list = [model.layer_index(i) for i in ([layers] if isinstance(layers, int) else layers)]
    encoded = tokenizer.encode(list(texts), split_into_words=split, max_length=model.config.max_length)
    out: list[WordVectors | None] = [None] * len(texts)
    with precision_.evaluating(model, precision) as device, tqdm(total=len(texts), desc="word vectors",
                                                                 unit="text", disable=not progress) as bar:
        for rows in in_length_order(encoded.lengths, batch_size):
            batch = {k: v.to(device) for k, v in encoded.tensors(rows, tokenizer.pad_id).items()}
            states = model(**batch, output_layers=layer_list).layers
            stacked = [states[i].float() for i in layer_list]
            hidden = (torch.cat(stacked, -1) if combine == "concat" else torch.stack(stacked).sum(0)
                      if combine == "sum" else torch.stack(stacked).mean(0))  # (B, T, D)
            word_ids = [[-1 if w is None else w for w in encoded.word_ids(row)] for row in rows]
            slots = torch.from_numpy(right_pad(word_ids, -1, hidden.shape[1])).to(device)
            picked = {"mean": slots, "first": first_subwords(slots), "last": _last_subwords(slots)}[subwords]
            width = max(1, int(slots.max()) + 1)
            pooled = pool_words(hidden, picked, width).cpu().numpy()  # (B, W, D)
            for b, row in enumerate(rows):
                out[row] = _text_words(texts[row], encoded, row, pooled[b], split)
            bar.update(len(rows))
    return out


def _text_words(text, encoded, row: int, pooled: np.ndarray, split: bool) -> WordVectors:
    """The words of one text that have subwords, their offsets and vectors."""
    present = sorted({w for w in encoded.word_ids(row) if w is not None})
    if split:
        return WordVectors([text[w] for w in present], None, pooled[present].astype(np.float32),
                           empty=len(text) - len(present), positions=present)
    spans: dict[int, list[int]] = {}
    for w, (start, end) in zip(encoded.word_ids(row), encoded.offsets(row)):
        if w is not None:
            spans.setdefault(w, [start, end])[1] = end
    offsets = [tuple(spans[w]) for w in present]
    return WordVectors([text[a:b] for a, b in offsets], offsets, pooled[present].astype(np.float32), positions=present)


def write_word_vectors(model: Encoder, tokenizer: Tokenizer, texts: Sequence[str] | Sequence[Sequence[str]],
                       out: str | Path, *, chunk: int = 1024, progress: bool = True, **options) -> int:
    """Stream the word vectors of `texts` into `out`.npy (memory-mapped, (N, D) float32) and
    `out`.tsv (text, word, word text for each row), `chunk` texts at a time; returns N. `options`
    are `word_vectors`'s."""
    out = Path(out)
    counts = []
    split = options.get("split_into_words")
    split = (len(texts) > 0 and not isinstance(texts[0], str)) if split is None else split
    for start in range(0, len(texts), 4096):  # count first (tokenizing only), so the file has its final size
        encoded = tokenizer.encode(list(texts[start:start + 4096]), split_into_words=split,
                                   max_length=model.config.max_length)
        counts += [len({w for w in encoded.word_ids(r) if w is not None}) for r in range(len(encoded))]
    total = int(sum(counts))
    with atomic_write(out.with_suffix(".npy")) as tmp_npy, atomic_write(out.with_suffix(".tsv")) as tmp_tsv, \
            open(tmp_tsv, "w", encoding="utf-8", newline="") as index:
        writer, matrix, at = csv.writer(index, delimiter="\t", lineterminator="\n"), None, 0
        writer.writerow(["text", "word", "word_text"])
        for start in tqdm(range(0, len(texts), chunk), desc="word vectors", unit="chunk", disable=not progress):
            for i, found in enumerate(word_vectors(model, tokenizer, texts[start:start + chunk], progress=False,
                                                   **{**options, "split_into_words": split}), start=start):
                if matrix is None:  # the first text's vectors give the width
                    shape = (total, found.vectors.shape[1])
                    matrix = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=shape)
                matrix[at:at + len(found.words)] = found.vectors
                at += len(found.words)
                writer.writerows((i, w, text) for w, text in enumerate(found.words))
        if matrix is None:  # no words at all
            with open(tmp_npy, "wb") as f:
                np.save(f, np.zeros((0, 0), dtype=np.float32))
        else:
            matrix.flush()
            del matrix
    return total
