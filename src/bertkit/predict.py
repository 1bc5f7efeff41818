"""Predictions of a fine-tuned model, its metrics on labelled data, and predictions as JSON lines.

`predict_examples` runs the model over examples in length-sorted batches and returns one plain
dict per example, as its task kind assembles it: {"label", "probabilities"} (classify, pair),
{"labels", "probabilities"} (multilabel), {"score"} (regress), {"tags", "entities"} (tag) or
{"entities"} (span), entities as word spans. Long inputs are windowed as in training: a
sequence's logits are averaged over its windows, and a word is read from the window where it has
the most context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from . import precision as precision_
from .data.batches import in_length_order
from .data.examples import TaskDataError, TextExample
from .data.features import Features
from .data.readers import looks_like_columns, read_text_lines, read_word_lines
from .tasks import TaskSpec, collate, encode_examples, kind_of, read_examples
from .tasks.model import TaskModel
from .tokenizer import Tokenizer


@torch.no_grad()
def predict_examples(model: TaskModel, tokenizer: Tokenizer, examples: Sequence, batch_size: int = 64,
                     precision: str = "auto", features: Features | None = None, progress: bool = False) -> list[dict]:
    """One prediction dict per example (see the module docstring)."""
    spec = model.spec
    if not examples:
        return []
    features = features or encode_examples(examples, tokenizer, spec)
    per_row: list = [None] * len(features)
    with precision_.evaluating(model, precision) as device:
        for rows in tqdm(in_length_order(features.lengths, batch_size), desc="predict", disable=not progress):
            batch = collate(features, rows, spec, tokenizer.pad_id)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for r, row_output in zip(rows, model.outputs(batch)):
                per_row[r] = row_output
    return model.kind.assemble(per_row, features, examples, spec)


def task_metrics(spec: TaskSpec, examples: Sequence, predictions: Sequence[dict], mode: str | None = None) -> dict:
    """The task's metrics of predictions against the examples' labels. `mode` is seqeval's for BIO
    tags: "strict" (IOB2) or "default" (conlleval); None = the spec's `entity_mode`."""
    return kind_of(spec.task).metrics(spec, examples, predictions, mode or spec.entity_mode)


def read_inputs(path: str, spec: TaskSpec, tokenizer: Tokenizer, input_format: str = "auto",
                encoding_errors: str = "strict") -> tuple[list, bool]:
    """Examples to predict, and whether their words came pre-split.

    `input_format="lines"` (the default for .txt files): one text per line (for pairs: text TAB
    second text); for word tasks its words are found by the tokenizer's pre-tokenizer, with their
    character offsets. `"file"` (the default for other files, and for a .txt file whose lines are
    columns, as CoNLL-2000's are): read as in training, labels not needed.
    """
    if input_format not in ("auto", "lines", "file"):
        raise ValueError(f"input_format must be 'auto', 'lines' or 'file', not {input_format!r}")
    words = kind_of(spec.task).words
    text_lines = Path(path).suffix.lower() == ".txt" and not (words and looks_like_columns(path))
    if input_format == "lines" or (input_format == "auto" and text_lines):
        examples = (read_word_lines(path, tokenizer.pre_tokenize, encoding_errors) if words
                    else read_text_lines(path, spec.pair, encoding_errors))
        if not examples:
            raise TaskDataError(f"{path}: no lines to predict (the file is empty)")
        return examples, False
    return read_examples(path, spec.task, {**spec.reader, "encoding_errors": encoding_errors}, labelled=False), words


def prediction_record(example, prediction: dict, pre_split: bool = False) -> dict:
    """The JSON object of one prediction: entities with character offsets into the example's text
    (and word indices for pre-split input); other tasks as predicted."""
    if isinstance(example, TextExample) or "entities" not in prediction:
        return dict(prediction)
    entities = []
    for start, end, label, *prob in prediction["entities"]:
        a, b = example.word_offsets[start][0], example.word_offsets[end - 1][1]
        entity = {"start": a, "end": b, "label": label, "text": example.text[a:b]}
        if pre_split:
            entity["words"] = [start, end]
        if prob:
            entity["probability"] = round(prob[0], 6)
        entities.append(entity)
    return {k: v for k, v in prediction.items() if k != "entities"} | {"entities": entities}
