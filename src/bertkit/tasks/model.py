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
from . import check_spec
from .kind import TaskSpec


class TaskModel(nn.Module):
    def __init__(self, encoder: Encoder, spec: TaskSpec, class_weights: Tensor | None = None):
        super().__init__()
        self.kind = check_spec(spec)
        self.encoder, self.spec = encoder, spec
        self.head = self.kind.head(encoder.config, spec)
        self.register_buffer("class_weights", class_weights, persistent=False)

    def scores(self, batch: dict) -> Tensor:
        """The head's scores: (B, L) per row, (B, W, L) per word, or (S, L + 1) per span."""
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"],
                              batch.get("token_type_ids")).last_hidden_state  # (B, T, H)
        return self.kind.scores(self, hidden, batch)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{"loss": the batch's loss summed over its items} (rows, words, tokens or spans)."""
        return {"loss": self.kind.loss(self, self.scores(batch).float(), batch)}

    @torch.no_grad()
    def outputs(self, batch: dict) -> list:
        """Per batch row, what prediction reads (its kind's `decode`)."""
        return self.kind.decode(self, self.scores(batch).float(), batch)


def save_task_model(model: TaskModel, tokenizer, out: str | Path) -> None:
    """Write the encoder (Hugging Face layout), the tokenizer, task_head.safetensors and task.json."""
    out = Path(out)
    save_pretrained(model.encoder, out)
    tokenizer.save(out)
    state = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    write_safetensors(out / "task_head.safetensors", state)
    write_text(out / "task.json", json.dumps(asdict(model.spec), indent=2))


def load_task_model(path: str | Path) -> TaskModel:
    """A model saved by `save_task_model`; the error says what is missing."""
    path = Path(path)
    if not (path / "task.json").exists():
        raise FileNotFoundError(f"{path}: no task.json; this is not a fine-tuned bertkit model directory "
                                "(bertkit finetune writes one)")
    raw = json.loads((path / "task.json").read_text())
    spec = TaskSpec(**{**raw, "labels": tuple(raw["labels"]), "thresholds": tuple(raw.get("thresholds", ()))})
    model = TaskModel(load_pretrained(path), spec)
    state = load_file(str(path / "task_head.safetensors"))
    # "head.out.weight" -> "out.weight"; bertkit 0.1's "crf.*" (a CRF beside the head) loads as the tag head's own
    model.head.load_state_dict({k.removeprefix("head."): v for k, v in state.items()})
    return model.eval()
