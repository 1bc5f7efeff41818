import pytest
import torch
from torchcrf import CRF as ReferenceCRF

from bertkit.crf import CRF, bio_constraints

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def random_batch(seed: int, batch: int = 6, steps: int = 9, num_labels: int = 5):
    """Emissions, tags and a left-aligned mask with lengths from 1 to `steps`."""
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, steps, num_labels, generator=g) * 3
    tags = torch.randint(num_labels, (batch, steps), generator=g)
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    lengths[0] = steps
    mask = torch.arange(steps) < lengths.unsqueeze(1)
    return emissions, tags, mask


def twin_crfs(num_labels: int, seed: int) -> tuple[CRF, ReferenceCRF]:
    torch.manual_seed(seed)
    reference = ReferenceCRF(num_labels, batch_first=True)
    ours = CRF(num_labels)
    with torch.no_grad():
        ours.start.copy_(reference.start_transitions)
        ours.end.copy_(reference.end_transitions)
        ours.transitions.copy_(reference.transitions)
    return ours, reference


@pytest.mark.parametrize("seed", range(4))
def test_log_likelihood_equals_pytorch_crf(seed):
    emissions, tags, mask = random_batch(seed)
    ours, reference = twin_crfs(emissions.shape[-1], seed)
    expected = reference(emissions, tags, mask, reduction="none")
    torch.testing.assert_close(ours.log_likelihood(emissions, tags, mask), expected,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_best_paths_equal_pytorch_crf(seed):
    emissions, _, mask = random_batch(seed)
    ours, reference = twin_crfs(emissions.shape[-1], seed)
    paths = ours.decode(emissions, mask)
    assert paths == reference.decode(emissions, mask)
    assert [len(path) for path in paths] == mask.sum(1).tolist()


def test_bf16_emissions_are_scored_in_fp32():
    emissions, tags, mask = random_batch(0)
    ours, _ = twin_crfs(emissions.shape[-1], 0)
    low = emissions.bfloat16()
    result = ours.log_likelihood(low, tags, mask)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, ours.log_likelihood(low.float(), tags, mask))


def test_tags_under_padding_are_ignored():
    emissions, tags, mask = random_batch(1)
    crf, _ = twin_crfs(emissions.shape[-1], 1)
    padded = tags.masked_fill(~mask, -100)
    torch.testing.assert_close(crf.log_likelihood(emissions, padded, mask),
                               crf.log_likelihood(emissions, tags, mask))


def test_gradient_of_negative_log_likelihood_is_finite():
    emissions, tags, mask = random_batch(2, num_labels=len(LABELS))
    crf = CRF.for_labels(LABELS)
    emissions.requires_grad_(True)
    # Random gold tags hold forbidden steps (I-PER after O): the loss must stay finite anyway.
    loss = -crf.log_likelihood(emissions, tags, mask).mean()
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (emissions.grad, crf.start.grad, crf.end.grad, crf.transitions.grad):
        assert torch.isfinite(grad).all()


def test_bio_constraints():
    allowed, allowed_start = bio_constraints(LABELS)
    index = {label: i for i, label in enumerate(LABELS)}
    assert allowed_start.tolist() == [not label.startswith("I-") for label in LABELS]
    assert allowed[index["B-PER"], index["I-PER"]] and allowed[index["I-PER"], index["I-PER"]]
    assert not allowed[index["O"], index["I-PER"]]
    assert not allowed[index["B-LOC"], index["I-PER"]]
    assert not allowed[index["I-LOC"], index["I-PER"]]
    assert allowed[index["I-LOC"], index["B-PER"]] and allowed[index["B-PER"], index["O"]]
    assert allowed.sum() == len(LABELS) ** 2 - 3 * 5  # each I-X has 5 forbidden predecessors


def test_non_bio_labels_get_no_constraints():
    allowed, allowed_start = bio_constraints(["NOUN", "VERB", "ADP", "DET"])
    assert allowed.all() and allowed_start.all()


@pytest.mark.parametrize("labels", [["O", "I-PER"], ["O", "B-PER", "E-PER", "I-PER"]])
def test_bio_constraints_reject_other_schemes(labels):
    with pytest.raises(ValueError, match="IOB"):
        bio_constraints(labels)


@pytest.mark.parametrize("seed", range(3))
def test_constrained_decoding_outputs_valid_bio(seed):
    emissions, _, mask = random_batch(seed, batch=16, steps=12, num_labels=len(LABELS))
    crf = CRF.for_labels(LABELS)
    allowed, allowed_start = bio_constraints(LABELS)
    with torch.no_grad():  # learned scores that favour the forbidden steps must not win
        crf.transitions.add_(5.0 * ~allowed)
        crf.start.add_(5.0 * ~allowed_start)
    for path in crf.decode(emissions * 3, mask):
        tags = ["O"] + [LABELS[i] for i in path]
        for prev, tag in zip(tags, tags[1:]):
            if tag.startswith("I-"):
                assert prev[2:] == tag[2:], f"{tag} after {prev} in {tags[1:]}"


def test_all_padding_row_is_an_error():
    emissions, tags, mask = random_batch(0)
    mask[3] = False
    crf = CRF(emissions.shape[-1])
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        crf.log_likelihood(emissions, tags, mask)
    with pytest.raises(ValueError, match=r"rows \[3\]"):
        crf.decode(emissions, mask)


def test_mask_with_a_gap_is_an_error():
    emissions, tags, mask = random_batch(0)
    mask[0, 4] = False
    with pytest.raises(ValueError, match="left-aligned"):
        CRF(emissions.shape[-1]).decode(emissions, mask)


def test_rows_cut_from_longer_sequences_have_no_edge_scores_there():
    emissions, tags, mask = random_batch(5)
    ours, reference = twin_crfs(5, seed=5)
    cut_start = torch.tensor([True, False, True, False, True, False])
    cut_end = torch.tensor([True, True, False, False, True, False])
    with torch.no_grad():  # the reference with its start (end) scores zeroed on the matching rows
        start, end = reference.start_transitions.clone(), reference.end_transitions.clone()
    for starts_cut, ends_cut in ((True, True), (True, False), (False, True), (False, False)):
        rows = (cut_start == starts_cut) & (cut_end == ends_cut)
        with torch.no_grad():
            reference.start_transitions.copy_(start * (not starts_cut))
            reference.end_transitions.copy_(end * (not ends_cut))
        expected = reference(emissions[rows], tags[rows], mask[rows], reduction="none")
        ours_ll = ours.log_likelihood(emissions, tags, mask, cut_start, cut_end)[rows]
        torch.testing.assert_close(ours_ll, expected, atol=1e-5, rtol=0)
        paths = ours.decode(emissions, mask, cut_start, cut_end)
        assert [p for p, r in zip(paths, rows) if r] == reference.decode(emissions[rows], mask[rows])


def test_a_row_cut_at_its_start_may_start_inside_an_entity():
    torch.manual_seed(0)
    crf = CRF.for_labels(LABELS)
    emissions = torch.zeros(2, 3, len(LABELS))
    emissions[:, 0, LABELS.index("I-PER")] = 5.0  # the window starts in the middle of a name
    emissions[:, 0, LABELS.index("B-PER")] = 4.0
    mask, tags = torch.ones(2, 3, dtype=torch.bool), torch.full((2, 3), LABELS.index("I-PER"))
    cut_start = torch.tensor([True, False])
    first = [path[0] for path in crf.decode(emissions, mask, cut_start)]
    assert [LABELS[i] for i in first] == ["I-PER", "B-PER"]
    loss = -crf.log_likelihood(emissions, tags, mask, cut_start)
    assert loss[0] < 20 and loss[1] > 1e3  # only a sentence's true start may not be I-X
