import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bertkit.padding import make_layout, repad, rows_for, unpad


def right_padded_mask(lengths: list[int]) -> torch.Tensor:
    T = max(lengths)
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=6))
def test_unpad_then_repad_restores_real_tokens_and_zeros_padding(lengths):
    assert_round_trip(lengths, group=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=12), st.booleans())
def test_spare_rows_follow_the_real_tokens_as_zeros_and_repad_drops_them(lengths, group):
    layout = assert_round_trip(lengths, group, spare_rows=True)
    assert layout.num_tokens + layout.spare == rows_for(sum(lengths))


def assert_round_trip(lengths: list[int], group: bool, spare_rows: bool = False):
    """unpad keeps exactly the real tokens (then the spare rows, zeros); repad puts them back in
    their rows, zeros elsewhere. Returns the layout."""
    mask = right_padded_mask(lengths)
    B, T = mask.shape
    x = torch.randn(B, T, 3)
    layout = make_layout(mask, B, T, group=group, spare_rows=spare_rows)
    flat = unpad(x, layout)
    assert flat.shape == (sum(lengths) + layout.spare, 3)
    assert torch.all(flat[sum(lengths):] == 0)
    back = repad(flat, layout)
    assert torch.equal(back[mask.bool()], x[mask.bool()])
    assert torch.all(back[~mask.bool()] == 0)
    return layout


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8))
def test_grouped_layout_restores_rows_in_their_order_and_groups_cover_every_token(lengths):
    layout = assert_round_trip(lengths, group=True)
    if layout.groups:  # consecutive, covering all N tokens, each padded to its own longest row
        assert [g.start for g in layout.groups[1:]] == [g.end for g in layout.groups[:-1]]
        assert layout.groups[0].start == 0 and layout.groups[-1].end == sum(lengths)
        kept = sorted(lengths, reverse=True)
        rows = [kept[i:i + g.layout.batch] for i, g in
                zip(np.cumsum([0] + [g.layout.batch for g in layout.groups]), layout.groups)]
        assert [g.layout.seqlen for g in layout.groups] == [r[0] for r in rows]
    else:
        assert layout.order is None


def test_mixed_lengths_attend_in_groups_and_similar_ones_at_once():
    assert len(make_layout(right_padded_mask([40, 3, 38, 12]), 4, 40, group=True).groups) == 3
    assert make_layout(right_padded_mask([40, 30, 38]), 3, 40, group=True).groups == ()
    assert make_layout(right_padded_mask([40, 3]), 2, 40).groups == ()  # only when asked


def test_rows_for_adds_at_most_a_sixteenth_and_takes_16_sizes_an_octave():
    for n in range(1, 5000):
        assert n <= rows_for(n) <= n + n // 16 and rows_for(rows_for(n)) == rows_for(n)
    assert [rows_for(n) for n in (1, 31, 32, 33, 64, 65, 640, 641)] == [1, 31, 32, 34, 64, 68, 640, 672]
    assert len({rows_for(n) for n in range(513, 1025)}) == 16  # 544, 576, ..., 1024


def test_spare_rows_only_when_tokens_are_unpadded():
    mask = right_padded_mask([30, 3])
    assert make_layout(mask, 2, 30, unpad=False, spare_rows=True).spare == 0
    assert make_layout(mask, 2, 30, spare_rows=True).spare == rows_for(33) - 33 == 1


def test_plain_layout_keeps_every_position():
    mask = right_padded_mask([3, 1])
    layout = make_layout(mask, 2, 3, unpad=False)
    assert layout.num_tokens == 6 and layout.key_mask is not None


def test_full_batch_needs_no_mask():
    layout = make_layout(torch.ones(2, 4, dtype=torch.long), 2, 4)
    assert layout.indices is None and layout.key_mask is None


def test_left_padding_and_empty_rows_are_refused():
    with pytest.raises(ValueError, match="right padding"):
        make_layout(torch.tensor([[1, 0, 1]]), 1, 3)
    with pytest.raises(ValueError, match="start with padding"):
        make_layout(torch.tensor([[1, 1], [0, 0]]), 2, 2)
