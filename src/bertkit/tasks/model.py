"""A fine-tuned encoder: the encoder plus its task kind's head (a tag head holds its CRF).

`TaskSpec` says what the model does and is saved beside the weights as task.json, so
`load_task_model(dir)` rebuilds the same model for prediction. The directory stays a Hugging Face
model directory: config.json + model.safetensors hold the encoder (`transformers.AutoModel` loads
it), task_head.safetensors the head.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..convert import load_pretrained, save_pretrained
from ..files import write_safetensors, write_text
from ..model import Encoder
from . import check_spec, kind_of
from .kind import TaskKind, TaskSpec


class TaskModel(nn.Module):
    def __init__(self, encoder: Encoder, spec: TaskSpec, class_weights: Tensor | None = None,
                 head: nn.Module | None = None):
        """The encoder with its task's head: a new one, or `head` (a multi-task model's, shared)."""
        super().__init__()
        self.encoder, self.spec = encoder, spec
        self.head = check_spec(spec).head(encoder.config, spec) if head is None else head
        self.register_buffer("class_weights", class_weights, persistent=False)

    @property
    def kind(self) -> TaskKind:
        """Looked up, not kept: kinds hold lambdas, and a model is pickled to reach `bertkit serve`'s model processes."""
        return kind_of(self.spec.task)

    def scores(self, batch: dict, **encoder_options) -> Tensor:
        """The head's scores: (B, L) per row, (B, W, L) per word, or (S, L + 1) per span.
        `encoder_options` go to `Encoder.forward` (`word_vectors`, `edit_attention`)."""
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                              **encoder_options).last_hidden_state  # (B, T, H)
        return self.kind.scores(self, hidden, batch)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{"loss": the batch's loss summed over its items} (rows, words, tokens or spans)."""
        return {"loss": self.kind.loss(self, self.scores(batch).float(), batch)}

    @torch.no_grad()
    def outputs(self, batch: dict) -> list:
        """Per batch row, what prediction reads (its kind's `decode`)."""
        return self.kind.decode(self, self.scores(batch).float(), batch)


class MultiTaskModel(nn.Module):
    """One encoder and a head per named task. `task(name)` is that task's `TaskModel`, sharing the
    encoder and the head, for everything that predicts or evaluates one task; a batch of task
    `batch["task"]` trains the encoder and that head, its loss scaled by the task's weight."""

    leaves_parameters_unused = True  # a step trains one head: DDP must not wait for the others' gradients

    def __init__(self, encoder: Encoder, specs: dict[str, TaskSpec], weights: dict[str, float] | None = None,
                 class_weights: dict[str, Tensor | None] | None = None):
        super().__init__()
        self.encoder, self.specs = encoder, dict(specs)
        self.weights = {name: 1.0 for name in specs} | (weights or {})
        self.heads = nn.ModuleDict({name: check_spec(spec).head(encoder.config, spec) for name, spec in specs.items()})
        self.class_weights = nn.Module()  # buffers, by task name: they move with the model
        for name, weights in (class_weights or {}).items():
            self.class_weights.register_buffer(name, weights, persistent=False)

    def task(self, name: str) -> TaskModel:
        if name not in self.heads:
            raise KeyError(f"no head named {name!r}; this model has {', '.join(self.heads)}")
        view = TaskModel(self.encoder, self.specs[name], getattr(self.class_weights, name, None), head=self.heads[name])
        return view.train(self.training)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{task name: the batch's weighted loss sum}."""
        name = batch["task"]
        return {name: self.weights[name] * self.task(name)(batch)["loss"]}


def save_task_model(model: TaskModel, tokenizer, out: str | Path) -> None:
    """Write the encoder (Hugging Face layout), the tokenizer, task_head.safetensors and task.json."""
    out = Path(out)
    save_pretrained(model.encoder, out)
    tokenizer.save(out)
    _save_head(model.head, model.spec, out)


def save_multitask_model(model: MultiTaskModel, tokenizer, out: str | Path) -> None:
    """The encoder and tokenizer as `save_task_model` writes them, each head in heads/NAME/, and
    tasks.json: the heads' names and loss weights."""
    out = Path(out)
    save_pretrained(model.encoder, out)
    tokenizer.save(out)
    for name, head in model.heads.items():
        _save_head(head, model.specs[name], out / "heads" / name)
    write_text(out / "tasks.json", json.dumps({"heads": list(model.heads), "weights": model.weights}, indent=2))


def _save_head(head: nn.Module, spec: TaskSpec, folder: Path) -> None:
    state = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    write_safetensors(folder / "task_head.safetensors", state)
    write_text(folder / "task.json", json.dumps(asdict(spec), indent=2))


def load_task_model(path: str | Path, head: str | None = None) -> TaskModel:
    """A model saved by `save_task_model`, or the head named `head` of one saved by
    `save_multitask_model`; the error says what is missing."""
    path = Path(path)
    heads = json.loads((path / "tasks.json").read_text())["heads"] if (path / "tasks.json").exists() else None
    if heads is not None and head not in heads:
        raise ValueError(f"{path} is a multi-task model: name one of its heads ({', '.join(heads)}) with --head"
                         if head is None else f"{path} has no head {head!r}; its heads: {', '.join(heads)}")
    if heads is None and head is not None:
        raise ValueError(f"{path} is a single-task model: it has no heads to choose from (drop --head {head})")
    folder = path if head is None else path / "heads" / head
    if not (folder / "task.json").exists():
        raise FileNotFoundError(f"{folder}: no task.json; this is not a fine-tuned bertkit model directory "
                                "(bertkit finetune writes one)")
    raw = json.loads((folder / "task.json").read_text())
    try:
        spec = TaskSpec(**{**raw, "labels": tuple(raw["labels"]), "thresholds": tuple(raw.get("thresholds", ()))})
    except (KeyError, TypeError, ValueError) as e:  # a missing or unknown field, or a bad value
        raise ValueError(f"{folder / 'task.json'}: {type(e).__name__}: {e}") from None
    model = TaskModel(load_pretrained(path), spec)
    state = load_file(str(folder / "task_head.safetensors"))
    # "head.out.weight" -> "out.weight"; bertkit 0.1's "crf.*" (a CRF beside the head) loads as the tag head's own
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in state.items()})
    return model.eval()
