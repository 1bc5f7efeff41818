"""Looking inside an encoder: its attention weights, and attention rollout.

Attention weights say where each position read from in one layer; they are not, on their own, an
explanation of a prediction (Jain & Wallace, 2019). Rollout (Abnar & Zuidema, 2020) follows the
weights through the layers, with the residual connection counted as attention to oneself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .model import Encoder
from .tasks.model import TaskModel
from .tokenizer import Tokenizer


@torch.no_grad()
def attentions(encoder: Encoder, input_ids: Tensor, attention_mask: Tensor | None = None,
               token_type_ids: Tensor | None = None) -> list[Tensor]:
    """The attention weights of every layer, each (B, nh, T, T) in fp32 (rows of padding are 0)."""
    return encoder(input_ids, attention_mask, token_type_ids, output_attentions=True).attentions


def attention_rollout(weights: Sequence[Tensor], attention_mask: Tensor | None = None) -> Tensor:
    """Attention rollout: (B, T, T), row i the share of each input token in position i after the last
    layer. Per layer the heads are averaged and the residual connection added as the identity,
    A' = (A + I) / 2 (rows still sum to 1), and the layers multiplied: A'_L ... A'_1.

    Args:
        weights: per layer, (B, nh, T, T) attention weights (`attentions`).
        attention_mask: (B, T), 1 for tokens and 0 for padding; padded positions get rows and
            columns of 0. None when nothing is padded.
    """
    B, _, T, _ = weights[0].shape
    identity = torch.eye(T, device=weights[0].device).expand(B, T, T)
    if attention_mask is not None:
        identity = identity * attention_mask[:, :, None].to(identity.dtype)
    rollout = identity
    for layer in weights:
        rollout = ((layer.mean(1) + identity) / 2) @ rollout
    return rollout


# ------------------------------------------------------------------------------- attribution

ATTRIBUTIONS = ("integrated_gradients", "gradient_x_input", "occlusion")
SEQUENCE_KINDS = ("classify", "pair", "multilabel", "regress")


@dataclass
class WordImportance:
    """Per input word, how much it moved the model's output for one label, by each method.

    `output` is what is explained: the label's probability (softmax; sigmoid for multilabel), or
    the score of a regression model. Integrated gradients are completeness-checked: their sum over
    all tokens (special tokens included, `special`) equals output minus the output at the
    baseline (`baseline_output`) up to Captum's `delta`.
    """

    words: list[str]
    scores: dict[str, np.ndarray]  # method -> (W,) per word
    label: str | None
    output: float
    baseline_output: float
    delta: float  # integrated gradients' convergence delta
    special: float  # integrated gradients' share of the special tokens ([CLS], [SEP])


def _explained(model: TaskModel, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor,
               word_vectors: Tensor | None = None) -> Tensor:
    """(B, L) what attribution explains: probabilities of a classifier, scores of a regressor."""
    hidden = model.encoder(input_ids, attention_mask, token_type_ids, word_vectors=word_vectors).last_hidden_state
    scores = model.kind.scores(model, hidden, {"attention_mask": attention_mask}).float()
    if model.spec.task == "regress":
        return scores
    return scores.sigmoid() if model.spec.task == "multilabel" else scores.softmax(-1)


def word_importance(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None = None,
                    label: str | None = None, methods: Sequence[str] = ATTRIBUTIONS, steps: int = 50) -> WordImportance:
    """Importance of each word of `text` (and `pair`) for `label` (default: the predicted one), by
    Captum's integrated gradients (baseline: every non-special token's embedding replaced by
    [PAD]'s), gradient x input (on the word embeddings), and occlusion (the output's fall when the
    word's subwords are all replaced by [MASK], one word at a time). Subword scores are summed to
    words; occlusion scores a whole word at once."""
    try:
        from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients
    except ImportError as e:
        raise ImportError("word importance needs Captum: pip install 'bertkit[explain]' (or captum)") from e

    if model.spec.task not in SEQUENCE_KINDS:
        raise ValueError(f"word importance explains one output per text: a {', '.join(SEQUENCE_KINDS)} model; "
                         f"this one is a {model.spec.task} model")
    unknown = sorted(set(methods) - set(ATTRIBUTIONS))
    if unknown:
        raise ValueError(f"unknown attribution method {unknown[0]!r}; choose from {', '.join(ATTRIBUTIONS)}")
    if model.spec.pair != (pair is not None):
        raise ValueError("this model reads text pairs: give the second text" if model.spec.pair
                         else "this model reads single texts, not pairs")
    encoded = tokenizer.encode([text], None if pair is None else [pair], max_length=model.spec.max_length)
    batch = encoded.tensors(pad_id=tokenizer.pad_id)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    model.eval()
    with torch.no_grad():
        probabilities = _explained(model, *args)[0]
    target = 0 if model.spec.task == "regress" else (
        int(probabilities.argmax()) if label is None else _label_index(model, label))
    words, groups = _words(encoded.rows[0], [text] if pair is None else [text, pair])
    ids = batch["input_ids"]
    special = torch.from_numpy(groups < 0)  # [CLS], [SEP]: kept in the baseline, in no word
    vectors = model.encoder.embeddings.word(ids).detach()
    by_vectors = lambda v, *a: _explained(model, *a, word_vectors=v)  # noqa: E731
    scores: dict[str, np.ndarray] = {}
    baseline_ids = torch.where(special, ids[0], tokenizer.pad_id)[None]
    ig, delta = IntegratedGradients(by_vectors).attribute(
        vectors, model.encoder.embeddings.word(baseline_ids).detach(), target=target, additional_forward_args=args,
        n_steps=steps, return_convergence_delta=True)
    per_token = {"integrated_gradients": ig.sum(-1)[0]}
    if "gradient_x_input" in methods:
        per_token["gradient_x_input"] = InputXGradient(by_vectors).attribute(
            vectors.clone().requires_grad_(), target=target, additional_forward_args=args).sum(-1)[0]
    for method in set(methods) & set(per_token):
        scores[method] = np.bincount(groups[~special.numpy()], per_token[method][~special].detach().double().numpy(),
                                     minlength=len(words))
    if "occlusion" in methods:
        feature = torch.from_numpy(np.where(special.numpy(), len(words), groups))[None]  # specials: one extra group
        fall = FeatureAblation(lambda *a: _explained(model, *a)).attribute(
            ids, baselines=tokenizer.mask_id, target=target, additional_forward_args=args[1:], feature_mask=feature)[0]
        first = [int(np.flatnonzero(groups == w)[0]) for w in range(len(words))]
        scores["occlusion"] = fall[first].double().numpy()
    with torch.no_grad():
        at_baseline = float(_explained(model, baseline_ids, *args[1:])[0, target])
    return WordImportance(words, {m: scores[m] for m in methods}, None if model.spec.task == "regress"
                          else model.spec.labels[target], float(probabilities[target]), at_baseline,
                          float(delta[0]), float(per_token["integrated_gradients"][special].sum()))


def _label_index(model: TaskModel, label: str) -> int:
    if label not in model.spec.labels:
        raise ValueError(f"label {label!r} is not one of the model's: {', '.join(model.spec.labels)}")
    return model.spec.labels.index(label)


def _words(encoding, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The words of the encoded texts in order, and per token its word's index (-1 for special tokens)."""
    index: dict[tuple[int, int], int] = {}
    spans: list[list[int]] = []
    groups = np.full(len(encoding.ids), -1)
    for t, (sequence, word, (start, end)) in enumerate(zip(encoding.sequence_ids, encoding.word_ids,
                                                           encoding.offsets)):
        if word is None:
            continue
        key = (sequence, word)
        if key not in index:
            index[key] = len(spans)
            spans.append([sequence, start, end])
        spans[index[key]][2] = end
        groups[t] = index[key]
    return [texts[s][a:b] for s, a, b in spans], groups
