"""A linear-chain conditional random field over per-token label scores (emissions).

Scores follow pytorch-crf's conventions, so weights copy across one to one: `start[j]` scores a
path that starts with label j, `end[j]` one that ends with j, `transitions[i, j]` the step from
label i to label j.

Where it departs from pytorch-crf:
- BIO constraints are a fixed buffer (`penalty`, -1e4 on forbidden steps) added to the learned
  scores, in training and in decoding alike, so gradient descent can never learn a forbidden
  transition back. A large finite constant rather than -inf, so a forbidden step in gold data costs
  a large loss rather than an infinite one.
- A row cut out of a longer sequence (one window of a long sentence) gets no start score and no
  start constraint where the cut is at its start (`cut_start`: it may begin with I-X), and no end
  score where the cut is at its end (`cut_end`): the scores of a sentence's true edges are not
  learned or applied at window edges.
- The forward algorithm runs in fp32 whatever the emission dtype, since logsumexp over a long
  sentence loses too much in bf16.
- Masks must be left-aligned (real positions first); anything else is an error, not a silently
  wrong score. Tags under padding are ignored, so a padding value such as -100 is fine.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .padding import check_right_padded
from .tags import check_bio_label_set, continues

FORBIDDEN = -1e4


def bio_constraints(labels: list[str]) -> tuple[Tensor, Tensor]:
    """Which transitions a BIO (IOB2) label set allows.

    I-X may only follow B-X or I-X, and may not start a sequence. A label set with no B-/I- label
    (POS tags, say) gets no constraint at all.

    Args:
        labels: label names in index order, e.g. ["O", "B-PER", "I-PER"].

    Returns:
        allowed: (L, L) bool, allowed[from, to].
        allowed_start: (L,) bool.

    Raises:
        ValueError: an IOBES/BILOU label, or an I-X without its B-X (an IOB1 label set).
    """
    n = len(labels)
    allowed, allowed_start = torch.ones(n, n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    if not any(label.startswith(("B-", "I-")) for label in labels):
        return allowed, allowed_start
    check_bio_label_set(labels)
    for j, label in enumerate(labels):
        if label.startswith("I-"):
            allowed_start[j] = False
            allowed[:, j] = torch.tensor([continues(prev, label) for prev in labels])
    return allowed, allowed_start


class CRF(nn.Module):
    """Linear-chain CRF; batched over sequences, looping over time steps only.

    Args:
        num_labels: L.
        allowed: optional (L, L) bool, allowed[from, to]; forbidden steps score FORBIDDEN.
        allowed_start: optional (L,) bool; forbidden first labels score FORBIDDEN.
    """

    def __init__(self, num_labels: int, allowed: Tensor | None = None, allowed_start: Tensor | None = None):
        super().__init__()
        # Same initialisation as pytorch-crf.
        self.start = nn.Parameter(torch.empty(num_labels).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_labels).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_labels, num_labels).uniform_(-0.1, 0.1))
        full = torch.ones(num_labels, num_labels, dtype=torch.bool)
        allowed = full if allowed is None else allowed
        allowed_start = full[0] if allowed_start is None else allowed_start
        self.register_buffer("penalty", torch.where(allowed, 0.0, FORBIDDEN))
        self.register_buffer("start_penalty", torch.where(allowed_start, 0.0, FORBIDDEN))

    @classmethod
    def for_labels(cls, labels: list[str]) -> CRF:
        """A CRF over `labels`, with BIO constraints when they are BIO tags."""
        return cls(len(labels), *bio_constraints(labels))

    def _scores(self, emissions: Tensor, mask: Tensor, cut_start: Tensor | None,
                cut_end: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Check the mask; then fp32 (start (B, L), transitions (L, L), end (B, L)) with the constraints
        applied, zero start (end) scores on rows whose start (end) is a cut inside a longer sequence."""
        _check_mask(emissions, mask)
        start = (self.start.float() + self.start_penalty).expand(len(emissions), -1)
        end = self.end.float().expand(len(emissions), -1)
        if cut_start is not None:
            start = torch.where(cut_start.unsqueeze(1), 0.0, start)
        if cut_end is not None:
            end = torch.where(cut_end.unsqueeze(1), 0.0, end)
        return start, self.transitions.float() + self.penalty, end

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor, cut_start: Tensor | None = None,
                       cut_end: Tensor | None = None) -> Tensor:
        """log p(tags | emissions) of each sequence.

        Args:
            emissions: (B, T, L) label scores, any float dtype.
            tags: (B, T) long gold labels; values under padding are ignored.
            mask: (B, T) bool, True on real positions, left-aligned.
            cut_start, cut_end: optional (B,) bool, True for rows that start (end) inside a longer sequence.

        Returns:
            (B,) fp32 log-likelihoods; the tag task's loss is `-crf.log_likelihood(...).sum()`.
        """
        start, transitions, end = self._scores(emissions, mask, cut_start, cut_end)
        emissions, tags = emissions.float(), tags.masked_fill(~mask, 0)
        gold = _path_score(emissions, tags, mask, start, transitions, end)
        return gold - _log_partition(emissions, mask, start, transitions, end)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor, cut_start: Tensor | None = None,
               cut_end: Tensor | None = None) -> list[list[int]]:
        """Viterbi best label path of each sequence.

        Args:
            emissions: (B, T, L) label scores.
            mask: (B, T) bool, left-aligned.
            cut_start, cut_end: optional (B,) bool, as for `log_likelihood`.

        Returns:
            B lists of label ids, each as long as its row of `mask` has real positions.
        """
        start, transitions, end = self._scores(emissions, mask, cut_start, cut_end)
        emissions = emissions.float()
        score = start + emissions[:, 0]  # (B, L)
        keep = torch.arange(emissions.shape[-1], device=emissions.device)
        pointers = []
        for t in range(1, emissions.shape[1]):
            best, prev = (score.unsqueeze(2) + transitions).max(dim=1)  # (B, L) over `from`
            on = mask[:, t].unsqueeze(1)
            score = torch.where(on, best + emissions[:, t], score)
            # Past a row's end the pointer is the identity, so backtracking carries the last label.
            pointers.append(torch.where(on, prev, keep))
        return _backtrack((score + end).argmax(dim=1), pointers, mask.sum(dim=1))


def _check_mask(emissions: Tensor, mask: Tensor) -> None:
    if emissions.dim() != 3 or mask.shape != emissions.shape[:2]:
        raise ValueError(f"expected emissions (B, T, L) and mask (B, T), got emissions "
                         f"{tuple(emissions.shape)} and mask {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    check_right_padded(mask, "mask")


def _path_score(emissions: Tensor, tags: Tensor, mask: Tensor, start: Tensor,
                transitions: Tensor, end: Tensor) -> Tensor:
    """(B,) unnormalised score of the tagged paths."""
    emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2).masked_fill(~mask, 0)  # (B, T)
    stepped = transitions[tags[:, :-1], tags[:, 1:]].masked_fill(~mask[:, 1:], 0)  # (B, T-1)
    last = tags.gather(1, mask.sum(dim=1, keepdim=True) - 1)  # (B, 1)
    edges = (start.gather(1, tags[:, :1]) + end.gather(1, last)).squeeze(1)  # (B,)
    return edges + emitted.sum(dim=1) + stepped.sum(dim=1)


def _log_partition(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """(B,) log of the summed exp-score of every path (the forward algorithm)."""
    alpha = start + emissions[:, 0]  # (B, L)
    for t in range(1, emissions.shape[1]):
        # (B, L from, 1) + (L from, L to) + (B, 1, L to), summed out over `from`
        step = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), 1)
        alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def _backtrack(last: Tensor, pointers: list[Tensor], lengths: Tensor) -> list[list[int]]:
    """Follow (B, L) back-pointers from the (B,) best last labels; cut each row to its length."""
    path = [last]
    for prev in reversed(pointers):
        path.append(prev.gather(1, path[-1].unsqueeze(1)).squeeze(1))
    rows = torch.stack(path[::-1], dim=1).tolist()  # (B, T)
    return [row[:n] for row, n in zip(rows, lengths.tolist())]
