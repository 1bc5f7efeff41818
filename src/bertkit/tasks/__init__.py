"""Fine-tuning task kinds, one module each, and the functions that serve them all.

`TASKS` is the one table of kinds: a task name -> its `TaskKind` (`kind.py`). Everything here, in
`tasks.model`, `predict` and `train.finetune` looks the kind up once and calls its functions. To
add a kind: write its module (sequence.py is the smallest example) and add its row below.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..data.examples import LabelSet, TaskDataError
from ..data.features import Features, collate_inputs, text_features, word_features
from ..data.readers import read_file
from ..tokenizer import Tokenizer
from .kind import TaskKind, TaskSpec
from .sequence import CLASSIFY, MULTILABEL, PAIR, REGRESS
from .span import SPAN
from .tag import TAG

TASKS: dict[str, TaskKind] = {
    "classify": CLASSIFY,  # one label per text
    "pair": PAIR,  # one label per text pair (NLI, paraphrase)
    "regress": REGRESS,  # one score per text or text pair
    "multilabel": MULTILABEL,  # any number of labels per text
    "tag": TAG,  # one label per word (BIO entities, chunks, POS)
    "span": SPAN,  # labelled word spans, nested allowed
}


def kind_of(task: str) -> TaskKind:
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, not {task!r}")
    return TASKS[task]


def check_spec(spec: TaskSpec) -> TaskKind:
    """The spec's task kind, once the kind has accepted the spec's settings."""
    kind = kind_of(spec.task)
    kind.check(spec)
    return kind


def read_examples(paths: str | Path, task: str, reader: dict, labelled: bool = True) -> list:
    """The examples of one task file, or of several (comma-separated paths), read as the task's
    kind reads them (`data.readers.read_file` with the reader options).

    Raises:
        TaskDataError: a file holds no example (it is empty, or a table holds only its header).
    """
    kind = kind_of(task)
    examples = []
    for path in str(paths).split(","):
        found = read_file(path, words=kind.words, label_kind=kind.label_kind, labelled=labelled, **reader)
        if not found:
            raise TaskDataError(f"{path}: no examples in this file (it is empty, or holds only a header)")
        examples += found
    return kind.prepare(examples, str(paths)) if labelled and kind.prepare else examples


def encode_examples(examples: Sequence, tokenizer: Tokenizer, spec: TaskSpec) -> Features:
    """The examples as model rows with their targets, windowed (or truncated and counted) as the
    spec says."""
    kind = check_spec(spec)
    window = (tokenizer, spec.max_length, spec.overflow, spec.stride)
    if kind.words:
        features = word_features(examples, *window, alignment=spec.alignment)
    else:
        features = text_features(examples, *window, require_pair=kind.pairs)
    features.targets = kind.targets(examples, features, LabelSet(spec.labels) if spec.labels else None)
    if features.encoded.num_truncated:
        print(f"note: truncated {features.encoded.num_truncated} of {len(examples)} inputs to "
              f"{spec.max_length} tokens (overflow='truncate')", file=sys.stderr)
    return features


def collate(features: Features, rows: Sequence[int], spec: TaskSpec, pad_id: int) -> dict:
    """A right-padded batch of rows with, when every row is labelled, "labels" and "counts" (the
    items its loss sums over: rows, words, tokens or spans)."""
    kind = kind_of(spec.task)
    batch = collate_inputs(features, rows, pad_id, kind.words)
    targets = [features.targets[r] for r in rows]
    kind.collate(batch, targets if all(t is not None for t in targets) else None, features, rows, spec)
    return batch
