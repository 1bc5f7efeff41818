"""A fine-tuned encoder: the encoder, one task head (+ a CRF), the task's losses and raw outputs.

`TaskSpec` says what the model does (task, labels, alignment, decoder, span settings, window) and is
saved beside the weights as task.json, so `load_task_model(dir)` rebuilds the same model for
prediction. The directory stays a Hugging Face model directory: config.json + model.safetensors hold
the encoder (`transformers.AutoModel` loads it), task_head.safetensors the head and the CRF.

Word-level tasks score words, not tokens: a word's vector is its first subword's ("first") or the
mean of its subwords ("mean"); "every" trains on every subword (a B-X word's later subwords learn
I-X) and reads the word's label at its first subword. The CRF runs over word sequences.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .files import atomic_write
from .crf import CRF
from .data.features import ALIGNMENTS, SEQUENCE_TASKS
from .heads import IGNORE_INDEX
from .data.tasks import TASKS
from .heads import ClassificationHead, SpanClassificationHead, TokenClassificationHead
from .convert import load_pretrained, save_pretrained
from .model import Encoder


@dataclass(frozen=True)
class TaskSpec:
    task: str
    labels: tuple[str, ...] = ()  # sorted; empty for regression
    alignment: str = "first"  # word tasks: "first" | "mean" | "every"
    decoder: str = "greedy"  # tag: "greedy" (argmax) | "crf"
    pooling: str = "cls"  # sequence tasks: "cls" | "mean"
    max_span_width: int = 8  # span: longest span in words
    span_summary: str = "mean"  # span: "mean" | "attention"
    threshold: float = 0.5  # multilabel (sigmoid) and span (probability) decisions
    thresholds: tuple[float, ...] = ()  # multilabel: one per label, tuned on dev; empty = `threshold`
    max_length: int = 512
    stride: int = 128
    overflow: str = "window"  # "window" | "truncate" (counted)
    dropout: float = 0.1
    pair: bool = False  # sequence tasks: inputs are text pairs ([CLS] A [SEP] B [SEP])
    entity_mode: str = "strict"  # BIO metrics: seqeval "strict" (IOB2) or "default" (conlleval)
    reader: dict = field(default_factory=dict)  # options of the reader that read the training file

    def __post_init__(self) -> None:
        checks = [("task", TASKS), ("alignment", ALIGNMENTS), ("decoder", ("greedy", "crf")),
                  ("pooling", ("cls", "mean")), ("span_summary", ("mean", "attention")),
                  ("overflow", ("window", "truncate")), ("entity_mode", ("strict", "default"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.decoder == "crf" and self.task != "tag":
            raise ValueError("the CRF decodes tag sequences: use it with the tag task")
        if self.decoder == "crf" and self.alignment == "every":
            raise ValueError("the CRF runs over words: use alignment 'first' or 'mean' with it")
        if self.task != "regress" and not self.labels:
            raise ValueError(f"a {self.task} task needs labels; the training data has none")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.thresholds and len(self.thresholds) != len(self.labels):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")

    @property
    def is_bio(self) -> bool:
        return self.task == "tag" and all(x == "O" or x[:2] in ("B-", "I-") for x in self.labels)

    @property
    def main_metric(self) -> str:
        return {"classify": "accuracy", "pair": "accuracy", "multilabel": "micro_f1", "regress": "spearman",
                "tag": "f1" if self.is_bio else "accuracy", "span": "f1"}[self.task]


class TaskModel(nn.Module):
    def __init__(self, encoder: Encoder, spec: TaskSpec, class_weights: Tensor | None = None):
        super().__init__()
        self.encoder, self.spec = encoder, spec
        config, n = encoder.config, len(spec.labels)
        if spec.task in SEQUENCE_TASKS:
            self.head = ClassificationHead(config, 1 if spec.task == "regress" else n, spec.pooling, spec.dropout)
        elif spec.task == "tag":
            self.head = TokenClassificationHead(config, n, spec.dropout)
        else:
            self.head = SpanClassificationHead(config, n, spec.max_span_width, spec.span_summary,
                                               dropout=spec.dropout)
        self.crf = CRF.for_labels(list(spec.labels)) if spec.decoder == "crf" else None
        self.register_buffer("class_weights", class_weights, persistent=False)
        if spec.alignment == "every" and spec.task == "tag":
            self.register_buffer("continuation", _continuation_labels(spec.labels), persistent=False)

    def scores(self, batch: dict) -> Tensor:
        """Logits: (B, L) per row (one unit for regression), (B, W, L) per word, or (S, L + 1) per span."""
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"],
                              batch.get("token_type_ids")).last_hidden_state  # (B, T, H)
        if self.spec.task in SEQUENCE_TASKS:
            return self.head(hidden, batch["attention_mask"])
        slots, num_words = batch["slots"], batch["word_mask"].shape[1]
        if self.spec.task == "tag" and self.spec.alignment == "every":
            return self.head(hidden)  # (B, T, L): per token; `outputs` reads first subwords
        words = pool_words(hidden, slots, num_words)  # (B, W, H)
        if self.spec.task == "tag":
            return self.head(words)
        return self.head(words, batch["span_starts"], batch["span_ends"], batch["span_rows"])

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{"loss": the batch's loss summed over its items} (rows, words, tokens or spans)."""
        scores, labels = self.scores(batch).float(), batch["labels"]
        task = self.spec.task
        if task == "regress":
            return {"loss": F.mse_loss(scores.squeeze(-1), labels, reduction="sum")}
        if task == "multilabel":
            return {"loss": F.binary_cross_entropy_with_logits(scores, labels, reduction="sum")}
        if self.crf is not None:
            mask, rows = batch["word_mask"], batch["word_mask"].any(1)  # a window may own no word
            tags = labels.clamp(min=0)
            return {"loss": -self.crf.log_likelihood(scores[rows], tags[rows], mask[rows], batch["cut_start"][rows],
                                                     batch["cut_end"][rows]).sum()}
        if task == "tag" and self.spec.alignment == "every":
            labels = token_labels(labels, batch["slots"], self.continuation)
        return {"loss": F.cross_entropy(scores.reshape(-1, scores.shape[-1]), labels.reshape(-1),
                                        weight=self.class_weights, ignore_index=IGNORE_INDEX, reduction="sum")}

    @torch.no_grad()
    def outputs(self, batch: dict) -> Tensor | list[np.ndarray]:
        """What prediction reads: sequence logits (B, L); per row the word label ids (tag); or span
        probabilities (S, L + 1) (span)."""
        scores = self.scores(batch).float()
        if self.spec.task in SEQUENCE_TASKS or self.spec.task == "span":
            return scores.softmax(-1) if self.spec.task == "span" else scores
        if self.spec.alignment == "every":
            scores = pool_words(scores, first_subwords(batch["slots"]), batch["word_mask"].shape[1])
        lengths = batch["word_mask"].sum(1).tolist()
        if self.crf is None:
            best = scores.argmax(-1).cpu().numpy()
            return [best[i, :n] for i, n in enumerate(lengths)]
        rows = [i for i, n in enumerate(lengths) if n]
        paths = (iter(self.crf.decode(scores[rows], batch["word_mask"][rows], batch["cut_start"][rows],
                                      batch["cut_end"][rows])) if rows else iter(()))
        return [np.array(next(paths), dtype=np.int64) if n else np.zeros(0, np.int64) for n in lengths]


def pool_words(values: Tensor, slots: Tensor, num_words: int) -> Tensor:
    """Average token values over each word slot: (B, T, D), (B, T) slot or -1 -> (B, W, D)."""
    B, T, D = values.shape
    keep = slots >= 0
    index = (torch.arange(B, device=slots.device)[:, None] * num_words + slots)[keep]  # (N,)
    total = values.new_zeros(B * num_words, D, dtype=torch.float32).index_add_(0, index, values[keep].float())
    count = torch.zeros(B * num_words, device=values.device).index_add_(0, index, torch.ones_like(index, dtype=torch.float32))
    return (total / count.clamp(min=1)[:, None]).view(B, num_words, D).to(values.dtype)


def first_subwords(slots: Tensor) -> Tensor:
    """Slots with only each word's first token kept: (B, T) -> (B, T)."""
    previous = torch.cat([torch.full_like(slots[:, :1], -1), slots[:, :-1]], dim=1)
    return torch.where(slots != previous, slots, torch.full_like(slots, -1))


def token_labels(word_labels: Tensor, slots: Tensor, continuation: Tensor) -> Tensor:
    """Every subword's label from its word's: (B, W), (B, T) -> (B, T); a B-X word's later
    subwords get I-X (`continuation` maps each label id to the id its continuation takes)."""
    labels = word_labels.gather(1, slots.clamp(min=0))
    later = (slots >= 0) & (first_subwords(slots) < 0) & (labels >= 0)
    labels = torch.where(later, continuation[labels.clamp(min=0)], labels)
    return labels.masked_fill(slots < 0, IGNORE_INDEX)


def _continuation_labels(labels: tuple[str, ...]) -> Tensor:
    index = {x: i for i, x in enumerate(labels)}
    return torch.tensor([index.get("I-" + x[2:], i) if x.startswith("B-") else i for i, x in enumerate(labels)])


# ------------------------------------------------------------------------------ files


def save_task_model(model: TaskModel, tokenizer, out: str | Path) -> None:
    """Write the encoder (Hugging Face layout), the tokenizer, task_head.safetensors and task.json."""
    from safetensors.torch import save_file
    out = Path(out)
    save_pretrained(model.encoder, out)
    tokenizer.save(out)
    state = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    if model.crf is not None:
        state.update({f"crf.{k}": v.detach().cpu().contiguous() for k, v in model.crf.state_dict().items()})
    with atomic_write(out / "task_head.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_write(out / "task.json") as tmp:
        tmp.write_text(json.dumps(asdict(model.spec), indent=2))


def load_task_model(path: str | Path) -> TaskModel:
    """A model saved by `save_task_model`; the error says what is missing."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / "task.json").exists():
        raise FileNotFoundError(f"{path}: no task.json; this is not a fine-tuned bertkit model directory "
                                "(bertkit finetune writes one)")
    raw = json.loads((path / "task.json").read_text())
    spec = TaskSpec(**{**raw, "labels": tuple(raw["labels"]), "thresholds": tuple(raw.get("thresholds", ()))})
    model = TaskModel(load_pretrained(path), spec)
    state = load_file(str(path / "task_head.safetensors"))
    model.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    if model.crf is not None:
        model.crf.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("crf.")})
    return model.eval()
