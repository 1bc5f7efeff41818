import random
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval import scheme as seqeval_scheme
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from bertkit.metrics import (
    accuracy,
    entity_scores,
    macro_f1,
    matthews_corrcoef,
    micro_f1,
    multilabel_f1,
    pearson,
    per_label_scores,
    roc_auc,
    span_scores,
    spearman,
)
from bertkit.tags import spans_from_tags

# --- classification -------------------------------------------------------------------------

GOLD = ["a", "a", "a", "b", "b", "c", "c", "c", "c", "a"]
PRED = ["a", "b", "a", "b", "c", "c", "c", "a", "c", "a"]


def test_accuracy_and_per_label_scores():
    assert accuracy(GOLD, PRED) == 0.7
    scores = per_label_scores(GOLD, PRED)
    # a: 3 of 4 predicted a are right, 3 of 4 gold a found; b: 1/2, 1/2; c: 3/4, 3/4
    assert scores["a"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert scores["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores["c"]["f1"] == 0.75 and scores["c"]["support"] == 4


def test_macro_and_micro_f1():
    assert macro_f1(GOLD, PRED) == pytest.approx((0.75 + 0.5 + 0.75) / 3, abs=1e-15)
    assert micro_f1(GOLD, PRED) == pytest.approx(accuracy(GOLD, PRED), abs=1e-15)
    # Leaving out class "a" as a negative class: tp 4, predicted 6, gold 6.
    assert micro_f1(GOLD, PRED, labels=["b", "c"]) == pytest.approx(4 / 6, abs=1e-15)
    # A label never seen counts with F1 0 in the macro average.
    assert macro_f1(GOLD, PRED, labels=["a", "b", "c", "d"]) == pytest.approx(2 / 4, abs=1e-15)


def test_multilabel_f1():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]])
    # per label (tp, predicted, gold): (2, 2, 2), (1, 1, 2), (0, 1, 1)
    assert multilabel_f1(gold, pred, "micro") == pytest.approx(2 * 3 / (4 + 5), abs=1e-15)
    assert multilabel_f1(gold, pred, "macro") == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-15)
    with pytest.raises(ValueError, match="0/1"):
        multilabel_f1(gold, pred * 0.7)


def test_matthews_binary_by_hand():
    gold = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]  # tp 3, fn 1, fp 2, tn 4
    expected = (3 * 4 - 2 * 1) / np.sqrt((3 + 2) * (3 + 1) * (4 + 2) * (4 + 1))
    assert matthews_corrcoef(gold, pred) == pytest.approx(expected, abs=1e-12)
    assert matthews_corrcoef(gold, [0] * 10) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_matthews_multiclass_is_the_correlation_of_one_hot_labels(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.6, gold, rng.integers(0, 4, 60))
    # Gorodkin's R_K: covariance of the (N, K) one-hot matrices, summed over classes.
    x, y = np.eye(4)[gold], np.eye(4)[pred]
    x, y = x - x.mean(0), y - y.mean(0)
    expected = (x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())
    assert matthews_corrcoef(gold, pred) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-3, 3)), min_size=3, max_size=40))
def test_pearson_and_spearman_equal_scipy(pairs):
    x, y = (np.array(column, dtype=float) for column in zip(*pairs))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        with pytest.raises(ValueError, match="constant"):
            pearson(x, y)
        return
    assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-9)
    # Small integer ranges make many ties.
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=40))
def test_roc_auc_equals_scikit_learn(pairs):
    """Small integer scores make many ties, which count half."""
    from sklearn.metrics import roc_auc_score

    y, scores = (np.array(column) for column in zip(*pairs))
    if y.min() == y.max():
        with pytest.raises(ValueError, match="needs both classes"):
            roc_auc(y, scores)
        return
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


# --- entities against seqeval ---------------------------------------------------------------

SCHEMES = {"IOB2": seqeval_scheme.IOB2, "IOB1": seqeval_scheme.IOB1, "IOBES": seqeval_scheme.IOBES}
TYPES = ["PER", "LOC", "MISC-ish"]


def tags_of(prefixes: str):
    return st.sampled_from(["O"] + [f"{p}-{t}" for p in prefixes for t in TYPES])


def gold_and_pred(prefixes: str):
    """Two random (often malformed) taggings of the same sentences."""
    def taggings(sizes: list[int]):
        tagging = st.tuples(*(st.lists(tags_of(prefixes), min_size=n, max_size=n) for n in sizes))
        return st.tuples(tagging.map(list), tagging.map(list))

    return st.lists(st.integers(0, 12), min_size=1, max_size=5).flatmap(taggings)


def seqeval_scores(gold, pred, mode: str, scheme: str = "IOB2") -> dict:
    kwargs = {"mode": "strict", "scheme": SCHEMES[scheme]} if mode == "strict" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(gold, pred, output_dict=True, **kwargs)
        return {
            "precision": precision_score(gold, pred, **kwargs),
            "recall": recall_score(gold, pred, **kwargs),
            "f1": f1_score(gold, pred, **kwargs),
            "per_type": {name: (row["precision"], row["recall"], row["f1-score"], row["support"])
                         for name, row in report.items() if not name.endswith(" avg")},
        }


def assert_same_as_seqeval(gold, pred, mode: str, scheme: str = "IOB2"):
    ours, theirs = entity_scores(gold, pred, mode, scheme), seqeval_scores(gold, pred, mode, scheme)
    for key in ("precision", "recall", "f1"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
    assert ours["per_type"].keys() == theirs["per_type"].keys()
    for name, (p, r, f, support) in theirs["per_type"].items():
        row = ours["per_type"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f), abs=1e-12)
        assert row["support"] == support


@pytest.mark.parametrize("scheme, prefixes", [("IOB2", "BI"), ("IOB1", "BI"), ("IOBES", "BIES")])
def test_strict_mode_equals_seqeval(scheme, prefixes):
    @settings(max_examples=150, deadline=None)
    @given(gold_and_pred(prefixes))
    def check(sentences):
        assert_same_as_seqeval(*sentences, "strict", scheme)

    check()


@settings(max_examples=300, deadline=None)
@given(gold_and_pred("BIES"))
def test_default_mode_equals_seqeval(sentences):
    assert_same_as_seqeval(*sentences, "default")


def test_chunking_of_malformed_tags():
    tags = ["I-PER", "I-PER", "O", "B-LOC", "I-PER", "I-PER", "B-LOC"]
    assert spans_from_tags(tags, mode="strict") == {(3, 4, "LOC"), (6, 7, "LOC")}
    assert spans_from_tags(tags, mode="default") == {
        (0, 2, "PER"), (3, 4, "LOC"), (4, 6, "PER"), (6, 7, "LOC")}


def test_bad_tags_are_errors():
    with pytest.raises(ValueError, match="tag 1 'E-PER' is not a tag of the IOB2 scheme"):
        spans_from_tags(["B-PER", "E-PER"], mode="strict")
    with pytest.raises(ValueError, match="tag 0 'PER'"):
        spans_from_tags(["PER"], mode="default")
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])


def read_conll_tags(path) -> list[list[str]]:
    sentences, current = [], []
    for line in open(path, encoding="utf-8"):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if current:
                sentences.append(current)
            current = []
        else:
            current.append(fields[-1])
    return sentences + [current] if current else sentences


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """An I-X that does not continue an X entity becomes B-X."""
    return [f"B-{tag[2:]}" if tag.startswith("I-") and (i == 0 or tags[i - 1][2:] != tag[2:])
            else tag for i, tag in enumerate(tags)]


def perturb(sentences: list[list[str]], seed: int) -> list[list[str]]:
    """Replace one tag in eight with a random one, making the predictions often malformed."""
    rng = random.Random(seed)
    tags = sorted({tag for sentence in sentences for tag in sentence})
    return [[rng.choice(tags) if rng.random() < 0.125 else tag for tag in sentence]
            for sentence in sentences]


def test_conll2003_dev_equals_seqeval(data_dir):
    raw = read_conll_tags(data_dir / "conll2003" / "eng.testa")
    gold = [iob1_to_iob2(sentence) for sentence in raw]
    assert_same_as_seqeval(gold, perturb(gold, 0), "strict", "IOB2")
    assert_same_as_seqeval(gold, perturb(gold, 1), "default")
    assert_same_as_seqeval(raw, perturb(raw, 2), "default")
    # Scoring the gold against itself finds every entity, in both encodings.
    assert entity_scores(raw, raw, "strict", "IOB1")["f1"] == 1.0
    assert entity_scores(gold, gold)["support"] == entity_scores(raw, raw, "default")["support"]


# --- spans ----------------------------------------------------------------------------------

def test_span_scores_with_nested_spans():
    gold = [{(0, 3, "ORG"), (1, 2, "LOC"), (4, 5, "PER")}, {(0, 2, "PER")}]
    pred = [{(0, 3, "ORG"), (4, 5, "LOC")}, {(0, 2, "PER"), (3, 4, "PER")}]
    nested = [{(1, 2, "LOC")}, set()]
    scores = span_scores(gold, pred, subset=nested)
    assert (scores["precision"], scores["recall"], scores["support"]) == (0.5, 0.5, 4)
    assert scores["per_type"]["PER"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores["per_type"]["LOC"]["f1"] == 0.0
    assert scores["subset"] == {"recall": 0.0, "support": 1}
    with pytest.raises(ValueError, match="not gold spans"):
        span_scores(gold, pred, subset=[set(), {(3, 4, "PER")}])
