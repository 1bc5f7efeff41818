"""Predictions of a fine-tuned model, its metrics on labelled data, and predictions as JSON lines.

`predict_examples` runs the model over examples in length-sorted batches and returns one plain
dict per example: {"label", "probabilities"} (classify, pair), {"labels", "probabilities"}
(multilabel), {"score"} (regress), {"tags", "entities"} (tag) or {"entities"} (span), entities as
word spans. Long inputs are windowed as in training: a sequence's logits are averaged over its
windows, and a word is read from the window where it has the most context.

`task_metrics` scores predictions against the examples' labels; `prediction_record` turns a
prediction into the JSON object `bertkit predict` writes, entities with character offsets.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics as M
from . import precision as precision_
from .data.alignment import mean_over_windows
from .data.features import SEQUENCE_TASKS, Features, collate, in_length_order, sequence_features, word_features
from .data.tasks import LabelSet, TextExample, WordExample, tags_to_spans, word_spans
from .task_model import TaskModel, TaskSpec
from .tokenizer import Tokenizer


def encode_examples(examples: Sequence, tokenizer: Tokenizer, spec: TaskSpec) -> Features:
    """The examples as model rows, windowed (or truncated and counted) as the spec says."""
    labels = LabelSet(spec.labels) if spec.labels else None
    args = (tokenizer, spec.task, labels, spec.max_length, spec.overflow, spec.stride)
    if spec.task in SEQUENCE_TASKS:
        features = sequence_features(examples, *args)
    else:
        features = word_features(examples, *args, alignment=spec.alignment)
    if features.encoded.num_truncated:
        print(f"note: truncated {features.encoded.num_truncated} of {len(examples)} inputs to "
              f"{spec.max_length} tokens (overflow='truncate')", file=sys.stderr)
    return features


@torch.no_grad()
def predict_examples(model: TaskModel, tokenizer: Tokenizer, examples: Sequence, batch_size: int = 64,
                     precision: str = "auto", features: Features | None = None, progress: bool = False) -> list[dict]:
    """One prediction dict per example (see the module docstring)."""
    spec = model.spec
    features = features or encode_examples(examples, tokenizer, spec)
    device = next(model.parameters()).device
    dtype = precision_.resolve(precision, device)
    was_training = model.training
    model.eval()
    per_row: list = [None] * len(features)
    batches = in_length_order(features.lengths, batch_size)
    for rows in tqdm(batches, desc="predict", disable=not progress):
        batch = collate(features, rows, spec.task, tokenizer.pad_id, spec.max_span_width)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with precision_.autocast(dtype, device):
            out = model.outputs(batch)
        for i, r in enumerate(rows):
            per_row[r] = _row_output(out, batch, i, spec)
    model.train(was_training)
    return _assemble(per_row, features, examples, spec)


def _row_output(out, batch: dict, i: int, spec: TaskSpec):
    if spec.task in SEQUENCE_TASKS or spec.task == "tag":
        return out[i].float().cpu() if spec.task in SEQUENCE_TASKS else out[i]
    keep = batch["span_rows"] == i
    probs = out[keep].cpu()
    return batch["span_starts"][keep].cpu().numpy(), batch["span_ends"][keep].cpu().numpy(), probs


def _assemble(per_row: list, features: Features, examples: Sequence, spec: TaskSpec) -> list[dict]:
    if spec.task in SEQUENCE_TASKS:
        logits = mean_over_windows(torch.stack(per_row), features.origin, len(examples))
        return [_sequence_prediction(row, spec) for row in logits]
    if spec.task == "tag":
        tags = [["O"] * len(ex.words) for ex in examples]  # a word without tokens stays O
        for r, ids in enumerate(per_row):
            for k, w in enumerate(features.words[r]):
                tags[features.origin[r]][w] = spec.labels[ids[k]]
        if spec.is_bio:
            tags = [repair_bio(t) for t in tags]
        return [{"tags": t, "entities": tags_to_spans(t) if spec.is_bio else []} for t in tags]
    found: list[list] = [[] for _ in examples]
    for r, (starts, ends, probs) in enumerate(per_row):
        words = features.words[r]
        best_p, best = probs[:, 1:].max(-1)
        for s, e, p, label in zip(starts, ends, best_p.tolist(), best.tolist()):
            if p >= spec.threshold:
                found[features.origin[r]].append((int(words[s]), int(words[e]) + 1, spec.labels[label], p))
    return [{"entities": sorted(spans)} for spans in found]


def repair_bio(tags: list[str]) -> list[str]:
    """Valid BIO from greedy per-word decisions: an I-X that follows O or another type starts an
    entity, so it becomes B-X (the CRF's constraints never produce one). Entities written by
    `predict` and entities scored by the metrics are then read from the same tags."""
    out = list(tags)
    for i, tag in enumerate(out):
        if tag.startswith("I-") and (i == 0 or out[i - 1][2:] != tag[2:] or out[i - 1] == "O"):
            out[i] = "B-" + tag[2:]
    return out


def multilabel_prediction(spec: TaskSpec, probs: Sequence[float]) -> dict:
    """The labels whose probability reaches their threshold (the spec's per-label ones, if tuned).

    Args:
        probs: (L,) sigmoid probabilities in the order of `spec.labels`.

    Returns:
        {"labels": [label, ...], "probabilities": {label: probability}}.
    """
    limits = spec.thresholds or (spec.threshold,) * len(probs)
    return {"labels": [x for x, p, t in zip(spec.labels, probs, limits) if p >= t],
            "probabilities": dict(zip(spec.labels, probs))}


def label_probabilities(spec: TaskSpec, predictions: Sequence[dict]) -> np.ndarray:
    """(N, L) the predictions' probabilities, columns in the order of `spec.labels`."""
    return np.array([[p["probabilities"][x] for x in spec.labels] for p in predictions])


def _sequence_prediction(logits: torch.Tensor, spec: TaskSpec) -> dict:
    if spec.task == "regress":
        return {"score": float(logits[0])}
    if spec.task == "multilabel":
        return multilabel_prediction(spec, logits.sigmoid().tolist())
    probs = logits.softmax(-1).tolist()
    return {"label": spec.labels[int(np.argmax(probs))], "probabilities": dict(zip(spec.labels, probs))}


# ------------------------------------------------------------------------------------- metrics


def task_metrics(spec: TaskSpec, examples: Sequence, predictions: Sequence[dict], mode: str | None = None) -> dict:
    """The task's metrics of predictions against the examples' labels. `mode` is seqeval's for BIO
    tags: "strict" (IOB2) or "default" (conlleval); None = the spec's `entity_mode`."""
    task, mode = spec.task, mode or spec.entity_mode
    if task == "regress":
        gold, pred = [float(ex.label) for ex in examples], [p["score"] for p in predictions]
        return {"pearson": M.pearson(gold, pred), "spearman": M.spearman(gold, pred)}
    if task == "multilabel":
        gold = np.array([[x in ex.label for x in spec.labels] for ex in examples], dtype=np.int64)
        pred = np.array([[x in p["labels"] for x in spec.labels] for p in predictions], dtype=np.int64)
        return {"micro_f1": M.multilabel_f1(gold, pred, "micro"), "macro_f1": M.multilabel_f1(gold, pred, "macro")}
    if task in SEQUENCE_TASKS:
        gold, pred = [ex.label for ex in examples], [p["label"] for p in predictions]
        return {"accuracy": M.accuracy(gold, pred), "macro_f1": M.macro_f1(gold, pred),
                "mcc": M.matthews_corrcoef(gold, pred)}
    if task == "tag" and not spec.is_bio:
        gold = [t for ex in examples for t in ex.tags]
        return {"accuracy": M.accuracy(gold, [t for p in predictions for t in p["tags"]])}
    if task == "span":
        return span_metrics(examples, predictions)
    scores = M.entity_scores([list(ex.tags) for ex in examples], [p["tags"] for p in predictions], mode=mode)
    result = {k: scores[k] for k in ("precision", "recall", "f1")} | {"per_type": scores["per_type"]}
    if any(set(word_spans(ex)) != set(tags_to_spans(ex.tags)) for ex in examples):
        # The gold spans nest (a span file read as BIO tags): score against all of them too.
        result = span_metrics(examples, predictions) | {"bio_f1": scores["f1"]}
    return result


def span_metrics(examples: Sequence[WordExample], predictions: Sequence[dict]) -> dict:
    """Span precision, recall and F1 against the examples' (possibly nested) spans, and the recall
    on nested entities: those inside another entity, which BIO tags (one label per word) cannot
    hold beside their outer entity."""
    gold = [set(word_spans(ex)) for ex in examples]
    pred = [{(s, e, label) for s, e, label, *_ in p["entities"]} for p in predictions]
    nested = [{a for a in g if any(b != a and _inside(a, b) for b in g)} for g in gold]
    scores = M.span_scores(gold, pred, subset=nested)
    return {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
            "nested_recall": scores["subset"]["recall"], "nested_support": scores["subset"]["support"],
            "per_type": scores["per_type"]}


def _inside(a: tuple, b: tuple) -> bool:
    """Span a lies within span b (sharing a boundary allowed)."""
    return b[0] <= a[0] and a[1] <= b[1]


# ------------------------------------------------------------------------------------ records


def read_inputs(path: str, spec: TaskSpec, tokenizer: Tokenizer, input_format: str = "auto") -> tuple[list, bool]:
    """Examples to predict, and whether their words came pre-split.

    `input_format="lines"` (the default for .txt files): one text per line (for pairs: text TAB
    second text); for word tasks its words are found by the tokenizer's pre-tokenizer, with their
    character offsets. `"file"` (the default for other files, and for a .txt file whose lines are
    columns, as CoNLL-2000's are): read as in training, labels not needed.
    """
    from pathlib import Path
    from .data.tasks import read_conll, read_span_jsonl, read_task_file
    from .textfiles import read_lines
    suffix = Path(path).suffix.lower()
    if input_format not in ("auto", "lines", "file"):
        raise ValueError(f"input_format must be 'auto', 'lines' or 'file', not {input_format!r}")
    word_columns = spec.task not in SEQUENCE_TASKS and looks_like_columns(path)  # e.g. CoNLL-2000's .txt
    if input_format == "lines" or (input_format == "auto" and suffix == ".txt" and not word_columns):
        lines = [(f"{path}:{n}", line) for n, line in read_lines(path)]
        if spec.task in SEQUENCE_TASKS:
            return [_text_example(line, source, spec.pair) for source, line in lines], False
        return [_split_words(line, tokenizer) for _, line in lines], False
    if spec.task in SEQUENCE_TASKS and suffix == ".xml":
        return read_task_file(path, spec.task), False
    if spec.task in SEQUENCE_TASKS:
        unlabelled = {k: None for k in ("label_column", "label_field") if k in spec.reader}
        unlabelled = unlabelled or {"label_field" if suffix in (".jsonl", ".jsonlines") else "label_column": None}
        return read_task_file(path, spec.task, **{**spec.reader, **unlabelled}), False
    if suffix in (".jsonl", ".jsonlines"):
        return read_span_jsonl(path, **spec.reader), True
    return read_conll(path, spec.reader.get("word_column", 0), tag_column=None, docstart=True), True


def _text_example(line: str, source: str, pair: bool) -> TextExample:
    if not pair:
        return TextExample(line, source=source)
    text, tab, second = line.partition("\t")
    if not tab:
        raise ValueError(f"{source}: this model reads text pairs: write each line as text TAB second text")
    return TextExample(text, second, source=source)


def looks_like_columns(path: str, lines: int = 200) -> bool:
    """True for a CoNLL-style file: blank lines between sentences, and the same number (>= 2) of
    columns on every other line (of the first `lines`)."""
    from .textfiles import read_lines
    widths, blank = set(), False
    for n, line in read_lines(path):
        if line.strip():
            widths.add(len(line.split()))
        else:
            blank = True
        if n >= lines:
            break
    return blank and len(widths) == 1 and min(widths) >= 2


def _split_words(text: str, tokenizer: Tokenizer) -> WordExample:
    pieces = tokenizer.pre_tokenize(text)
    return WordExample(tuple(w for w, _ in pieces), text=text, word_offsets=tuple(o for _, o in pieces))


def prediction_record(example, prediction: dict, pre_split: bool = False) -> dict:
    """The JSON object of one prediction: entities with character offsets into the example's text
    (and word indices for pre-split input); other tasks as predicted."""
    if isinstance(example, TextExample) or "entities" not in prediction:
        return dict(prediction)
    record = {k: v for k, v in prediction.items() if k != "entities"}
    entities = []
    for start, end, label, *prob in prediction["entities"]:
        a, b = example.word_offsets[start][0], example.word_offsets[end - 1][1]
        entity = {"start": a, "end": b, "label": label, "text": example.text[a:b]}
        if pre_split:
            entity["words"] = [start, end]
        if prob:
            entity["probability"] = round(prob[0], 6)
        entities.append(entity)
    record["entities"] = entities
    return record
