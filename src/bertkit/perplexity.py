"""Perplexity of a causal language model over text longer than its window, by a sliding window.

A model reads at most `max_length` tokens. The window plan moves the *predicted* tokens forward by
`stride`: each window is the `max_length` inputs that end right before its last target, and it
scores only the tokens no earlier window scored. So every token after the first is predicted
exactly once, with `max_length` tokens of left context once the first window is passed (the first
window's tokens have what precedes them). stride 1 is the token-by-token loop with a full window of
context; stride = max_length is independent chunks. The figure is exp(mean negative
log-likelihood per predicted token) over the whole text, and bits per byte (the same NLL in bits
over the UTF-8 bytes of the predicted tokens), which compares models with different tokenizers.

Where this departs from the transformers docs recipe ("Perplexity of fixed-length models"), each
departure held by a test:
- a window of L inputs predicts the L tokens after its first input (the target may lie past the
  window's inputs); the recipe passes the window as its own labels, so the model's label shift never
  predicts a window's first token: at stride = max_length one token per window goes unscored;
- the number of predicted tokens is counted, not taken as trg_len (one too many for the first
  window) or trg_len - 1 (one too few for the others, whose first label is already ignored);
- the mean is per token over the whole text, not a mean of per-window means.
Windows of the same length run in one forward pass, and logits are computed only where scored.

Models: bertkit's own causal encoders (`configs/arlm.yaml`; a config with is_decoder true), read
natively, and any transformers `AutoModelForCausalLM` directory or GGUF file through the `hf` extra.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .convert import MODEL_TYPES, load_pretrained
from .model import Encoder
from .precision import autocast, evaluating, resolve
from .tokenizer import Tokenizer

# logits(input_ids (B, T), keep) -> (B, keep, V): the next-token logits at the last `keep` positions
LogitsFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Window:
    """Inputs ids[begin:end]; the predictions of the last `scored` inputs count: they predict
    tokens end - scored + 1 .. end."""

    begin: int
    end: int
    scored: int


def sliding_windows(num_tokens: int, max_length: int, stride: int) -> list[Window]:
    """The window plan for a text of `num_tokens` tokens (see the module docstring)."""
    if num_tokens < 2:
        raise ValueError(f"a text of {num_tokens} token(s) has nothing to predict; perplexity needs at least 2")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be between 1 and max_length ({max_length}), not {stride}: "
                         "a larger stride would leave tokens unpredicted")
    last = num_tokens - 1  # inputs 0 .. last-1 predict tokens 1 .. last
    end = min(max_length, last)
    windows = [Window(0, end, end)]
    while end < last:
        new_end = min(end + stride, last)
        windows.append(Window(max(0, new_end - max_length), new_end, new_end - end))
        end = new_end
    return windows


def window_nll(logits_fn: LogitsFn, ids: Sequence[int], max_length: int, stride: int,
               batch_tokens: int = 2048, progress: bool = False) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of tokens 1 .. N-1 of `ids`, and their count (N - 1).

    Consecutive windows of equal length go through the model together, up to `batch_tokens` input
    tokens per forward pass (at least one window).
    """
    tokens = torch.as_tensor(list(ids), dtype=torch.long)
    windows = sliding_windows(len(tokens), max_length, stride)
    batch_size = max(1, batch_tokens // max_length)
    groups: list[list[Window]] = []
    for w in windows:
        if groups and len(groups[-1]) < batch_size and groups[-1][0].end - groups[-1][0].begin == w.end - w.begin:
            groups[-1].append(w)
        else:
            groups.append([w])
    nll, predicted = 0.0, 0
    bar = tqdm(total=len(windows), desc="windows", unit="window", disable=not progress)
    for group in groups:
        keep = max(w.scored for w in group)
        inputs = torch.stack([tokens[w.begin:w.end] for w in group])  # (B, T)
        logits = logits_fn(inputs, keep)  # (B, keep, V)
        for row, w in zip(logits, group):
            targets = tokens[w.end - w.scored + 1:w.end + 1]
            nll += F.cross_entropy(row[keep - w.scored:].float(), targets, reduction="sum").item()
            predicted += w.scored
        bar.update(len(group))
    bar.close()
    return nll, predicted


@dataclass(frozen=True)
class Perplexity:
    """Summed NLL over the predicted tokens of one or more texts; `+` pools texts token-weighted."""

    nll: float  # nats
    predicted: int  # tokens predicted: each text's tokens but its first
    bytes: int  # UTF-8 bytes of the predicted tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.predicted)

    @property
    def bits_per_byte(self) -> float | None:
        """None for a text whose predicted tokens cover no characters (only special tokens)."""
        return self.nll / math.log(2) / self.bytes if self.bytes else None

    def __add__(self, other: Perplexity) -> Perplexity:
        return Perplexity(self.nll + other.nll, self.predicted + other.predicted, self.bytes + other.bytes)

    def summary(self) -> dict:
        return {"perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte,
                "nll_per_token": self.nll / self.predicted, "predicted_tokens": self.predicted,
                "bytes": self.bytes}


@dataclass
class CausalLM:
    """A causal language model and its tokenizer, as perplexity needs them."""

    logits: LogitsFn
    encode: Callable[[str], tuple[list[int], list[tuple[int, int]]]]  # text -> ids, character offsets
    max_length: int  # the longest input the model takes
    name: str


def window_settings(model: CausalLM, max_length: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """(max_length, stride) with their defaults: the model's window, and half of it."""
    max_length = max_length or model.max_length
    if max_length > model.max_length:
        raise ValueError(f"max_length {max_length} is more than {model.name} takes ({model.max_length})")
    return max_length, stride or max(1, max_length // 2)


def text_perplexity(model: CausalLM, text: str, *, max_length: int | None = None, stride: int | None = None,
                    batch_tokens: int = 2048, max_tokens: int | None = None, name: str = "text",
                    progress: bool = False) -> Perplexity:
    """Sliding-window perplexity of one text.

    Args:
        max_length: window length in tokens; stride: how far the predicted tokens move per window
            (defaults: `window_settings`).
        max_tokens: score only the text's first `max_tokens` tokens (an explicit choice; the bytes
            counted end where those tokens end).
        name: how errors name the text (a file name).
    """
    max_length, stride = window_settings(model, max_length, stride)
    ids, offsets = model.encode(text)
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"{name}: {len(ids)} token(s); perplexity needs a text of at least 2 tokens")
    nll, predicted = window_nll(model.logits, ids, max_length, stride, batch_tokens, progress)
    spans = [(start, end) for start, end in offsets[1:] if end > start]  # special tokens have no span
    scored_text = text[min(s for s, _ in spans):max(e for _, e in spans)] if spans else ""
    return Perplexity(nll, predicted, len(scored_text.encode("utf-8")))


# ------------------------------------------------------------------ bertkit causal encoders

def bertkit_causal_lm(model: Encoder, tokenizer: Tokenizer, precision: str = "auto", name: str = "model") -> CausalLM:
    """A causal bertkit encoder with its LM head (recipe arlm) as a `CausalLM`. Texts are read as
    training read them: [CLS] first (never predicted), [SEP] last."""
    if not model.config.causal or model.mlm_head is None:
        raise ValueError(f"{name}: not a causal LM with an LM head (bertkit pretrain --config configs/arlm.yaml "
                         "makes one); perplexity needs one")

    @torch.inference_mode()
    def logits(input_ids: torch.Tensor, keep: int) -> torch.Tensor:
        with evaluating(model, precision) as device:
            return model.mlm_head(model(input_ids.to(device)).last_hidden_state[:, -keep:]).cpu()

    def encode(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = tokenizer.encode([text], max_length=len(text) + 2)  # a token holds at least one character
        return encoded.ids(0), encoded.offsets(0)

    return CausalLM(logits, encode, model.config.max_length, name)


def _is_bertkit_causal(path: Path) -> bool:
    """A model directory bertkit reads natively as a causal LM: a decoder of a family it reads."""
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path / 'config.json'}: not JSON ({e})") from None
    families = {t for types in MODEL_TYPES.values() for t in types}
    return config.get("model_type") in families and bool(config.get("is_decoder"))


# ------------------------------------------------------------------ transformers causal models

def load_causal_lm(path: str | Path, precision: str = "auto", cache_dir: str | Path | None = None) -> CausalLM:
    """A bertkit causal encoder (read natively), any transformers `AutoModelForCausalLM` directory, or
    a GGUF file (converted once to a de-quantized fp32 directory under `cache_dir`, default
    ~/.cache/bertkit/gguf, and loaded from there afterwards). All but the first need the `hf` extra:
    pip install 'bertkit[hf]' (and `gguf` for GGUF files).
    """
    path = Path(path)
    if (path / "config.json").is_file() and _is_bertkit_causal(path):
        return bertkit_causal_lm(load_pretrained(path), Tokenizer.from_pretrained(path), precision, str(path))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ImportError("perplexity of transformers models needs the hf extra: pip install 'bertkit[hf]'") from e
    if path.suffix == ".gguf":
        path = _converted_gguf(path, Path(cache_dir or Path.home() / ".cache" / "bertkit" / "gguf"))
    elif not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: neither a model directory with config.json nor a .gguf file")
    return hf_causal_lm(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                        precision, str(path))


def hf_causal_lm(model, tokenizer, precision: str = "auto", name: str = "model") -> CausalLM:
    """A loaded transformers causal LM and its (fast) tokenizer as a `CausalLM`."""
    model.eval()
    dtype = resolve(precision)
    takes_keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    @torch.inference_mode()
    def logits(input_ids: torch.Tensor, keep: int) -> torch.Tensor:
        with autocast(dtype):
            if takes_keep:
                return model(input_ids=input_ids, logits_to_keep=keep).logits
            return model(input_ids=input_ids).logits[:, -keep:]

    def encode(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoded = tokenizer(text, return_offsets_mapping=True, verbose=False)
        return encoded["input_ids"], encoded["offset_mapping"]

    limit = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
    return CausalLM(logits, encode, int(limit), name)


def _converted_gguf(file: Path, cache_dir: Path) -> Path:
    """The de-quantized transformers directory of a GGUF file, converted on first use (~40 s for a
    135M model) and kept under `cache_dir`, keyed by the file's name, size and modification time."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such GGUF file")
    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir / f"{file.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer
    print(f"converting {file.name} from GGUF once (this takes a while); cached in {target}", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    # The tensors are de-quantized to fp32 on loading; without the GGUF marker they save as usual.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
