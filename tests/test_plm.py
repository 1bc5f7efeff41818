"""Permutation LM: the factorization orders, the two streams' information flow, and the loss."""

import torch
import torch.nn.functional as F

from bertkit import Encoder, add_pretraining_heads, preset
from bertkit.data.masking import permutation_targets
from bertkit.heads import IGNORE_INDEX
from bertkit.train.plm import PermutationLM

VOCAB, CLS, SEP, PAD = 200, 2, 3, 0


def tiny_plm(seed: int = 0) -> PermutationLM:
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=VOCAB, hidden_size=32, num_heads=2, intermediate_size=64, pooler=False,
                    num_layers=2)
    return PermutationLM(add_pretraining_heads(Encoder(config), mlm=True)).eval()


def rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded rows of distinct token ids: [CLS] a b ... [SEP] c ... [SEP] (+ padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randperm(VOCAB - 10, generator=g)[:2 * 14] + 10).view(2, 14)
    ids[:, 0], ids[:, 6], ids[0, 13], ids[1, 10] = CLS, SEP, SEP, SEP
    ids[1, 11:] = PAD
    return ids, ids != PAD


def test_a_sixth_of_the_tokens_are_targets_in_a_random_order_after_the_context():
    """XLNet's partial prediction: round(n / 6) targets with ranks 0.. in a random order; every other
    real token (special tokens too) is context, rank -1; padding last."""
    ids, real = rows()
    maskable = real & (ids != CLS) & (ids != SEP)
    masked = permutation_targets(ids, real, maskable, torch.Generator().manual_seed(0), k=6)
    for r in range(2):
        targets = masked.labels[r] != IGNORE_INDEX
        want = max(1, round(int(maskable[r].sum()) / 6))
        assert int(targets.sum()) == want and (targets <= maskable[r]).all()
        assert sorted(masked.ranks[r][targets].tolist()) == list(range(want))
        assert (masked.ranks[r][real[r] & ~targets] == -1).all() and (masked.ranks[r][~real[r]] == 14).all()
        assert torch.equal(masked.labels[r][targets], ids[r][targets]) and torch.equal(masked.input_ids, ids)
    other = permutation_targets(ids, real, maskable, torch.Generator().manual_seed(1), k=6)
    assert not torch.equal(other.labels, masked.labels)  # fresh targets per draw
    everything = permutation_targets(ids, real, maskable, torch.Generator().manual_seed(0), k=1)
    assert torch.equal(everything.labels != IGNORE_INDEX, maskable)  # K = 1: every maskable token


def test_the_query_stream_never_sees_its_own_token():
    """d g_i / d (embedding of token i) is exactly zero, for every target i; the context and the
    targets before i in the order do reach g_i, the targets after it do not."""
    plm = tiny_plm()
    ids, real = rows()
    maskable = real & (ids != CLS) & (ids != SEP)
    masked = permutation_targets(ids, real, maskable, torch.Generator().manual_seed(3), k=2)
    ranks, targets = masked.ranks, (masked.labels != IGNORE_INDEX).nonzero().tolist()
    assert len(targets) >= 6
    looked_up = []
    plm.encoder.embeddings.word.register_forward_hook(lambda m, i, out: looked_up.append(out) or out.retain_grad())
    _, query = plm.encoder.two_stream(ids, real.long(), None, ranks, plm.query_vector)
    direction = torch.randn(query.shape[-1], generator=torch.Generator().manual_seed(0))
    for r, i in targets:
        looked_up[0].grad = None
        (query[r, i] @ direction).backward(retain_graph=True)  # a sum would be constant after the layer norm
        grad = looked_up[0].grad.view(2, 14, -1)[r].abs().sum(-1)  # (T,) per position of row r
        assert grad[i] == 0
        before = real[r] & (ranks[r] < ranks[r, i])  # the context and the earlier targets
        assert (grad[before] > 0).all() and (grad[~before] == 0).all()
        assert looked_up[0].grad.view(2, 14, -1)[1 - r].abs().sum() == 0  # rows do not mix


def test_with_the_identity_order_it_is_a_left_to_right_language_model():
    """Identity order, every token a target (K = 1): the content stream is the causal encoder; the
    query stream's g_t is a function of x_<t alone (equal to a run on the prefix, token t changed);
    the loss is the autoregressive one, sum_t -log p(x_t | x_<t), from those prefix runs."""
    plm = tiny_plm(seed=1)
    ids, real = rows(seed=2)
    ids, real = ids[:1], real[:1]
    T = ids.shape[1]
    ranks = torch.arange(T)[None]
    labels = torch.where((ids != CLS), ids, IGNORE_INDEX)  # every token after [CLS]
    batch = {"input_ids": ids, "attention_mask": real.long(), "ranks": ranks, "labels": labels}
    content, query = plm.encoder.two_stream(ids, real.long(), None, ranks, plm.query_vector)
    causal = Encoder(plm.encoder.config.replace(causal=True)).eval()
    causal.load_state_dict(plm.encoder.state_dict(), strict=False)
    torch.testing.assert_close(content, causal(ids).last_hidden_state, atol=1e-6, rtol=0)
    expected = torch.zeros(())
    for t in range(1, T):
        prefix = ids[:, :t + 1].clone()
        prefix[0, t] = 5  # the token itself is not visible: any id gives the same g_t
        _, q = plm.encoder.two_stream(prefix, None, None, ranks[:, :t + 1], plm.query_vector)
        torch.testing.assert_close(q[0, t], query[0, t], atol=1e-6, rtol=0)
        logits = plm.encoder.mlm_head(q[0, t])
        expected = expected + F.cross_entropy(logits[None], ids[0, t:t + 1], reduction="sum")
    torch.testing.assert_close(plm(batch)["plm"], expected, atol=1e-4, rtol=1e-6)
