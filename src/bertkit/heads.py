"""Heads that sit on the encoder's hidden states.

The MLM head projects onto the vocabulary through the input embedding matrix (weight tying, as in
BERT). It takes whatever rows it is given: pretraining passes only the masked positions, so the
(H x V) projection, the largest matrix product of a small BERT, runs on 15% of the tokens.

Training does not even keep those (M, V) logits: `vocabulary_cross_entropy` computes the loss and
its gradient chunk by chunk of rows, so a 30k-word vocabulary never needs an (M, V) tensor (at
M = 600 that is 73 MB, which the C allocator hands back to the OS after each use and page-faults
in again at the next, and which log-softmax, its backward and the one-hot gradient each traverse).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .config import EncoderConfig
from .model import Encoder, activation, init_weights
from .precision import matmul_dtype

IGNORE_INDEX = -100  # the label of positions no loss reads (unchosen tokens, padding, unknown labels)
Pooling = Literal["mean", "cls", "max"]


class MLMHead(nn.Module):
    """dense -> activation -> layer norm -> tied decoder + bias.

    RoBERTa's and ELECTRA's heads use exact GELU whatever the encoder's activation, as their reference
    code does. The dense layer maps the hidden size to the embedding width (equal but in ELECTRA's
    generator, whose narrow layers decode through the discriminator's wider embeddings).
    """

    def __init__(self, config: EncoderConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.act = "gelu" if config.family in ("roberta", "electra") else config.hidden_act
        E = config.embedding_width
        self.dense = nn.Linear(config.hidden_size, E)
        self.norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(E, config.vocab_size, device="meta")  # no V x E allocation
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = nn.Parameter(torch.zeros(config.vocab_size))
        init_weights(self.dense, config)

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., H) -> (..., V) logits."""
        return self.decoder(self.transform(hidden))

    def transform(self, hidden: Tensor) -> Tensor:
        """(..., H) -> (..., E): the vectors the decoder projects onto the vocabulary."""
        return self.norm(activation(self.act, self.dense(hidden)))


# Rows per chunk: a (rows, V) fp32 block of about 16 MB, small enough to be reused by the allocator.
_CHUNK_BYTES = 16 * 2**20


def vocabulary_cross_entropy(x: Tensor, weight: Tensor, bias: Tensor, labels: Tensor) -> Tensor:
    """sum_i CE(x_i W^T + b, labels_i), the same value and gradients as
    `F.cross_entropy(F.linear(x, weight, bias).float(), labels, reduction="sum")`.

    Args:
        x: (M, H) vectors; weight: (V, H); bias: (V,); labels: (M,) class ids.

    Returns:
        The loss sum, a scalar fp32 tensor. Under autocast the projection runs in the autocast
        dtype (as `F.linear` would) and the softmax in fp32.
    """
    return sampled_vocabulary_cross_entropy(x, weight, bias, labels, None)[0]


def sampled_vocabulary_cross_entropy(x: Tensor, weight: Tensor, bias: Tensor, labels: Tensor,
                                     uniforms: Tensor | None, temperature: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """`vocabulary_cross_entropy`, and one token drawn from each row's softmax at the (M,) `uniforms`
    as `draw` does (None: no draw), from the same logits: ELECTRA's generator both learns from and
    samples its predictions, and the (M, V) projection, its largest product, then runs once.
    `temperature`: the draws come from softmax(logits / temperature) (the loss is unchanged).

    Returns:
        (loss sum, (M,) drawn ids or None); no gradient flows through the draws.
    """
    return _VocabularyCrossEntropy.apply(x, weight, bias, labels, uniforms, matmul_dtype(x, weight), temperature)


def draw(probabilities: Tensor, uniforms: Tensor, cumulative: Tensor | None = None) -> Tensor:
    """One id per row of (M, V) probabilities, found by inverting their cumulative sum at (M,) uniform
    draws in [0, 1): the same distribution as `torch.multinomial`, which on a CPU took 500 ms for
    614 x 30,522 probabilities where this takes 35 ms, with draws that can come with the data.
    `cumulative`: an (M, V) buffer for the cumulative sum, reused across calls (None: a new one)."""
    cumulative = torch.cumsum(probabilities, -1, out=cumulative)  # (M, V)
    u = uniforms[:, None].to(cumulative.dtype) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, u, right=True).squeeze(1).clamp_(max=probabilities.shape[-1] - 1)


class _VocabularyCrossEntropy(torch.autograd.Function):
    """The gradient of a softmax cross-entropy is softmax - one-hot: it is computed in the forward
    pass, one chunk of rows at a time, and scaled by the incoming gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, labels: Tensor, uniforms: Tensor | None,
                dtype: torch.dtype, temperature: float) -> tuple[Tensor, Tensor | None]:
        with torch.autocast(x.device.type, enabled=False):
            w, b = weight.to(dtype), bias.to(dtype)
            needs_grad = any(ctx.needs_input_grad[:3])
            grad_x = torch.empty_like(x) if needs_grad else None
            grad_w = torch.empty(weight.shape, dtype=torch.float32, device=x.device) if needs_grad else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=x.device) if needs_grad else None
            drawn = None if uniforms is None else torch.empty(len(labels), dtype=torch.long, device=x.device)
            total = torch.zeros((), dtype=torch.float32, device=x.device)
            rows = min(x.shape[0], max(1, _CHUNK_BYTES // (4 * weight.shape[0])))
            # One (rows, V) buffer for every chunk's logits, then its softmax, in place: a fresh
            # buffer per chunk (and a temporary inside logsumexp) would be page-faulted in each time.
            buffer = torch.empty((rows, weight.shape[0]), dtype=torch.float32, device=x.device)
            cumulative = None if drawn is None else torch.empty_like(buffer)  # the draws' one buffer likewise
            for start in range(0, x.shape[0], rows):
                xc, yc = x[start:start + rows].to(dtype), labels[start:start + rows]
                logits = buffer[:len(yc)]
                if dtype == torch.float32:
                    torch.addmm(b, xc, w.t(), out=logits)
                else:
                    logits.copy_(torch.addmm(b, xc, w.t()))
                target = logits.gather(1, yc[:, None]).squeeze(1)
                peak = logits.amax(dim=-1, keepdim=True)
                exps = logits.sub_(peak).exp_()  # (C, V): exp(logit - max)
                sums = exps.sum(dim=-1)
                total += (peak.squeeze(1) + sums.log() - target).sum()  # logsumexp - target logit
                if not needs_grad and drawn is None:  # evaluation: the loss alone
                    continue
                grad = exps.div_(sums[:, None])  # softmax
                if drawn is not None:  # softmax(l / t) is softmax(l) ** (1 / t), renormalised (draw does that)
                    tempered = grad if temperature == 1.0 else grad.pow(1.0 / temperature)
                    drawn[start:start + rows] = draw(tempered, uniforms[start:start + rows], cumulative[:len(yc)])
                if not needs_grad:
                    continue
                grad[torch.arange(len(yc), device=x.device), yc] -= 1
                g = grad.to(dtype)
                grad_x[start:start + rows] = g @ w
                if dtype == torch.float32:  # beta 0: the first chunk overwrites the empty buffer
                    grad_w.addmm_(g.t(), xc, beta=float(start > 0))
                elif start == 0:  # accumulate the chunks' bf16 products in fp32
                    grad_w.copy_(g.t() @ xc)
                else:
                    grad_w.add_(g.t() @ xc)
                grad_b += grad.sum(0)
        if needs_grad:
            ctx.save_for_backward(grad_x, grad_w.to(weight.dtype), grad_b.to(bias.dtype))
        if drawn is not None:
            ctx.mark_non_differentiable(drawn)
        return total, drawn

    @staticmethod
    def backward(ctx, grad_total: Tensor, grad_drawn: Tensor | None):
        grad_x, grad_w, grad_b = ctx.saved_tensors  # scaled in place, no (V, H) copy: a second
        # backward through the same graph (retain_graph=True) is not supported
        return grad_x.mul_(grad_total), grad_w.mul_(grad_total), grad_b.mul_(grad_total), None, None, None, None


class NSPHead(nn.Module):
    """Next-sentence prediction from the pooled [CLS] vector: 0 = B follows A, 1 = B is random."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, H) -> (B, 2) logits."""
        return self.classifier(pooled)


class RTDHead(nn.Module):
    """ELECTRA's replaced-token detection: per token, dense -> activation -> one logit, positive for
    "replaced by the generator" (Hugging Face's ElectraDiscriminatorPredictions)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.act = config.hidden_act
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., H) -> (...) logits."""
        return self.prediction(activation(self.act, self.dense(hidden))).squeeze(-1)


class SpanBoundaryHead(nn.Module):
    """SpanBERT's span boundary objective: predict each token of a masked span from the encodings
    of the two tokens just outside the span and the token's position inside it.

    y_i = LN(GELU(W2 LN(GELU(W1 [x_{s-1}; x_{e+1}; p_{i-s}])))), projected onto the vocabulary
    through the MLM head's decoder (the shared output embedding).
    """

    def __init__(self, config: EncoderConfig, max_span_tokens: int = 128):
        super().__init__()
        H = config.hidden_size
        self.max_span_tokens = max_span_tokens
        self.position = nn.Embedding(max_span_tokens, H)
        self.mlp = nn.Sequential(nn.Linear(3 * H, H), nn.GELU(), nn.LayerNorm(H, eps=config.layer_norm_eps),
                                 nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H, eps=config.layer_norm_eps))
        init_weights(self, config)

    def forward(self, left: Tensor, right: Tensor, offset: Tensor) -> Tensor:
        """(M, H) left boundary, (M, H) right boundary, (M,) offset in span -> (M, H) vectors."""
        if offset.numel() and int(offset.max()) >= self.max_span_tokens:
            raise ValueError(f"a masked span is {int(offset.max()) + 1} tokens long, more than the span "
                             f"boundary head's {self.max_span_tokens} positions")
        return self.mlp(torch.cat([left, right, self.position(offset)], dim=-1))


def pretraining_head(name: str, encoder: Encoder) -> nn.Module:
    """A new head of `encoder` by name ("mlm", "nsp" or "rtd"; the MLM decoder is its word embeddings)."""
    if name == "mlm":
        return MLMHead(encoder.config, encoder.embeddings.word)
    return {"nsp": NSPHead, "rtd": RTDHead}[name](encoder.config)


def add_pretraining_heads(encoder: Encoder, mlm: bool = True, nsp: bool = False, rtd: bool = False) -> Encoder:
    """Attach freshly initialised MLM, NSP and/or RTD heads to `encoder` (in place) and return it."""
    if nsp and encoder.pooler is None:
        raise ValueError("next-sentence prediction needs the pooler; this config has pooler=False")
    for name, wanted in (("mlm", mlm), ("nsp", nsp), ("rtd", rtd)):
        if wanted:
            head = pretraining_head(name, encoder)
            if name != "mlm":  # the MLM head initialises its dense layer itself: its decoder is the embeddings
                init_weights(head, encoder.config)
            setattr(encoder, f"{name}_head", head)
    return encoder


# ------------------------------------------------------------------------------- pooling


def pool(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """(B, T, H) hidden states and (B, T) mask -> (B, H): the [CLS] vector ("cls"), or the mean
    ("mean") or maximum ("max") over the text's tokens, [CLS] and [SEP] included."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1)
    if pooling == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).amax(1)
    raise ValueError(f"pooling must be 'mean', 'cls' or 'max', not {pooling!r}")


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


# ------------------------------------------------------------------------------- task heads


class LinearHead(nn.Module):
    """dropout -> linear: (..., H) -> (..., L) scores of a pooled text (one unit per label, or one for
    a regression score; softmax or per-label sigmoid is the loss's business) or of each word."""

    def __init__(self, config: EncoderConfig, num_outputs: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(config.hidden_size, num_outputs)
        init_weights(self.out, config)

    def forward(self, vectors: Tensor) -> Tensor:
        return self.out(self.dropout(vectors))


class SpanClassificationHead(nn.Module):
    """Scores every span of up to `max_width` words over the labels plus "no entity" (unit 0).

    A span (i, j) of a sentence's word vectors v is [v_i; v_j; summary(v_i..v_j); w_{j-i}]: its
    boundary vectors, a content summary (their mean, or a learned attention pooling over them, as
    in Lee et al. 2017's span representations), and a learned width embedding; a two-layer
    feed-forward network scores each span independently, so nested and overlapping spans can all be found.
    """

    def __init__(self, config: EncoderConfig, num_labels: int, max_width: int = 8, summary: str = "mean",
                 width_size: int = 32, dropout: float = 0.1):
        super().__init__()
        if summary not in ("mean", "attention"):
            raise ValueError(f"summary must be 'mean' or 'attention', not {summary!r}")
        if max_width < 1:
            raise ValueError(f"max_width must be at least 1 word, got {max_width}")
        H = config.hidden_size
        self.max_width, self.summary = max_width, summary
        self.width = nn.Embedding(max_width, width_size)
        self.attention = nn.Linear(H, 1) if summary == "attention" else None
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(3 * H + width_size, H), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(H, num_labels + 1))
        init_weights(self, config)

    def forward(self, words: Tensor, starts: Tensor, ends: Tensor, rows: Tensor) -> Tensor:
        """Score spans.

        Args:
            words: (B, W, H) word vectors.
            starts, ends: (S,) first and last word (inclusive) of each span; ends - starts < max_width.
            rows: (S,) the batch row of each span.

        Returns:
            (S, num_labels + 1) logits, unit 0 = no entity.
        """
        inside = starts[:, None] + torch.arange(self.max_width, device=words.device)  # (S, max_width) word positions
        valid = inside <= ends[:, None]
        members = words[rows[:, None], inside.clamp(max=words.shape[1] - 1)]  # (S, max_width, H)
        if self.attention is None:
            weights = valid.to(members.dtype) / valid.sum(1, keepdim=True)
        else:
            scores = self.attention(members).squeeze(-1).float().masked_fill(~valid, float("-inf"))
            weights = scores.softmax(-1).to(members.dtype)
        summary = (weights.unsqueeze(-1) * members).sum(1)  # (S, H)
        span = torch.cat([words[rows, starts], words[rows, ends], summary, self.width(ends - starts)], dim=-1)
        return self.mlp(span)
