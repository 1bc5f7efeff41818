"""Looking inside an encoder: its attention weights, and attention rollout.

Attention weights say where each position read from in one layer; they are not, on their own, an
explanation of a prediction (Jain & Wallace, 2019). Rollout (Abnar & Zuidema, 2020) follows the
weights through the layers, with the residual connection counted as attention to oneself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
               **encoder_options) -> Tensor:
    """(B, L) what attribution explains: probabilities of a classifier, scores of a regressor.
    `encoder_options`: `word_vectors`, `edit_attention` (`Encoder.forward`)."""
    hidden = model.encoder(input_ids, attention_mask, token_type_ids, **encoder_options).last_hidden_state
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
            ids, baselines=tokenizer.mask_id, target=target, additional_forward_args=args[1:], feature_mask=feature,
            perturbations_per_eval=len(words) + 1)[0]  # every word's copy in one batch
        at = {int(w): t for t, w in reversed(list(enumerate(groups))) if w >= 0}  # a token of each word
        scores["occlusion"] = np.array([float(fall[at[w]]) if w in at else 0.0 for w in range(len(words))])
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
    """The words (runs of non-space characters) of the encoded texts in order, and per token its
    word's index (-1 for special tokens)."""
    words, starts, first = [], [], []  # per text: its words' start offsets, its first word's index
    for text in texts:
        spans = [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]
        first.append(len(words))
        words += [w for _, w in spans]
        starts.append(np.array([a for a, _ in spans]))
    groups = np.full(len(encoding.ids), -1)
    for t, (sequence, word, (start, _)) in enumerate(zip(encoding.sequence_ids, encoding.word_ids, encoding.offsets)):
        if word is not None:
            groups[t] = first[sequence] + np.searchsorted(starts[sequence], start, side="right") - 1
    return words, groups


# ---------------------------------------------------------- is attention explanation? (Jain & Wallace)

TAU_PAIRS = {  # name -> (importance, importance)
    "attention~integrated_gradients": ("attention", "integrated_gradients"),
    "attention~occlusion": ("attention", "occlusion"),
    "rollout~integrated_gradients": ("rollout", "integrated_gradients"),
    "rollout~occlusion": ("rollout", "occlusion"),
    "integrated_gradients~occlusion": ("integrated_gradients", "occlusion"),  # two attributions, for scale
}


@dataclass
class AttentionView:
    """One input's attention: `attentions` per layer (1, nh, T, T), `rollout` (1, T, T), and per word
    (`words` of `word_importance`) [CLS]'s attention in the last layer, heads averaged, and its rollout."""

    batch: dict[str, Tensor]
    tokens: list[str]
    attentions: list[Tensor]
    rollout: Tensor
    cls_words: dict[str, np.ndarray]  # "attention", "rollout" -> (W,)


def attention_view(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None = None) -> AttentionView:
    encoded = tokenizer.encode([text], None if pair is None else [pair], max_length=model.spec.max_length)
    batch = encoded.tensors(pad_id=tokenizer.pad_id)
    words, groups = _words(encoded.rows[0], [text] if pair is None else [text, pair])
    real = groups >= 0
    with torch.no_grad():
        weights = model.encoder(**batch, output_attentions=True).attentions
    rollout = attention_rollout(weights)
    cls_rows = {"attention": weights[-1][0].mean(0)[0], "rollout": rollout[0, 0]}
    cls_words = {name: np.bincount(groups[real], row.double().numpy()[real], minlength=len(words))
                 for name, row in cls_rows.items()}
    return AttentionView(batch, encoded.rows[0].tokens, weights, rollout, cls_words)


def attention_vs_attribution(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None = None,
                             permutations: int = 20, steps: int = 50, seed: int = 0) -> dict:
    """Jain & Wallace's two tests on one input of a classifier.

    Agreement: Kendall's tau-b between word rankings by attention ([CLS]'s row of the last layer,
    heads averaged; and rollout's [CLS] row), subwords summed to words, and by the magnitude of
    integrated gradients and of occlusion (`word_importance`, for the predicted label).
    Permutation: the last layer's attention weights shuffled over the tokens (one random permutation
    of the key positions per copy, `permutations` copies); the change of the predicted label's
    probability and whether the label flips.
    """
    from scipy.stats import kendalltau

    if model.spec.task not in ("classify", "pair"):
        raise ValueError(f"the attention tests explain a classifier's label; this is a {model.spec.task} model")
    importance = word_importance(model, tokenizer, text, pair, methods=("integrated_gradients", "occlusion"),
                                 steps=steps)
    view = attention_view(model, tokenizer, text, pair)
    args = tuple(view.batch[k] for k in ("input_ids", "attention_mask", "token_type_ids"))
    words = {**view.cls_words, **{m: np.abs(v) for m, v in importance.scores.items()}}
    taus = {name: float(kendalltau(words[a], words[b]).statistic) if len(importance.words) > 1 else float("nan")
            for name, (a, b) in TAU_PAIRS.items()}
    label = model.spec.labels.index(importance.label)
    T = args[0].shape[1]
    order = torch.argsort(torch.rand(permutations, T, generator=torch.Generator().manual_seed(seed)), dim=1)
    last = len(model.encoder.layers)
    shuffle = lambda i, w: w.gather(-1, order[:, None, None, :].expand_as(w)) if i == last else w  # noqa: E731
    with torch.no_grad():
        shuffled = _explained(model, *(a.expand(permutations, T) for a in args), edit_attention=shuffle)
    change = (shuffled[:, label] - importance.output).abs()
    return {"text": text, "words": importance.words, "label": importance.label, "probability": importance.output,
            "tau": taus, "median_change": float(change.median()),
            "flip_share": float((shuffled.argmax(-1) != label).double().mean())}


def summarize_attention_tests(records: Sequence[dict]) -> dict:
    """Per tau pair the median, mean and share of positive taus over the inputs with 2+ words; the
    permutation test's median change of the predicted probability and the share of flipped labels."""
    summary: dict = {"inputs": len(records)}
    for name in TAU_PAIRS:
        taus = np.array([r["tau"][name] for r in records if not np.isnan(r["tau"][name])])
        summary[name] = {"median": float(np.median(taus)), "mean": float(taus.mean()),
                         "positive_share": float((taus > 0).mean()), "inputs": len(taus)} if len(taus) else None
    summary["permutation"] = {"median_change": float(np.median([r["median_change"] for r in records])),
                              "flip_share": float(np.mean([r["flip_share"] for r in records])),
                              "inputs_flipping_in_half": float(np.mean([r["flip_share"] >= 0.5 for r in records]))}
    return summary


def plot_attention_tests(records: Sequence[dict], out: Path) -> None:
    """kendall-tau.png (one histogram per tau pair) and permutation.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TAU_PAIRS), figsize=(4 * len(TAU_PAIRS), 3.2), sharey=True)
    for ax, name in zip(axes, TAU_PAIRS):
        taus = [r["tau"][name] for r in records if not np.isnan(r["tau"][name])]
        ax.hist(taus, bins=np.linspace(-1, 1, 21), color="tab:blue" if "~" in name and name.startswith(("att", "roll"))
                else "tab:gray")
        ax.axvline(float(np.median(taus)), color="black", linestyle="--", linewidth=1)
        ax.set_title(name.replace("~", " vs\n").replace("_", " "), fontsize=9)
        ax.set_xlabel("Kendall tau")
    axes[0].set_ylabel("inputs")
    fig.tight_layout()
    fig.savefig(out / "kendall-tau.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist([r["median_change"] for r in records], bins=30, color="tab:orange")
    ax.set_xlabel("median |change| of the predicted label's probability\nwhen the last layer's attention is permuted")
    ax.set_ylabel("inputs")
    fig.tight_layout()
    fig.savefig(out / "permutation.png", dpi=120)
    plt.close(fig)
