"""The bidirectional encoder, top to bottom: Embeddings -> SelfAttention -> FeedForward -> Layer
-> Encoder (+ Pooler).

This is BERT as published (Devlin et al., 2019): learned token, position and segment embeddings,
post-layer-norm residual blocks, GELU feed-forward, a tanh pooler on [CLS]. Departures, none of
which changes the function computed:

- query, key and value are one (3H, H) projection (`qkv`), one matrix product instead of three;
  conversion from Hugging Face checkpoints concatenates the three;
- padding is removed once on entry and restored once on exit (see `padding.py`), so every
  token-wise layer runs on real tokens only, as a flat (N, H) tensor;
- in bf16 on CPU, and in int8 on AMX, the flat tensor carries a few spare rows, so that its row count,
  hence the shape of every matrix product, takes few distinct values: oneDNN compiles a kernel per shape
  (`padding.py`);
- attention is `torch.nn.functional.scaled_dot_product_attention`; rows of very different lengths
  attend in groups of similar length, each padded to its own longest (`padding.make_layout(group=True)`):
  random batches of CoNLL-2003 sentences trained at 0.74x the speed of length-sorted ones when every
  row's attention was padded to the batch's longest, at 0.98x with groups;
- dropout (`Dropout`) draws one 16-bit random number per element (64 random bits serve four
  elements) instead of a Bernoulli draw each, about 5x faster on a CPU, where PyTorch's Bernoulli
  sampler took a tenth of a bert-mini training step. The drop probability is thereby rounded to a
  multiple of 1/65536 (0.1 becomes 0.100006).

With `EncoderConfig.embedding_size` the embeddings are narrower or wider than the layers and a linear
map projects them (ELECTRA's generator reads the discriminator's embeddings that way).

With `EncoderConfig.causal` the same encoder is a left-to-right language model: each token attends
to itself and the tokens before it (Hugging Face's `is_decoder`; recipe arlm).

The encoder returns hidden states; task heads live in `heads.py`. An encoder may carry the
pretraining heads of its checkpoint (`mlm_head`, `nsp_head`, `rtd_head`) so that one directory holds them all.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import EncoderConfig
from .padding import TokenLayout, attention_rows, make_layout, repad, unpad, with_spare_rows
from .precision import ONEDNN_ACTIVATIONS, PackedLinear, compiles_per_shape, cpu_has_avx512, matmul_dtype


def activation(name: str, x: Tensor) -> Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    return F.relu(x)


def linear_activation(layer: nn.Module, name: str, x: Tensor) -> Tensor:
    """activation(name, layer(x)); in one oneDNN call where `layer` is packed for inference
    (`precision.PackedLinear`; all-MiniLM-L6-v2 fp32 embedding about 4% faster than apart)."""
    if isinstance(layer, PackedLinear) and not torch.is_grad_enabled() and name in ONEDNN_ACTIVATIONS:
        return layer.with_activation(x, name)
    return activation(name, layer(x))


def linear_residual(layer: nn.Module, x: Tensor, residual: Tensor, dropout: Dropout, rows: int | None) -> Tensor:
    """residual + dropout(layer(x), rows); in one oneDNN call where `layer` is packed for fp32 inference
    and nothing drops (`precision.PackedLinear.plus`): the same fp32 sums without a pass over the output
    to add them (oneDNN's products at all-MiniLM-L6-v2's and BERT-base's shapes 1.02x-1.08x as fast,
    BERT-large's level). In bf16 the fused sum would round once where the plain one rounds twice, so bf16
    keeps the plain sum."""
    if (isinstance(layer, PackedLinear) and not torch.is_grad_enabled() and not (dropout.training and dropout.p > 0)
            and layer.dtype == residual.dtype == torch.float32):
        return layer.plus(x, residual)
    return residual + dropout(layer(x), rows)


# On CPU, PyTorch's bf16 attention kernel is slower than its fp32 kernel for short sequences
# (measured with torch 2.13 on Zen 4: 32 x 12 heads x 12 tokens 1.35 ms vs 0.89 ms; 16 x 128 tokens
# 8.1 ms vs 5.6 ms; at 512 tokens bf16 wins, 15.8 ms vs 23.2 ms), so shorter sequences run it in fp32.
CPU_BF16_ATTENTION_MIN_LENGTH = 384

# On CPU, PyTorch's fused attention kernel is up to 3x slower than three batched products for short
# sequences without dropout (fp32, 2 threads, torch 2.13, AVX-512 EPYC: 32 rows x 12 heads x 16 tokens
# 1.42 ms vs 0.46 ms; 16 x 64 2.7 vs 2.1 ms) and faster from about 100 tokens (16 x 128 7.8 vs 9.9 ms),
# so fp32 sequences up to this length without dropout multiply out (`short_attention`), bf16 runs'
# fp32 detour included (all-MiniLM-L6-v2 bf16 embedding of STS-B dev, two runs of 7 alternating
# repeats: 0.96x-1.13x SDPA's speed there; batches of 32 1.05x and 1.13x, of 64 1.04x, of 8 0.96x and 1.03x).
CPU_SHORT_ATTENTION_MAX_LENGTH = 64


def dropout_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """Bool keep-mask of `shape`: False with probability round(p * 65536) / 65536."""
    n = math.prod(shape)
    bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return bits.view(torch.int16)[:n].view(shape) >= -32768 + round(p * 65536)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float, rows: int) -> Tensor:
        # 0 or 1 / (1 - p), in fp32 at least (in bf16 1 / 0.9 would be off by 0.2%): one
        # multiplication each way; a bf16 input (under autocast) gives an fp32 output
        dtype = torch.promote_types(x.dtype, torch.float32)
        scale = dropout_mask((rows, *x.shape[1:]), p, x.device).to(dtype).mul_(1.0 / (1.0 - p))
        if rows < x.shape[0]:  # rows past `rows` kept as they are
            scale = torch.cat([scale, scale.new_ones(x.shape[0] - rows, *x.shape[1:])])
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None


def dropout(x: Tensor, p: float, training: bool, rows: int | None = None) -> Tensor:
    """Inverted dropout with the fast mask of `dropout_mask`. With `rows`, only x[:rows] is dropped
    from and draws random numbers: a layout's spare rows (`padding.py`) change no later draw, so a
    seed trains with the same masks with them (bf16) and without (fp32)."""
    rows = x.shape[0] if rows is None else rows
    return _Dropout.apply(x, p, rows) if training and p > 0 else x


class Dropout(nn.Dropout):
    """`nn.Dropout` with the fast mask (same parameters, same state dict: none)."""

    def forward(self, x: Tensor, rows: int | None = None) -> Tensor:
        return dropout(x, self.p, self.training, rows)


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, p: float, causal: bool = False) -> Tensor:
    """Scaled dot-product attention with dropout `p` on its weights, (B, nh, T, hs) each -> (B, nh, T, hs).
    `causal`: query i sees keys 0..i only (rows are right-padded, so no real query sees padding).

    Short sequences on CPU attend in fp32 with autocast off (`fp32_detour`): for bf16 inputs the
    result comes back in fp32, and the caller casts it to the residual stream's dtype (a no-op under
    autocast, where that stream is fp32). On CPU, sequences of up to CPU_SHORT_ATTENTION_MAX_LENGTH
    tokens without dropout and not causal take `short_attention`, bf16 ones through the fp32 detour.
    `attention_inputs` gives q, k and v in the layout these paths take, in one copy.
    """
    if fp32_detour(q):
        with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs back to bf16
            return attention(q.float(), k.float(), v.float(), key_mask, p, causal)
    if p == 0.0 and not causal and short_on_cpu(q):
        return short_attention(q, k, v, key_mask)
    if p == 0.0:
        if causal:  # the causal mask hides every padded key from the real queries
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    # With dropout, PyTorch's CPU kernel computes this same sequence (its math path); written out
    # here so the weights take the fast dropout mask.
    return dropout(attention_weights(q, k, key_mask, causal), p, True) @ v


def fp32_detour(x: Tensor) -> bool:
    """Whether `attention` of (B, nh, T, hs) inputs like `x` runs in fp32 with autocast off: on CPU,
    for fewer than CPU_BF16_ATTENTION_MIN_LENGTH tokens in bf16 or under autocast."""
    return x.device.type == "cpu" and x.shape[-2] < CPU_BF16_ATTENTION_MIN_LENGTH and (
        x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu"))


def short_on_cpu(x: Tensor) -> bool:
    """Whether (B, nh, T, hs) inputs like `x` are fp32 on CPU and at most CPU_SHORT_ATTENTION_MAX_LENGTH
    tokens long: `short_attention`'s, without dropout and not causal."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[-2] <= CPU_SHORT_ATTENTION_MAX_LENGTH


def attention_inputs(qkv: Tensor) -> tuple[Tensor, ...]:
    """q, k and v of the (3, B, nh, T, hs) projections, in one copy where `attention` would copy each of
    them: to fp32 for its CPU detour, contiguous for `short_attention`'s batched products. all-MiniLM-L6-v2
    bf16 on the AMX Xeon, calls of 18 random STS-B sentences on one thread, best of 3: 789-792 sentences/s
    against 746-771 with a copy each (commit 3eff825)."""
    if fp32_detour(qkv):
        qkv = qkv.to(torch.float32, memory_format=torch.contiguous_format)
    elif short_on_cpu(qkv):
        qkv = qkv.contiguous()
    return qkv.unbind(0)


# With AVX-512, PyTorch's CPU softmax is slow over rows shorter than one vector of 16 floats (torch 2.13,
# Zen 4, 2 threads, 384 x 12 x 12 scores: 478 us; 384 x 16 x 16: 67 us; 384 x 12 x 12 with AVX2: 142 us),
# so there `short_attention` computes the softmax of such rows itself, in four passes (96 us). In
# all-MiniLM-L6-v2's embedding of STS-B dev (16 tokens on average) attention took 0.53 s instead of 0.63
# in fp32, 0.42 instead of 0.51 in int8 (median of 5 alternating runs); with AVX2 it gained nothing.
SHORT_SOFTMAX_KEYS = 16 if cpu_has_avx512() else 0


def short_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
    """`attention` without dropout, not causal, as three batched products (the fast way for short
    sequences on CPU): (B, nh, T, hs) each -> (B, nh, T, hs); `key_mask` (B, 1, 1 or T, T) lets every
    query see at least one key (a layout's rows hold a real token; `padding.check_right_padded`).
    Without gradients, rows shorter than SHORT_SOFTMAX_KEYS take `softmax_in_place`."""
    B, nh, T, hs = q.shape
    q, k, v = (t.reshape(B * nh, T, hs) for t in (q, k, v))  # (B*nh, T, hs)
    if key_mask is None:
        scores = torch.bmm(q, k.transpose(1, 2)).mul_(hs ** -0.5)  # (B*nh, T, T)
    else:  # 0 or -inf per key, added to the scores in the same product
        rows = key_mask.shape[2]  # 1: the same keys for every query
        bias = torch.where(key_mask, 0.0, float("-inf")).to(q.dtype)  # (B, 1, rows, T)
        bias = bias.expand(B, nh, rows, T).reshape(B * nh, rows, T).expand(-1, T, T)  # (B*nh, T, T)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=hs ** -0.5)
    short_rows = T < SHORT_SOFTMAX_KEYS and not scores.requires_grad
    weights = softmax_in_place(scores) if short_rows else scores.softmax(-1)
    return torch.bmm(weights, v).view(B, nh, T, hs)  # (B*nh, T, hs) -> (B, nh, T, hs)


def softmax_in_place(scores: Tensor) -> Tensor:
    """`scores.softmax(-1)`, written over `scores` (every row has a finite maximum)."""
    scores.sub_(scores.amax(-1, keepdim=True)).exp_()
    return scores.div_(scores.sum(-1, keepdim=True))


def attention_weights(q: Tensor, k: Tensor, key_mask: Tensor | None, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(hs)) over the keys: (B, nh, T, hs) each -> (B, nh, T, T), 0 for padded
    keys (and, if `causal`, for keys after the query)."""
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    if causal:
        T = q.shape[2]
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return scores.softmax(-1)


def permutation_masks(ranks: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) factorization-order ranks and real-token mask -> the content and query streams' (B, 1, T, T)
    masks (True: query i may see key j): content, rank_j <= rank_i; query, rank_j < rank_i; real keys
    only. Context tokens share one rank and so see each other. A query with nothing before it (a
    context token: never a target) sees itself, so that no softmax runs over nothing."""
    before = ranks[:, None, :] <= ranks[:, :, None]  # (B, Tq, Tk)
    content = before & real[:, None, :]
    query = before & (ranks[:, None, :] != ranks[:, :, None]) & real[:, None, :]
    query |= torch.eye(ranks.shape[1], dtype=torch.bool, device=ranks.device) & ~query.any(-1, keepdim=True)
    return content[:, None], query[:, None]


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        E = config.embedding_width
        self.word = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, E)
        self.segment = nn.Embedding(config.type_vocab_size, E) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids: Tensor, position_ids: Tensor, token_type_ids: Tensor | None,
                word_vectors: Tensor | None = None, real_rows: int | None = None) -> Tensor:
        """(N,) ids -> (N, E) vectors; `word_vectors` (N, E), if given, stand in for the ids' embeddings.
        `real_rows`: the rows before a layout's spare rows (dropout draws for those only)."""
        x = (self.word(input_ids) if word_vectors is None else word_vectors) + self.position(position_ids)
        if self.segment is not None:
            segments = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.segment(segments)
        return self.dropout(self.norm(x), real_rows)


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        self.attention_dropout = config.attention_dropout
        self.causal = config.causal

    def forward(self, x: Tensor, layout: TokenLayout, look: Callable[[Tensor], Tensor] | None = None, *,
                mask: Tensor | None = None, keys_from: Tensor | None = None) -> Tensor:
        """(N, H) -> (N, H): attention, then residual and post-layer-norm. With `look`, the weights
        are computed explicitly, (B, nh, T, T) in fp32 with rows of padded positions 0, and
        `look(weights)` is what attends (it may keep them, or change them).

        Two-stream attention (`Encoder.two_stream`, on a layout that keeps padding): `mask` (B, 1, T, T)
        says which keys each query sees, and with `keys_from` (N, H) the keys and values come from
        that stream while the queries come from `x`."""
        if keys_from is None:
            qkv = self.qkv(x)  # (N, 3H)
        else:  # queries from x, keys and values from the other stream
            H = x.shape[-1]
            qkv = torch.cat([F.linear(x, self.qkv.weight[:H], self.qkv.bias[:H]),
                             F.linear(keys_from, self.qkv.weight[H:], self.qkv.bias[H:])], -1)
        if mask is not None:
            y = self.attend(qkv, layout, mask=mask)
        elif layout.groups:
            y = with_spare_rows([self.attend(qkv[g.start:g.end], g.layout) for g in layout.groups], layout)
        else:
            y = self.attend(qkv, layout, look)
        return self.norm(linear_residual(self.out, y.to(x.dtype), x, self.dropout, layout.num_tokens))

    def attend(self, qkv: Tensor, layout: TokenLayout, look: Callable[[Tensor], Tensor] | None = None,
               mask: Tensor | None = None) -> Tensor:
        """(N, 3H) -> (N, H): the attention of the layout's rows (each query sees the keys `mask`
        allows, if given, else the layout's real keys)."""
        B, T = layout.batch, layout.seqlen
        qkv = attention_rows(qkv, layout).view(B, T, 3, self.num_heads, self.head_size)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv.unbind(0) if look is not None else attention_inputs(qkv)  # (B, nh, T, hs) each
        p = self.attention_dropout if self.training else 0.0
        if mask is not None:
            y = attention(q, k, v, mask, p)
        elif look is None:
            y = attention(q, k, v, layout.key_mask, p, self.causal)
        else:
            w = attention_weights(q.float(), k.float(), layout.key_mask, self.causal)
            if layout.key_mask is not None:
                w = w.masked_fill(~layout.key_mask.transpose(-1, -2), 0.0)  # (B, 1, T, 1): padded queries
            y = dropout(look(w), p, self.training) @ v.float()
        return unpad(y.transpose(1, 2), layout).reshape(-1, self.num_heads * self.head_size)  # (N, H)


class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.act = config.hidden_act
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: Tensor, real_rows: int | None = None) -> Tensor:
        """(N, H) -> (N, H): feed-forward, then residual and post-layer-norm (dropout on the first
        `real_rows` rows, see `dropout`)."""
        return self.norm(linear_residual(self.down, linear_activation(self.up, self.act, x), x, self.dropout, real_rows))


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.feed_forward = FeedForward(config)

    def forward(self, x: Tensor, layout: TokenLayout, look: Callable[[Tensor], Tensor] | None = None, *,
                query: Tensor | None = None, masks: tuple[Tensor, Tensor] | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """(N, H) -> (N, H). With `query` (N, H) and `masks` (content, query; see `permutation_masks`):
        XLNet's two streams through this layer, -> (content, query), the query stream attending to
        the content stream's input `x`."""
        if query is None:
            return self.feed_forward(self.attention(x, layout, look), layout.num_tokens)
        content_mask, query_mask = masks
        return (self.feed_forward(self.attention(x, layout, mask=content_mask)),
                self.feed_forward(self.attention(query, layout, mask=query_mask, keys_from=x)))


class Pooler(nn.Module):
    """BERT's [CLS] summary: tanh(W h_[CLS] + b), trained by next-sentence prediction."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        """(B, T, H) -> (B, H)."""
        return torch.tanh(self.dense(hidden[:, 0]))


def init_weights(module: nn.Module, config: EncoderConfig) -> None:
    """BERT's initialisation of `module` and every module inside it: normal linear and embedding
    weights (the padding embedding zero), zero biases, layer norms at one and zero."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=config.initializer_range)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass
class EncoderOutput:
    last_hidden_state: Tensor  # (B, T, H); values at padded positions are meaningless
    layers: dict[int, Tensor] = field(default_factory=dict)  # asked-for hidden states, 0 = embeddings
    attentions: list[Tensor] = field(default_factory=list)  # asked for: per layer run, (B, nh, T, T) weights


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        # ELECTRA's generator: embeddings wider than the layers (shared with the discriminator), projected down
        self.embeddings_project = (nn.Linear(config.embedding_width, config.hidden_size)
                                   if config.embedding_width != config.hidden_size else None)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        self.pooler = Pooler(config) if config.pooler else None
        self.mlm_head: nn.Module | None = None  # set by heads.add_pretraining_heads or loading
        self.nsp_head: nn.Module | None = None
        self.rtd_head: nn.Module | None = None  # ELECTRA's replaced-token detection
        init_weights(self, config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, *, output_layers: Sequence[int] = (),
                last_layer: int | None = None, unpad_tokens: bool = True,
                output_attentions: bool = False, edit_attention: Callable[[int, Tensor], Tensor] | None = None,
                word_vectors: Tensor | None = None) -> EncoderOutput:
        """Encode a right-padded batch.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), 1 for tokens and 0 for padding; None when nothing is padded.
            token_type_ids: (B, T) segment ids (0 for the first text, 1 for the second); None = 0.
            output_layers: indices of hidden states to return as well: 0 is the embedding output,
                i the output of layer i, negative indices count from the last layer.
            last_layer: run layers 1..last_layer only (same indexing), when only an earlier hidden
                state is wanted; last_hidden_state is then that layer's output. None runs them all.
            unpad_tokens: run token-wise layers on real tokens only (fast path) or on every
                position (plain path); the results are equal.
            output_attentions: return the attention weights of every layer run as well, each
                (B, nh, T, T) in fp32: row i is query i's distribution over the real keys (rows of
                padded positions are 0). Slower: attention then takes its explicit path.
            edit_attention: `edit_attention(layer, weights)` (layer 1..L, weights as above) returns
                the weights that layer attends with: an intervention, such as permuting them.
            word_vectors: (B, T, E) vectors (E: the embedding width) used in place of the word embeddings of `input_ids`
                (position and segment embeddings are added as usual): gradients with respect to
                the input, for attribution.

        Returns:
            EncoderOutput with last_hidden_state (B, T, H), the asked-for layers, each (B, T, H),
            and the attentions when asked for.
        """
        B, T = input_ids.shape
        self.check_length(T)
        explicit = output_attentions or edit_attention is not None  # the weights are kept (B, nh, T, T)
        layout = make_layout(attention_mask, B, T, unpad=unpad_tokens, group=unpad_tokens and not explicit,
                             spare_rows=self.kernels_per_shape(input_ids))
        x = self.embed(unpad(input_ids, layout), layout, token_type_ids,
                       None if word_vectors is None else unpad(word_vectors, layout))  # (N, H)
        wanted = {self.layer_index(i) for i in output_layers}
        depth = len(self.layers) if last_layer is None else self.layer_index(last_layer)
        if wanted and max(wanted) > depth:
            raise ValueError(f"output_layers {sorted(wanted)} asks for layers beyond last_layer={depth}")
        kept = {0: x} if 0 in wanted else {}
        weights: list[Tensor] = []

        def look(i: int, w: Tensor) -> Tensor:
            w = w if edit_attention is None else edit_attention(i, w)
            weights.extend([w] if output_attentions else [])
            return w

        for i, layer in enumerate(self.layers[:depth], start=1):
            x = layer(x, layout, partial(look, i) if explicit else None)
            if i in wanted:
                kept[i] = x
        last = repad(x, layout)
        return EncoderOutput(last, {i: last if h is x else repad(h, layout) for i, h in kept.items()}, weights)

    def kernels_per_shape(self, input_ids: Tensor) -> bool:
        """Whether this forward's matrix products run on CPU in bf16 (autocast or bf16 weights), or in int8 on
        AMX (`precision.compiles_per_shape`), where oneDNN compiles a kernel per shape: then spare rows make
        the shapes repeat (`padding.rows_for`). In fp32 they only cost (all-MiniLM-L6-v2 forward and backward
        on random batch lengths: no faster), as in int8 batches of fewer than AMX_INT8_MIN_ROWS tokens, which
        `torch._int_mm` runs (at most 1/16 more rows). int8 on AMX under bench_serve's load (a new token
        count almost every batch), one server alone for eight 10-s slices: without them 882 falling to 773
        sentences/s while each model process grew from 685 to 1,055 MB; with them 930-1,011 sentences/s at
        a flat 530-552 MB."""
        if input_ids.device.type != "cpu":
            return False
        return (matmul_dtype(input_ids, self.embeddings.word.weight) == torch.bfloat16
                or compiles_per_shape(self.layers[0].attention.qkv))  # every layer is swapped alike

    def check_length(self, T: int) -> None:
        if T > self.config.max_length:
            raise ValueError(f"input has {T} tokens but the model's positions cover "
                             f"{self.config.max_length}; split it with the tokenizer's "
                             "overflow='window' or truncate it explicitly")

    def embed(self, ids: Tensor, layout: TokenLayout, token_type_ids: Tensor | None,
              word_vectors: Tensor | None = None) -> Tensor:
        """The layout's (N,) token ids -> (N, H) input vectors: embeddings (of `word_vectors` (N, E)
        in place of the ids', if given) at their positions, projected to the hidden size if narrower."""
        B, T = layout.batch, layout.seqlen
        positions = (torch.arange(T, device=ids.device) + self.config.position_offset).expand(B, T)
        segments = None if token_type_ids is None else unpad(token_type_ids, layout)
        x = self.embeddings(ids, unpad(positions, layout), segments, word_vectors, layout.num_tokens)  # (N + spare, E)
        return x if self.embeddings_project is None else self.embeddings_project(x)

    def pretraining_heads(self) -> dict[str, nn.Module]:
        """The pretraining heads this encoder carries, by name (of `PRETRAINING_HEADS`)."""
        heads = {name: getattr(self, f"{name}_head") for name in PRETRAINING_HEADS}
        return {name: head for name, head in heads.items() if head is not None}

    def two_stream(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None,
                   ranks: Tensor, query_vector: Tensor) -> tuple[Tensor, Tensor]:
        """XLNet's two-stream attention on this encoder's weights, for permutation language modelling.

        Both streams run every layer with the same weights; only what they see differs
        (`permutation_masks`): the content stream h encodes each token from itself and the tokens
        before it in the factorization order, the query stream g starts from `query_vector` (E,)
        plus the position (and segment) embeddings, never a token's own id, and attends to the
        content of the tokens strictly before it. g_i is what predicts token i.

        Args:
            input_ids, attention_mask, token_type_ids: (B, T), as for `forward`.
            ranks: (B, T) each position's place in its row's factorization order.

        Returns:
            The last layer's content and query streams, (B, T, H) each.
        """
        B, T = input_ids.shape
        self.check_length(T)
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        masks = permutation_masks(ranks, real)  # (B, 1, T, T) each
        layout = make_layout(None, B, T, unpad=False, group=False)  # every position kept: (B * T, H) streams
        h = self.embed(input_ids.reshape(-1), layout, token_type_ids)  # (B * T, H)
        g = self.embed(input_ids.reshape(-1), layout, token_type_ids, query_vector.expand(B * T, -1))
        for layer in self.layers:
            h, g = layer(h, layout, query=g, masks=masks)
        return h.view(B, T, -1), g.view(B, T, -1)

    def set_causal(self, causal: bool) -> "Encoder":
        """This encoder with causal attention switched on or off (the weights stay; what each token
        sees changes): a bidirectional encoder continued as a left-to-right LM, or back. Returns self."""
        self.config = self.config.replace(causal=causal)
        for layer in self.layers:
            layer.attention.causal = causal
        return self

    def layer_index(self, i: int) -> int:
        """Hidden-state index i (0 = embeddings, negative from the end) as 0..num_layers."""
        n = len(self.layers)
        if not -n - 1 <= i <= n:
            raise ValueError(f"layer {i} does not exist: this model has hidden states 0..{n} "
                             f"(or {-n - 1}..-1 counting from the end)")
        return i % (n + 1)

    def num_parameters(self, include_heads: bool = False) -> int:
        """Distinct parameters; the MLM decoder tied to the word embeddings counts once."""
        body = {id(p): p for name, p in self.named_parameters(remove_duplicate=False)
                if not name.startswith(tuple(f"{h}_head." for h in PRETRAINING_HEADS))}
        if include_heads:
            body.update({id(p): p for p in self.parameters()})
        return sum(p.numel() for p in body.values())


PRETRAINING_HEADS = ("mlm", "nsp", "rtd")  # an encoder's optional pretraining heads, Encoder.<name>_head


def fingerprint(module: nn.Module, *parts: str) -> str:
    """sha256 hex digest of `parts` (what else a result depends on: the config, the tokenizer, the
    precision ...) and every tensor of the module's state, so that results computed with other
    weights are never mistaken for these."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def forward_flops(config: EncoderConfig, lengths: Sequence[int]) -> float:
    """Matrix-product FLOPs of one forward pass over sequences of these lengths (no padding).

    Per token and layer: 2 * (4 H^2 + 2 H I) for the projections and feed-forward, plus
    4 * T * H for the attention scores and the weighted sum over a T-token sequence.
    """
    H, I = config.hidden_size, config.intermediate_size
    tokens = float(sum(lengths))
    squares = float(sum(n * n for n in lengths))
    return config.num_layers * (2 * (4 * H * H + 2 * H * I) * tokens + 4 * H * squares)
