"""Looking inside an encoder: its attention weights, and attention rollout.

Attention weights say where each position read from in one layer; they are not, on their own, an
explanation of a prediction (Jain & Wallace, 2019). Rollout (Abnar & Zuidema, 2020) follows the
weights through the layers, with the residual connection counted as attention to oneself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .files import figure
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


@dataclass
class WordImportance:
    """Per input word, how much it moved the model's output for one label, by each method.

    `output` is what is explained: the label's probability (softmax; sigmoid for multilabel), or
    the score of a regression model. Integrated gradients are completeness-checked: their sum over
    all tokens (special tokens included, `special`) equals output minus the output at the
    baseline (`baseline_output`) up to Captum's `delta` (these three are None without them).
    """

    words: list[str]
    scores: dict[str, np.ndarray]  # method -> (W,) per word
    label: str | None
    output: float
    baseline_output: float | None = None
    delta: float | None = None  # integrated gradients' convergence delta
    special: float | None = None  # integrated gradients' share of the special tokens ([CLS], [SEP])
    unscored: list[str] = field(default_factory=list)  # words no token stands for (cut, or dropped characters)


@dataclass
class Encoded1:
    """One input, encoded (truncated to the model's max_length, and counted), and its words."""

    batch: dict[str, Tensor]
    tokens: list[str]
    words: list[str]
    groups: np.ndarray  # (T,) per token its word's index; -1 for special tokens
    unscored: list[str]
    truncated: bool


def encode_one(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None) -> Encoded1:
    if model.kind.words:
        raise ValueError(f"word importance explains one output per text; this is a {model.spec.task} model "
                         "(one output per word or span)")
    if model.spec.pair != (pair is not None):
        raise ValueError("this model reads text pairs: give the second text" if model.spec.pair
                         else "this model reads single texts, not pairs")
    encoded = tokenizer.encode([text], None if pair is None else [pair], max_length=model.spec.max_length,
                               overflow="truncate")
    words, groups = _words(encoded.rows[0], [text] if pair is None else [text, pair])
    kept = np.unique(groups[groups >= 0])  # words some token stands for
    remap = np.full(len(words) + 1, -1)
    remap[kept] = np.arange(len(kept))
    return Encoded1(encoded.tensors(pad_id=tokenizer.pad_id), encoded.rows[0].tokens, [words[i] for i in kept],
                    remap[groups], [w for i, w in enumerate(words) if i not in set(kept.tolist())],
                    encoded.num_truncated > 0)


def _explained(model: TaskModel, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor,
               **encoder_options) -> Tensor:
    """(B, L) what attribution explains: probabilities of a classifier, scores of a regressor.
    `encoder_options`: `word_vectors`, `edit_attention` (`Encoder.forward`)."""
    scores = model.scores({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids},
                          **encoder_options).float()
    return {"score": scores, "multi": scores.sigmoid()}.get(model.kind.label_kind, scores.softmax(-1))


def word_importance(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None = None,
                    label: str | None = None, methods: Sequence[str] = ATTRIBUTIONS, steps: int = 50) -> WordImportance:
    """Importance of each word of `text` (and `pair`) for `label` (default: the predicted one).

    Methods (Captum): "integrated_gradients" on the word embeddings (baseline: every word token's
    embedding replaced by [PAD]'s, [CLS] and [SEP] kept; `steps` steps), "gradient_x_input" on
    the word embeddings, and "occlusion" (the output's fall when all of a word's subwords become
    [MASK], one word at a time). Words are runs of non-space characters; subword scores are summed
    to them. An input longer than the model's max_length is cut (warned), and the words cut off
    are listed in `unscored`.
    """
    try:
        from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients
    except ImportError as e:
        raise ImportError("word importance needs Captum: pip install 'bertkit[explain]' (or captum)") from e
    unknown = sorted(set(methods) - set(ATTRIBUTIONS))
    if unknown:
        raise ValueError(f"unknown attribution method {unknown[0]!r}; choose from {', '.join(ATTRIBUTIONS)}")
    x = encode_one(model, tokenizer, text, pair)
    score = model.kind.label_kind == "score"
    if score and label is not None:
        raise ValueError("a regression model has one output, its score: there is no label to choose")
    args = (x.batch["input_ids"], x.batch["attention_mask"], x.batch["token_type_ids"])
    model.eval()
    with torch.no_grad():
        outputs = _explained(model, *args)[0]
    target = 0 if score else int(outputs.argmax()) if label is None else _label_index(model, label)
    found = WordImportance(x.words, {}, None if score else model.spec.labels[target], float(outputs[target]),
                           unscored=x.unscored)
    special = torch.from_numpy(x.groups < 0)
    vectors = model.encoder.embeddings.word(args[0]).detach()
    by_vectors = lambda v, *a: _explained(model, *a, word_vectors=v)  # noqa: E731
    per_token = {}
    if "integrated_gradients" in methods:
        baseline_ids = torch.where(special, args[0][0], tokenizer.pad_id)[None]
        ig, delta = IntegratedGradients(by_vectors).attribute(
            vectors, model.encoder.embeddings.word(baseline_ids).detach(), target=target, additional_forward_args=args,
            n_steps=steps, return_convergence_delta=True)
        per_token["integrated_gradients"] = ig.sum(-1)[0].detach()
        with torch.no_grad():
            found.baseline_output = float(_explained(model, baseline_ids, *args[1:])[0, target])
        found.delta, found.special = float(delta[0]), float(per_token["integrated_gradients"][special].sum())
    if "gradient_x_input" in methods:
        per_token["gradient_x_input"] = InputXGradient(by_vectors).attribute(
            vectors.clone().requires_grad_(), target=target, additional_forward_args=args).sum(-1)[0].detach()
    for method, values in per_token.items():
        found.scores[method] = np.bincount(x.groups[~special.numpy()], values[~special].double().numpy(),
                                           minlength=len(x.words))
    if "occlusion" in methods:
        feature = torch.from_numpy(np.where(x.groups < 0, len(x.words), x.groups))[None]  # specials: one more group
        fall = FeatureAblation(lambda *a: _explained(model, *a)).attribute(
            args[0], baselines=tokenizer.mask_id, target=target, additional_forward_args=args[1:], feature_mask=feature,
            perturbations_per_eval=len(x.words) + 1)[0]  # every word's copy in one batch
        first = [int(np.flatnonzero(x.groups == w)[0]) for w in range(len(x.words))]  # each word has a token
        found.scores["occlusion"] = fall[first].double().numpy()
    found.scores = {m: found.scores[m] for m in methods}
    return found


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

TAU_PAIRS = {f"{a}~{b}": (a, b) for a, b in (  # name -> (importance, importance)
    ("attention", "integrated_gradients"), ("attention", "occlusion"), ("rollout", "integrated_gradients"),
    ("rollout", "occlusion"), ("integrated_gradients", "occlusion"))}  # the last two attributions, for scale


@dataclass
class AttentionView:
    """One input's attention: `attentions` per layer (1, nh, T, T), `rollout` (1, T, T), and per word
    (`words` of `encode_one`) the attention the head reads, heads averaged, in the last layer and in
    rollout: [CLS]'s row for a [CLS]-pooling model, the mean of the real tokens' rows for mean pooling."""

    input: Encoded1
    attentions: list[Tensor]
    rollout: Tensor
    head_words: dict[str, np.ndarray]  # "attention", "rollout" -> (W,)


def attention_view(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None = None) -> AttentionView:
    x = encode_one(model, tokenizer, text, pair)
    with torch.no_grad():
        weights = model.encoder(**x.batch, output_attentions=True).attentions
    rollout = attention_rollout(weights)
    read = (lambda m: m[0]) if model.spec.pooling == "cls" else (lambda m: m.mean(0))  # (T, T) -> (T,)
    rows = {"attention": read(weights[-1][0].mean(0)), "rollout": read(rollout[0])}
    real = x.groups >= 0
    words = {name: np.bincount(x.groups[real], row.double().numpy()[real], minlength=len(x.words))
             for name, row in rows.items()}
    return AttentionView(x, weights, rollout, words)


def attention_vs_attribution(model: TaskModel, tokenizer: Tokenizer, text: str, pair: str | None = None,
                             permutations: int = 20, steps: int = 50, seed: int = 0) -> dict:
    """Jain & Wallace's two tests on one input of a classifier.

    Agreement: Kendall's tau-b between word rankings by attention (what the head reads, heads
    averaged, in the last layer and in rollout: `attention_view`), and by the magnitude of integrated
    gradients and of occlusion (`word_importance`, for the predicted label).
    Permutation: in the last layer, the attention weights of every head and query moved to other
    real tokens by one random permutation of the real key positions ([CLS] and [SEP] stay), one
    permutation per copy; the change of the predicted label's probability and whether it flips.

    Departures from the paper, a BiLSTM with one attention layer: words are runs of non-space
    characters with their subwords summed; occlusion masks a word rather than deleting it; the change
    is |delta p| of the predicted label (their total variation distance, for two labels); 20
    permutations by default rather than 100.
    """
    from scipy.stats import kendalltau

    if model.kind.label_kind != "single":
        raise ValueError(f"the attention tests explain a classifier's label; this is a {model.spec.task} model")
    importance = word_importance(model, tokenizer, text, pair, methods=("integrated_gradients", "occlusion"),
                                 steps=steps)
    view = attention_view(model, tokenizer, text, pair)
    words = {**view.head_words, **{m: np.abs(v) for m, v in importance.scores.items()}}
    taus = {name: float(kendalltau(words[a], words[b]).statistic) if len(importance.words) > 1 else float("nan")
            for name, (a, b) in TAU_PAIRS.items()}
    label = model.spec.labels.index(importance.label)
    args = [view.input.batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
    T, real = args[0].shape[1], torch.from_numpy(np.flatnonzero(view.input.groups >= 0))
    g = torch.Generator().manual_seed(seed)
    keys = torch.arange(T).repeat(permutations, 1)  # (K, T): per copy, where each key position reads from
    keys[:, real] = real[torch.argsort(torch.rand(permutations, len(real), generator=g), dim=1)]
    last = len(model.encoder.layers)
    shuffle = lambda i, w: w.gather(-1, keys[:, None, None, :].expand_as(w)) if i == last else w  # noqa: E731
    with torch.no_grad():
        shuffled = _explained(model, *(a.expand(permutations, T) for a in args), edit_attention=shuffle)
    change = (shuffled[:, label] - importance.output).abs()
    return {"text": text, "words": importance.words, "unscored": importance.unscored,
            "truncated": view.input.truncated, "label": importance.label, "probability": importance.output,
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
    with figure(out / "kendall-tau.png", ncols=len(TAU_PAIRS), figsize=(4 * len(TAU_PAIRS), 3.2),
                sharey=True) as (_, axes):
        for ax, name in zip(axes, TAU_PAIRS):
            taus = [r["tau"][name] for r in records if not np.isnan(r["tau"][name])]
            ax.hist(taus, bins=np.linspace(-1, 1, 21),
                    color="tab:blue" if "~" in name and name.startswith(("att", "roll")) else "tab:gray")
            ax.axvline(float(np.median(taus)), color="black", linestyle="--", linewidth=1)
            ax.set_title(name.replace("~", " vs\n").replace("_", " "), fontsize=9)
            ax.set_xlabel("Kendall tau")
        axes[0].set_ylabel("inputs")
    with figure(out / "permutation.png", figsize=(5, 3.2)) as (_, ax):
        ax.hist([r["median_change"] for r in records], bins=30, color="tab:orange")
        ax.set_xlabel("median |change| of the predicted label's probability\n"
                      "when the last layer's attention is permuted")
        ax.set_ylabel("inputs")
