"""BERTScore (Zhang et al., 2020): how well the token vectors of a candidate and a reference match.

Each token of the candidate is matched to its most similar token of the reference (cosine of the
hidden states of one layer), and the other way round:

    P  = sum_i w_i max_j cos(c_i, r_j) / sum_i w_i      over candidate tokens i
    R  = sum_j w_j max_i cos(c_i, r_j) / sum_j w_j      over reference tokens j
    F1 = 2 P R / (P + R)

Conventions, each that of the `bert_score` package (0.3.13), which this module equals to 1e-4
(tests/test_bertscore.py) where bert_score's maximum is exact (first departure), unless listed
under departures:

- Tokens: each text is stripped and tokenized whole, [CLS] text [SEP] (<s> text </s> for RoBERTa).
- Weights: [CLS] and [SEP] weigh 0 and every other token 1; with idf, a token weighs
  idf(t) = log((M + 1) / (df(t) + 1)), M the number of references, df(t) how many of them hold t (a
  reference listed twice counts twice); a token in no reference weighs log(M + 1). The table comes
  from the references alone and weighs candidate tokens too. [CLS] and [SEP] are in every
  reference, so their idf is log(1) = 0.
- [CLS] and [SEP] weigh 0 but still take part in every maximum: a candidate token may find its best
  match in the reference's [CLS] or [SEP], and a reference token in the candidate's. bert_score
  zeroes their weight, not their similarity, and so does this module.
- An empty candidate or reference (no token besides [CLS] and [SEP]: "", spaces, characters the
  tokenizer drops) scores P = R = F1 = 0; `BertScores.empty` counts such pairs. Rescaled, that 0
  becomes (0 - b) / (1 - b) like any other score, so rescaling stays one linear map.

Departures from bert_score:

- Each maximum runs over real tokens only. bert_score multiplies the similarities of padded
  positions by 0 and keeps them in the maximum, so a token whose similarities are all negative
  scores 0 instead of its best match when its partner is shorter than the longest of its batch: its
  score depends on the batch. On STS-B dev with all-MiniLM-L6-v2 this moves F1 by up to 0.03 at the
  last layer and 0.002 at layer 0 (unrelated pairs); at layers 1-5 every best match is positive and
  the two agree to 3e-7. With batch_size=1 (no padding) bert_score agrees at every layer.
- When every weight of a text is 0 (idf, every token of the text in every reference, as with a
  single reference) bert_score returns NaN; here the text's tokens other than [CLS] and [SEP] weigh
  equally, and `BertScores.unweighted` counts such texts.
- Texts longer than the model's positions (512) are read in overlapping windows (`stride` tokens
  shared); each token takes its vector from the window where it has the most context, max over
  windows of min(tokens left of it, tokens right of it), the rule `data/alignment.py` applies to
  words; [CLS] comes from the first window, [SEP] from the last. bert_score cuts them at 512
  tokens without a word.
- Rescaling, (s - b) / (1 - b), takes baselines that `compute_baseline` measures for any model and
  layer on any corpus (random pairs of its sentences) and saves as JSON; bert_score ships baselines
  for a fixed list of hub models and returns raw scores, with a line on stderr, for any other.
  A baseline of another model, layer or weighting is refused, never skipped.
- Scores do not depend on the order of the pairs (texts are deduplicated and encoded in an order of
  their own) and, to float rounding, not on the batch size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision as precision_
from .data.batches import in_length_order
from .files import write_text
from .model import Encoder, fingerprint
from .padding import right_pad
from .tokenizer import Tokenizer

BATCH_TOKENS = 16384  # padded tokens per forward pass: measured 1.8x faster than 64 texts a batch on STS-B (2 cores)
MATCH_BUDGET = 1 << 24  # similarity entries (layers x pairs x candidate x reference tokens) per matching step
BASELINE_FORMAT = "bertkit-bertscore-baseline"
BASELINE_CHUNK = 512  # random pairs scored at once while measuring a baseline (all layers' vectors in memory)


@dataclass
class BertScores:
    """Per-pair BERTScores and what they were computed with."""

    precision: np.ndarray  # (N,) float64
    recall: np.ndarray  # (N,)
    f1: np.ndarray  # (N,)
    layer: int
    idf: bool
    rescaled: bool
    empty: int = 0  # pairs with an empty candidate or reference, scored 0 (before rescaling)
    windowed: int = 0  # distinct texts longer than the model's positions, read in windows
    unweighted: int = 0  # distinct texts whose idf weights were all 0, weighted equally instead

    def mean(self) -> dict[str, float]:
        return {"precision": float(self.precision.mean()), "recall": float(self.recall.mean()),
                "f1": float(self.f1.mean())}


def default_layer(model: Encoder, folder: str | Path | None = None) -> tuple[int, str]:
    """The layer to score with when none is given, and why.

    - A sentence-transformers model (modules.json in its folder): the last layer, which its
      training shapes for similarity; measured for all-MiniLM-L6-v2, whose last layer leads on STS-B
      dev (Spearman of F1 0.865; 0.761 at layer 5, 0.687 at layer 4; README).
    - Any other model: 3/4 of its depth, rounded up, where bert_score's table of layers tuned on
      WMT16 puts most models (bert-base 9 of 12, bert-large 18 of 24, the 4-, 6- and 10-layer
      BERTs 3, 5 and 8).
    """
    n = len(model.layers)
    if folder is not None and (Path(folder) / "modules.json").exists():
        return n, f"the last of {n} layers, as for sentence-transformers models (measured best for all-MiniLM-L6-v2)"
    return math.ceil(0.75 * n), f"3/4 of the model's {n} layers, rounded up (bert_score's rule of thumb)"


def bertscore(model: Encoder, tokenizer: Tokenizer, candidates: Sequence[str], references: Sequence[str], *,
              layer: int, idf: bool = False, baseline: dict | None = None, batch_size: int = 1024,
              precision: str = "auto", max_length: int | None = None, stride: int = 64,
              progress: bool = True) -> BertScores:
    """BERTScore of each candidate against the reference at the same position.

    Args:
        layer: hidden state whose token vectors are matched (0 the embeddings, -1 the last layer);
            `default_layer` picks one.
        idf: weigh tokens by their idf among `references` (otherwise every token but [CLS] and
            [SEP] weighs 1).
        baseline: from `load_baseline`: rescale each score s to (s - b) / (1 - b).
        max_length: the window in tokens (default: the model's positions); longer texts are read
            in windows sharing `stride` tokens.

    Returns:
        BertScores with (N,) arrays in input order.
    """
    scores = score_layers(model, tokenizer, candidates, references, layers=[layer], idf=idf,
                          batch_size=batch_size, precision=precision, max_length=max_length, stride=stride,
                          progress=progress)[model.layer_index(layer)]
    return rescale(scores, baseline) if baseline is not None else scores


@torch.no_grad()  # not inference_mode: under it, autocast re-casts every weight on every call
def score_layers(model: Encoder, tokenizer: Tokenizer, candidates: Sequence[str], references: Sequence[str], *,
                 layers: Sequence[int], idf: bool = False, idf_weights: np.ndarray | None = None,
                 batch_size: int = 1024, precision: str = "auto", max_length: int | None = None, stride: int = 64,
                 progress: bool = True) -> dict[int, BertScores]:
    """Raw BERTScores at several layers from one pass of the encoder: {layer (0..L): BertScores}.

    `idf_weights` (from `idf_table`) weighs tokens by another corpus's idf than the references'.
    """
    if isinstance(candidates, str) or isinstance(references, str):
        raise TypeError("bertscore takes lists of texts; wrap a single text in a list")
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references; they are scored in pairs")
    if not candidates:
        raise ValueError("no pairs to score")
    layers = sorted({model.layer_index(i) for i in layers})
    texts = sorted({t.strip() for t in (*candidates, *references)})  # encoded in an order of their own
    row = {t: i for i, t in enumerate(texts)}
    ids = text_token_ids(tokenizer, texts)
    special = np.array(sorted({tokenizer.role_id("cls"), tokenizer.role_id("sep")}))
    table = idf_table([ids[row[t.strip()]] for t in references], tokenizer.vocab_size) if idf else idf_weights
    weights, unweighted = token_weights(ids, special, table)
    vectors, offsets, windowed = token_vectors(model, tokenizer, ids, layers, batch_size=batch_size,
                                               precision=precision, max_length=max_length, stride=stride,
                                               progress=progress)
    cand = np.array([row[t.strip()] for t in candidates], dtype=np.int64)
    ref = np.array([row[t.strip()] for t in references], dtype=np.int64)
    P, R, F = match(vectors, offsets, weights, cand, ref)  # (layers, N) each
    lengths = np.diff(offsets)
    empty = (lengths[cand] <= 2) | (lengths[ref] <= 2)
    P[:, empty], R[:, empty], F[:, empty] = 0.0, 0.0, 0.0
    return {layer: BertScores(P[k], R[k], F[k], layer, table is not None, False, int(empty.sum()), windowed, unweighted)
            for k, layer in enumerate(layers)}


def text_token_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """[CLS] tokens [SEP] of each text, whole (no window yet), tokenized in one parallel call."""
    cls, sep = tokenizer.role_id("cls"), tokenizer.role_id("sep")
    return [np.array([cls, *ids, sep], dtype=np.int64) for ids in tokenizer.token_ids(list(texts))]


def idf_table(reference_ids: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """idf of every token id, log((M + 1) / (df + 1)), from the token ids of M references: (vocab,) float64."""
    vocab = max([vocab_size, *(1 + int(i.max()) for i in reference_ids)])
    df = np.bincount(np.concatenate([np.unique(i) for i in reference_ids] or [np.zeros(0, np.int64)]), minlength=vocab)
    return np.log((len(reference_ids) + 1) / (df + 1))


def token_weights(ids: Sequence[np.ndarray], special: np.ndarray, table: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Each token's weight, all texts' tokens in one flat array, and how many non-empty texts had
    all weights 0 (weighted equally instead)."""
    flat = np.concatenate(ids)
    weights = np.ones(len(flat)) if table is None else table[flat]
    ordinary = ~np.isin(flat, special)
    weights = np.where(ordinary, weights, 0.0)
    starts = np.cumsum([0, *map(len, ids)])[:-1]
    totals = np.add.reduceat(weights, starts)
    counts = np.add.reduceat(ordinary.astype(np.int64), starts)
    fallback = (totals == 0) & (counts > 0)
    in_fallback = np.repeat(fallback, [len(i) for i in ids])
    return np.where(in_fallback & ordinary, 1.0, weights), int(fallback.sum())


def windows(length: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows over `length` tokens, `size` tokens each, neighbours sharing `stride`; and for every
    token the window it is read from: the one where it has the most context, max over windows of
    min(tokens left of it, tokens right of it) inside the window, ties to the earlier window.

    Returns:
        (K, 2) [start, end) of each window, and (length,) the window of each token.
    """
    if not 0 <= stride < size:
        raise ValueError(f"stride {stride} must be >= 0 and less than the window's {size} tokens")
    starts = np.arange(0, max(length - stride, 1), size - stride)
    bounds = np.stack([starts, np.minimum(starts + size, length)], axis=1)
    p = np.arange(length)[None, :]
    context = np.minimum(p - bounds[:, :1], bounds[:, 1:] - 1 - p)  # (K, length); < 0 outside the window
    return bounds, context.argmax(axis=0)


def token_vectors(model: Encoder, tokenizer: Tokenizer, ids: Sequence[np.ndarray], layers: Sequence[int], *,
                  batch_size: int = 1024, precision: str = "auto", max_length: int | None = None, stride: int = 64,
                  progress: bool = True) -> tuple[torch.Tensor, np.ndarray, int]:
    """Unit-length hidden states of every token of every text at `layers`.

    Returns:
        (tokens, len(layers), H) float32, all texts one after another; (texts + 1,) offsets of each
        text's tokens; how many texts were read in windows.
    """
    size = (max_length or model.config.max_length) - 2  # tokens of text in a window
    cls, sep = tokenizer.role_id("cls"), tokenizer.role_id("sep")
    sequences, take = [], []  # take: per text, (sequence, position) of each of its tokens
    for text_ids in ids:
        bounds, source = windows(len(text_ids) - 2, size, stride)
        first = len(sequences)
        sequences += [np.concatenate([[cls], text_ids[1 + s:1 + e], [sep]]) for s, e in bounds]
        inner = np.arange(len(text_ids) - 2)
        where = np.concatenate([[first], first + source, [first + len(bounds) - 1]])
        pos = np.concatenate([[0], 1 + inner - bounds[source, 0], [bounds[-1, 1] - bounds[-1, 0] + 1]])
        take.append(np.stack([where, pos], axis=1))
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    hidden = _encode(model, sequences, lengths, layers, tokenizer.pad_id, batch_size, precision, progress)
    take_all = np.concatenate(take)
    seq_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    vectors = hidden[torch.from_numpy(seq_starts[take_all[:, 0]] + take_all[:, 1])]
    offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids])])
    return vectors, offsets, int(sum(len(i) - 2 > size for i in ids))


def _encode(model: Encoder, sequences: list[np.ndarray], lengths: np.ndarray, layers: Sequence[int], pad_id: int,
            batch_size: int, precision: str, progress: bool) -> torch.Tensor:
    """(sum of lengths, len(layers), H) unit vectors of every position of every sequence, in order."""
    out = torch.empty(int(lengths.sum()), len(layers), model.config.hidden_size)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    with precision_.evaluating(model, precision) as device, tqdm(total=len(sequences), desc="bertscore",
                                                                 unit="seq", disable=not progress) as bar:
        for rows in in_length_order(lengths, batch_size, BATCH_TOKENS):  # longest first: a memory error shows at once
            input_ids = torch.from_numpy(right_pad([sequences[r] for r in rows], pad_id))
            mask = torch.arange(input_ids.shape[1])[None, :] < torch.from_numpy(lengths[rows])[:, None]
            result = model(input_ids.to(device), mask.long().to(device), output_layers=layers, last_layer=max(layers))
            hidden = torch.stack([result.layers[i] for i in layers], dim=2).float()  # (B, T, layers, H)
            hidden = torch.nn.functional.normalize(hidden[mask.to(device)], dim=-1).cpu()  # (tokens, layers, H)
            at = torch.from_numpy(np.concatenate([starts[r] + np.arange(lengths[r]) for r in rows]))
            out[at] = hidden
            bar.update(len(rows))
    return out


def match(vectors: torch.Tensor, offsets: np.ndarray, weights: np.ndarray, cand: np.ndarray,
          ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of the texts cand[n] and ref[n] (rows of `offsets`), at every layer at once.

    Pairs are matched in padded chunks of similar lengths, sorted by lengths and then by text, so a
    chunk's make-up does not depend on the order of the pairs.

    Returns:
        P, R, F1, each (layers, N) float64.
    """
    lengths = np.diff(offsets)
    num_layers, n = vectors.shape[1], len(cand)
    P, R = np.zeros((num_layers, n)), np.zeros((num_layers, n))
    order = np.lexsort((ref, cand, lengths[ref], lengths[cand]))
    for chunk in _chunks(lengths[cand[order]], lengths[ref[order]], num_layers):
        pairs = order[chunk]
        c, c_real, c_weight = _padded(vectors, offsets, weights, cand[pairs])  # (layers, B, Tc, H), (B, Tc) x 2
        r, r_real, r_weight = _padded(vectors, offsets, weights, ref[pairs])
        sim = c @ r.transpose(-1, -2)  # (layers, B, Tc, Tr)
        sim.masked_fill_(~(c_real[:, :, None] & r_real[:, None, :]), -torch.inf)
        best_c = sim.amax(3).masked_fill(~c_real, 0).double()  # (layers, B, Tc)
        best_r = sim.amax(2).masked_fill(~r_real, 0).double()  # (layers, B, Tr)
        P[:, pairs] = ((best_c * c_weight).sum(-1) / c_weight.sum(-1).clamp_min(1e-300)).numpy()
        R[:, pairs] = ((best_r * r_weight).sum(-1) / r_weight.sum(-1).clamp_min(1e-300)).numpy()
    total = P + R
    F = np.divide(2 * P * R, total, out=np.zeros_like(total), where=total != 0)
    return P, R, F


def _chunks(cand_lengths: np.ndarray, ref_lengths: np.ndarray, num_layers: int) -> list[slice]:
    """Consecutive runs of pairs (sorted by candidate length) whose padded similarities fit MATCH_BUDGET."""
    chunks, start, n = [], 0, len(cand_lengths)
    while start < n:
        end, widest = start + 1, ref_lengths[start]
        while end < n and num_layers * (end + 1 - start) * cand_lengths[end] * max(widest, ref_lengths[end]) <= MATCH_BUDGET:
            widest = max(widest, ref_lengths[end])
            end += 1
        chunks.append(slice(start, end))
        start = end
    return chunks


def _padded(vectors: torch.Tensor, offsets: np.ndarray, weights: np.ndarray,
            texts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The texts' token vectors right-padded, (layers, B, T, H); where tokens are real, (B, T); their weights, (B, T)."""
    lengths = offsets[texts + 1] - offsets[texts]
    real = np.arange(lengths.max())[None, :] < lengths[:, None]
    at = np.where(real, offsets[texts][:, None] + np.arange(lengths.max())[None, :], 0)
    padded = vectors[torch.from_numpy(at)].permute(2, 0, 1, 3)  # (B, T, layers, H) -> (layers, B, T, H)
    return padded, torch.from_numpy(real), torch.from_numpy(np.where(real, weights[at], 0.0))


# ---------------------------------------------------------------------------------- baselines


def model_key(model: Encoder, tokenizer: Tokenizer) -> str:
    """What a baseline depends on: the model's config and weights, and the tokenizer."""
    return fingerprint(model, json.dumps([dataclasses.asdict(model.config), tokenizer.to_json()]))


def compute_baseline(model: Encoder, tokenizer: Tokenizer, sentences: Sequence[str], *, pairs: int = 10_000,
                     seed: int = 0, idf: bool = False, batch_size: int = 1024, precision: str = "auto",
                     max_length: int | None = None, stride: int = 64, progress: bool = True) -> dict:
    """The mean raw P, R and F1 of random pairs of `sentences` at every layer: the scores that
    unrelated texts get, which rescaling maps to 0 (Zhang et al. use 1M Common Crawl pairs).

    Pairs are drawn with numpy's generator seeded by `seed`, two different positions each; with
    idf, the second sentences of all pairs are the references the idf comes from.

    Returns:
        the baseline as `save_baseline` writes it: {"layers": [{"layer", "P", "R", "F"}, ...], ...}.
    """
    sentences = [s.strip() for s in sentences if s.strip()]
    if len(set(sentences)) < 2 or pairs < 1:
        raise ValueError(f"a baseline needs at least 2 different sentences and 1 pair; got {len(set(sentences))} "
                         f"different non-empty sentences and pairs={pairs}")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(sentences), pairs)
    second = rng.integers(0, len(sentences) - 1, pairs)
    second += second >= first  # another position than `first`
    layers = list(range(len(model.layers) + 1))
    table = idf_table(text_token_ids(tokenizer, [sentences[i] for i in second]), tokenizer.vocab_size) if idf else None
    sums = np.zeros((len(layers), 3))
    for start in tqdm(range(0, pairs, BASELINE_CHUNK), desc="baseline", disable=not progress or pairs <= BASELINE_CHUNK):
        chunk = slice(start, start + BASELINE_CHUNK)
        scores = score_layers(model, tokenizer, [sentences[i] for i in first[chunk]],
                              [sentences[i] for i in second[chunk]], layers=layers, idf_weights=table,
                              batch_size=batch_size, precision=precision, max_length=max_length, stride=stride,
                              progress=False)
        sums += [[s.precision.sum(), s.recall.sum(), s.f1.sum()] for s in scores.values()]
    means = sums / pairs
    return {"format": BASELINE_FORMAT, "model": model_key(model, tokenizer), "idf": idf, "pairs": pairs,
            "seed": seed, "sentences": len(sentences),
            "precision": str(precision_.resolve(precision, next(model.parameters()).device)).removeprefix("torch."),
            "layers": [{"layer": layer, "P": p, "R": r, "F": f} for layer, (p, r, f) in zip(layers, means.tolist())]}


def save_baseline(path: str | Path, baseline: dict, **about) -> None:
    """Write a baseline as JSON, with `about` (e.g. the model folder and the corpus) for the reader."""
    write_text(path, json.dumps({**baseline, **about}, indent=1) + "\n")


def load_baseline(path: str | Path, model: Encoder, tokenizer: Tokenizer) -> dict:
    """A baseline saved by `save_baseline`, checked to belong to this model and tokenizer.

    Raises:
        ValueError: not a baseline file, or one measured with other weights or another tokenizer.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such baseline file; compute one with `bertkit bertscore-baseline`")
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a bertkit BERTScore baseline (not JSON: {e})") from None
    if not isinstance(baseline, dict) or baseline.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path}: not a bertkit BERTScore baseline (no \"format\": \"{BASELINE_FORMAT}\")")
    if baseline.get("model") != model_key(model, tokenizer):
        raise ValueError(f"{path}: this baseline was measured with another model or tokenizer "
                         f"({baseline.get('model_dir', 'unnamed')}); compute one for this model with "
                         "`bertkit bertscore-baseline`")
    return baseline


def rescale(scores: BertScores, baseline: dict) -> BertScores:
    """(s - b) / (1 - b) for P, R and F1 with the baseline's values at the scores' layer.

    Raises:
        ValueError: the baseline has no row for the layer, or was measured with the other weighting.
    """
    if bool(baseline.get("idf")) != scores.idf:
        said = "with" if baseline.get("idf") else "without"
        raise ValueError(f"the baseline was measured {said} idf but the scores are {'with' if scores.idf else 'without'} "
                         f"it; compute a baseline {'with' if scores.idf else 'without'} idf (bertkit bertscore-baseline"
                         f"{' --idf' if scores.idf else ''})")
    row = next((r for r in baseline.get("layers", []) if r.get("layer") == scores.layer), None)
    if row is None:
        raise ValueError(f"the baseline has no row for layer {scores.layer}")
    scaled = [(values - row[key]) / (1 - row[key])
              for values, key in ((scores.precision, "P"), (scores.recall, "R"), (scores.f1, "F"))]
    return dataclasses.replace(scores, precision=scaled[0], recall=scaled[1], f1=scaled[2], rescaled=True)
