import numpy as np
import pytest

from bertkit.data.corpus import build_corpus
from bertkit.data.instances import language_probabilities, pack_full_sentences, sentence_pairs


@pytest.fixture(scope="module")
def corpus(data_dir, minilm, tmp_path_factory):
    files = [data_dir / "gutenberg_nltk" / name for name in ("carroll-alice.txt", "austen-persuasion.txt",
                                                              "blake-poems.txt")]
    return build_corpus(files, minilm[1], tmp_path_factory.mktemp("cache"), progress=False)


def test_sentence_pairs_follow_bert(corpus, minilm):
    _, tokenizer = minilm
    cls, sep = tokenizer.role_id("cls"), tokenizer.role_id("sep")
    pairs = sentence_pairs(corpus, cls, sep, max_length=128, seed=0)
    lengths = np.diff(pairs.starts)
    assert len(pairs) > 500 and lengths.max() <= 128
    assert 0.45 < pairs.is_random_next.mean() < 0.56  # half random, plus single-sentence chunks
    assert (lengths < 100).mean() > 0.05  # shorter targets with probability 0.1
    for r in range(0, len(pairs), 50):
        row = pairs.ids[pairs.starts[r]:pairs.starts[r + 1]]
        a = pairs.a_lengths[r]
        assert row[0] == cls and row[a - 1] == sep and row[-1] == sep
        assert (row[1:a - 1] != sep).all() and (row[a:-1] != sep).all()


def test_continuations_really_continue(corpus):
    """A true continuation's B follows A in the document; truncation may have trimmed a few tokens
    at the junction (from the end of A or the start of B)."""
    pairs = sentence_pairs(corpus, 101, 102, max_length=128, short_seq_prob=0.0, seed=1)
    stream = np.concatenate([corpus.sentence(s) for s in range(corpus.num_sentences)])
    windows = np.lib.stride_tricks.sliding_window_view(stream, 6)

    def position(piece):
        found = np.flatnonzero((windows == piece).all(1))
        return found[0] if len(found) == 1 else None  # only unambiguous matches

    gaps = []
    for r in np.flatnonzero(~pairs.is_random_next)[:60]:
        row = pairs.ids[pairs.starts[r]:pairs.starts[r + 1]]
        a, b = row[1:pairs.a_lengths[r] - 1], row[pairs.a_lengths[r]:-1]
        if len(a) >= 6 and len(b) >= 6 and (pa := position(a[-6:])) is not None and (pb := position(b[:6])) is not None:
            gaps.append(pb - (pa + 6))
    assert len(gaps) > 30 and all(g >= 0 for g in gaps), f"gaps {sorted(int(g) for g in gaps)}"
    assert np.median(gaps) < 10  # most junctions lose a few tokens at most


def test_full_sentence_packing_has_no_padding_and_keeps_every_token(corpus, minilm):
    _, tokenizer = minilm
    cls, sep = tokenizer.role_id("cls"), tokenizer.role_id("sep")
    blocks = pack_full_sentences(corpus, cls, sep, max_length=128)[:]  # every row, read from the memory map
    assert blocks.shape[1] == 128 and (blocks != tokenizer.pad_id).all()
    assert (blocks[:, 0] == cls).all() and (blocks[:, -1] == sep).all()
    inner = blocks[:, 1:-1].ravel()
    assert (inner == sep).sum() == 2  # document boundaries inside the packed stream (the 3rd is in the tail)
    expected = np.concatenate([corpus.sentence(s) for s in range(corpus.num_sentences)])
    assert np.array_equal(inner[inner != sep], expected[:len(inner) - 2])


def test_several_corpora_share_one_index_space(corpus, minilm):
    _, tokenizer = minilm
    one = pack_full_sentences(corpus, 101, 102, max_length=64)
    two = pack_full_sentences([corpus, corpus], 101, 102, max_length=64)
    assert len(two) == 2 * len(one) and list(two.offsets) == [0, len(one), 2 * len(one)]
    assert np.array_equal(two[[0, len(one) + 5]], one[[0, 5]])
    assert np.array_equal(two[3], one[3])


def test_language_probabilities_follow_the_alpha_formula():
    sizes = {"en": 900, "fr": 90, "xx": 10}
    q = language_probabilities(sizes, alpha=0.3)
    p = {k: v / 1000 for k, v in sizes.items()}
    norm = sum(v ** 0.3 for v in p.values())
    assert q == pytest.approx({k: v ** 0.3 / norm for k, v in p.items()})
    assert q["xx"] > p["xx"] and q["en"] < p["en"]  # low-resource languages are up-sampled
    assert language_probabilities(sizes, alpha=1.0) == pytest.approx(p)
    with pytest.raises(ValueError, match="positive size"):
        language_probabilities({"en": 0})
