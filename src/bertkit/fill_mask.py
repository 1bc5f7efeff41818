"""Predict the tokens behind [MASK] with a model that carries its MLM head."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import Encoder
from .precision import evaluating
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Candidate:
    token: str
    token_id: int
    probability: float


@torch.no_grad()
def fill_mask(model: Encoder, tokenizer: Tokenizer, text: str, top_k: int = 5,
              precision: str = "fp32") -> list[list[Candidate]]:
    """One list per [MASK] in `text`, in text order: its `top_k` most probable tokens, most probable
    first. `precision` as in `precision.evaluating` ("auto", "fp32", "bf16", "int8")."""
    if model.mlm_head is None:
        raise ValueError("this model has no MLM head (its checkpoint holds no cls.predictions / lm_head "
                         "weights); fill-mask needs a masked-language model")
    encoded = tokenizer.encode([text], max_length=model.config.max_length)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in encoded.tensors(pad_id=tokenizer.pad_id).items()}
    positions = (batch["input_ids"][0] == tokenizer.mask_id).nonzero().flatten()
    if positions.numel() == 0:
        raise ValueError(f"no [MASK] token in {text!r}; write [MASK] where a word should be predicted")
    with evaluating(model, precision):
        hidden = model(**batch).last_hidden_state[0, positions]  # (M, H)
        probs = model.mlm_head(hidden).softmax(-1).cpu()  # (M, V)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [[Candidate(tokenizer.id_to_token(int(i)), int(i), float(p)) for p, i in zip(ps, ids)]
            for ps, ids in zip(top.values, top.indices)]
