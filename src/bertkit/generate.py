"""Text from a causal encoder (`bertkit pretrain --config configs/arlm.yaml`): greedy decoding, or
sampling with a temperature, top-k and top-p (nucleus), every draw from one seeded generator, so a
seed repeats its text.

Each new token runs the encoder over the whole sequence again (no key/value cache): simple and
exact, quadratic in the length, fine for the short continuations of the small models trained here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .model import Encoder
from .precision import evaluating
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the model's distribution."""

    temperature: float = 0.0  # 0: greedy (the most probable token); else logits / temperature
    top_k: int = 0  # keep the k most probable tokens (0: all)
    top_p: float = 1.0  # keep the most probable tokens whose probabilities sum to top_p

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.temperature == 0 and (self.top_k or self.top_p < 1):
            raise ValueError("top_k and top_p choose among sampled tokens: give a temperature > 0 with them "
                             "(temperature 0 is greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def next_token_probabilities(logits: Tensor, sampling: Sampling) -> Tensor:
    """(V,) logits -> (V,) probabilities to draw from, in transformers' order: the temperature's
    softmax; then only the top k tokens, renormalised; then only the top-p nucleus of those (the
    smallest set of most probable tokens whose mass reaches top_p; the token that crosses it is
    kept), renormalised."""
    probs = (logits.float() / sampling.temperature).softmax(-1)
    ranked, order = probs.sort(descending=True)
    if sampling.top_k:
        ranked = torch.where(torch.arange(len(ranked)) < sampling.top_k, ranked, 0.0)
        ranked = ranked / ranked.sum()
    if sampling.top_p < 1:
        ranked = torch.where(ranked.cumsum(0) - ranked < sampling.top_p, ranked, 0.0)  # mass before it short of top_p
    kept = torch.zeros_like(probs).scatter_(0, order, ranked)
    return kept / kept.sum()


@torch.no_grad()
def generate_ids(model: Encoder, ids: list[int], max_new_tokens: int, sampling: Sampling = Sampling(),
                 seed: int = 0, stop_ids: frozenset[int] = frozenset(), precision: str = "fp32") -> list[int]:
    """`ids` continued by up to `max_new_tokens` tokens (fewer if one of `stop_ids` is drawn: it is
    kept), never beyond the model's positions."""
    if not model.config.causal:
        raise ValueError("this model is not a causal LM (its config has causal / is_decoder false): generation "
                         "needs one trained left to right, e.g. with configs/arlm.yaml")
    if model.mlm_head is None:
        raise ValueError("this model has no LM head (cls.predictions weights); generation needs one")
    if not ids:
        raise ValueError("nothing to continue: the prompt has no tokens")
    if len(ids) >= model.config.max_length:
        raise ValueError(f"the prompt has {len(ids)} tokens, the model's positions end at {model.config.max_length}")
    generator = torch.Generator().manual_seed(seed)
    out = list(ids)
    with evaluating(model, precision) as device:
        for _ in range(min(max_new_tokens, model.config.max_length - len(ids))):
            hidden = model(torch.tensor([out], device=device)).last_hidden_state[0, -1]  # (H,)
            logits = model.mlm_head(hidden).float().cpu()  # (V,)
            if sampling.temperature == 0:
                token = int(logits.argmax())
            else:
                token = int(torch.multinomial(next_token_probabilities(logits, sampling), 1, generator=generator))
            out.append(token)
            if token in stop_ids:
                break
    return out


def generate(model: Encoder, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 50,
             sampling: Sampling = Sampling(), seed: int = 0, stop_at_sep: bool = True,
             precision: str = "fp32") -> str:
    """The prompt's continuation as text. The prompt is read as training saw text: [CLS] first, no
    [SEP] after it (in the training stream a [SEP] ends a document); with `stop_at_sep`, generation
    ends at the first [SEP] the model writes."""
    ids = tokenizer.encode([prompt], max_length=model.config.max_length).ids(0)
    sep = tokenizer.role_id("sep")
    prompt_ids = ids[:-1] if ids and ids[-1] == sep else ids
    stop = frozenset({sep}) if stop_at_sep else frozenset()
    new = generate_ids(model, prompt_ids, max_new_tokens, sampling, seed, stop, precision)[len(prompt_ids):]
    return tokenizer.decode(new)
