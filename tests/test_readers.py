"""Task readers on the real data sets (counts from each PROVENANCE.md) and on small broken files."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from bertkit.data.examples import LabelSet, Span, TaskDataError, TextExample, WordExample, unseen_labels, word_spans
from bertkit.data.readers import (looks_like_columns, read_conll, read_file, read_jsonl, read_rte_xml, read_span_jsonl,
                                  read_table)
from bertkit.tags import spans_to_bio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from splits import pang_lee_fold  # noqa: E402 (the benchmarks' fold of movie_reviews)


def lines_in(path) -> int:
    return sum(1 for _ in open(path, "rb"))


def entity_counts(examples) -> dict[str, int]:
    return dict(Counter(s.label for ex in examples for s in ex.spans))


# ---------------------------------------------------------------------------------- CoNLL


def test_conll2003_train_and_dev_counts(data_dir):
    train = read_conll(data_dir / "conll2003" / "eng.train")
    dev = read_conll(data_dir / "conll2003" / "eng.testa")
    assert (len(train), sum(len(ex.words) for ex in train)) == (14041, 203621)
    assert (len(dev), sum(len(ex.words) for ex in dev)) == (3250, 51362)
    assert entity_counts(train) == {"PER": 6600, "LOC": 7140, "ORG": 6321, "MISC": 3438}
    assert entity_counts(dev) == {"PER": 1842, "LOC": 1837, "ORG": 1341, "MISC": 922}
    first = train[0]
    assert first.words[:3] == ("EU", "rejects", "German") and first.tags[:3] == ("B-ORG", "O", "B-MISC")
    assert [first.text[s.start:s.end] for s in first.spans] == ["EU", "German", "British"]
    assert LabelSet.from_examples(train).labels == ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC",
                                                    "I-ORG", "I-PER", "O")


def test_conll2000_chunks_and_ptb_pos(data_dir):
    chunks = read_conll(data_dir / "nltk_conll2000" / "test.txt")
    assert len(read_conll(data_dir / "nltk_conll2000" / "train.txt")) == 8936
    assert len(chunks) == 2012 and entity_counts(chunks)["NP"] == 12422
    pos = read_conll(data_dir / "ptb_sample_pos" / "wsj_sample.pos.conll")  # scheme auto -> none
    tags = Counter(t for ex in pos for t in ex.tags)
    assert len(pos) == 3897 and all(ex.spans == () for ex in pos)
    # PROVENANCE counts 45 tags; the file also holds one ambiguous "VBG|NN".
    assert len(tags) == 46 and tags["VBG|NN"] == 1 and tags["IN"] > 0


def test_conll2002_docstart_lines_are_dropped(data_dir):
    dutch = read_conll(data_dir / "nltk_conll2002" / "ned.train")
    assert len(dutch) == 15806
    assert sum(len(ex.words) for ex in dutch) == 202931 - 287  # PROVENANCE's count includes -DOCSTART-
    assert not any("-DOCSTART-" in ex.words for ex in dutch)


def test_read_conll_converts_an_iob1_file(tmp_path):
    path = tmp_path / "iob1.conll"
    path.write_text("-DOCSTART- -X- O\n\nJohn NNP I-PER\nSmith NNP I-PER\nmet VBD O\n"
                    "Paris NNP I-LOC\nLondon NNP B-LOC\n\n")
    (ex,) = read_conll(path)
    assert ex.tags == ("B-PER", "I-PER", "O", "B-LOC", "B-LOC")
    assert ex.text == "John Smith met Paris London"
    assert [(ex.text[s.start:s.end], s.label) for s in ex.spans] == \
        [("John Smith", "PER"), ("Paris", "LOC"), ("London", "LOC")]
    assert ex.source == f"{path}:3"
    with pytest.raises(TaskDataError, match=f"{path}:3: I-PER does not continue .* pass scheme='iob1'"):
        read_conll(path, scheme="bio")


def test_conll_line_with_missing_column_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU NNP B-ORG\nrejects VBZ O\n\nGerman B-MISC\n")
    with pytest.raises(TaskDataError, match=f"{path}:4: 2 columns; expected 3"):
        read_conll(path)


# ---------------------------------------------------------------------------------- spans


def nested_inside_another(spans) -> int:
    """How many spans lie inside a span with other boundaries (PROVENANCE's "nested")."""
    return sum(any((s2, e2) != (s, e) and s2 <= s and e <= e2 for s2, e2, _ in spans) for s, e, _ in spans)


def test_genia_nested_spans(data_dir):
    genia = read_span_jsonl(data_dir / "genia_nested" / "dev.jsonlines")
    assert len(genia) == 1765
    assert entity_counts(genia) == {"protein": 2466, "DNA": 1161, "cell_type": 576, "cell_line": 372, "RNA": 139}
    assert sum(nested_inside_another(word_spans(ex)) for ex in genia) == 444
    first = genia[0]
    assert [first.text[s.start:s.end] for s in first.spans] == ["c-fos", "c-jun", "jun B"]
    tags, dropped = spans_to_bio(first.words, word_spans(first))
    assert dropped == 0 and tags[6:8] == ["B-DNA", "I-DNA"]
    assert sum(spans_to_bio(ex.words, word_spans(ex))[1] for ex in genia) >= 444


def test_spans_to_bio_keeps_the_outer_entity():
    words = ["IL-2", "gene", "expression"]
    tags, dropped = spans_to_bio(words, [(0, 1, "protein"), (0, 2, "DNA")])
    assert (tags, dropped) == (["B-DNA", "I-DNA", "O"], 1)


def test_character_offset_spans_and_their_errors(tmp_path):
    path = tmp_path / "spans.jsonl"
    path.write_text('{"text": "Acme Corp hired  Ann Lee.", "spans": [{"start": 0, "end": 9, "label": "ORG"},'
                    ' {"start": 17, "end": 24, "label": "PER"}]}\n\n'
                    '{"text": "short", "spans": [{"start": 2, "end": 9, "label": "X"}]}\n')
    with pytest.raises(TaskDataError, match=f"{path}:3: span \\[2, 9\\) 'X' is empty or outside the 5 characters"):
        read_span_jsonl(path)
    with pytest.warns(UserWarning, match="skipped 1 bad lines \\(kept 1\\)"), \
            pytest.warns(UserWarning, match="1 spans do not start and end on word boundaries .* at 'Lee.'"):
        (ex,) = read_span_jsonl(path, skip_bad=True)
    assert ex.words == ("Acme", "Corp", "hired", "Ann", "Lee.") and ex.word_offsets[3] == (17, 20)
    assert word_spans(ex) == [(0, 2, "ORG"), (3, 5, "PER")]  # "Lee" widened to the word "Lee."
    with pytest.raises(TaskDataError, match=f"{path}:1: span \\[17, 24\\) 'PER' does not start and end on word "
                                            "boundaries \\(at 'Lee.'\\)"):
        read_span_jsonl(path, strict_spans=True)


def test_word_offset_span_with_end_before_start_is_an_error(tmp_path):
    path = tmp_path / "genia.jsonl"
    path.write_text('{"tokens": ["a", "b"], "entity_mentions": [{"start": 1, "end": 1, "entity_type": "DNA"}]}\n')
    with pytest.raises(TaskDataError, match=f"{path}:1: span \\[1, 1\\) 'DNA' is empty or outside the 2 words"):
        read_span_jsonl(path)


def test_word_example_fills_text_and_offsets():
    ex = WordExample(("New", "York"), ("B-LOC", "I-LOC"), (Span(0, 8, "LOC"),))
    assert ex.text == "New York" and ex.word_offsets == ((0, 3), (4, 8))
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        WordExample(("New", "York"), ("O",))


# ---------------------------------------------------------------------------------- tables


def test_sst2(data_dir):
    train = read_table(data_dir / "sst2" / "train.tsv", "sentence", "label")
    dev = read_table(data_dir / "sst2" / "dev.tsv", "sentence", "label")
    test = read_table(data_dir / "sst2" / "test.tsv", "sentence")
    assert len(train) == lines_in(data_dir / "sst2" / "train.tsv") - 1 == 67349
    assert Counter(ex.label for ex in train) == {"0": 29780, "1": 37569}
    assert Counter(ex.label for ex in dev) == {"0": 428, "1": 444}
    assert len(test) == 1821 and all(ex.label is None for ex in test)
    assert train[0] == TextExample("hide new secretions from the parental units", None, "0",
                                   f"{data_dir / 'sst2' / 'train.tsv'}:2")


def test_sick_nli_and_relatedness(data_dir):
    path = data_dir / "sick2014" / "SICK_train.txt"
    nli = read_table(path, "sentence_A", "entailment_judgment", pair_column="sentence_B")
    assert len(nli) == 4500 and Counter(ex.label for ex in nli) == \
        {"NEUTRAL": 2536, "ENTAILMENT": 1299, "CONTRADICTION": 665}
    trial = read_table(data_dir / "sick2014" / "SICK_trial.txt", "sentence_A", "relatedness_score",
                       pair_column="sentence_B", label_kind="score")
    assert len(trial) == 500 and all(1.0 <= ex.label <= 5.0 for ex in trial)


def test_msrp_with_byte_order_mark_crlf_and_quotes(data_dir):
    path = data_dir / "msrp" / "msr-para-train.tsv"
    train = read_table(path, "#1 String", "Quality", pair_column="#2 String")
    assert len(train) == lines_in(path) - 1 == 3576
    assert Counter(ex.label for ex in train) == {"1": 2407, "0": 1169}
    assert train[0].text.startswith('Amrozi accused his brother, whom he called "the witness", of')
    assert not train[0].pair.endswith("\r")
    val = read_file(data_dir / "msrp" / "msr-para-val.tsv", words=False, text_column=3, pair_column=4, label_column=0)
    assert Counter(ex.label for ex in val) == {"1": 346, "0": 154}


def test_stsb_tab_separated_csv_without_header(data_dir):
    path = data_dir / "stsb" / "sts-train.csv"
    train = read_file(path, words=False, label_kind="score", text_column=5, pair_column=6, label_column=4, header=False)
    dev = read_table(data_dir / "stsb" / "sts-dev.csv", 5, 4, pair_column=6, header=False, label_kind="score")
    assert len(train) == lines_in(path) == 5749 and len(dev) == 1500
    assert all(0.0 <= ex.label <= 5.0 for ex in train + dev)
    assert (train[0].text, train[0].pair, train[0].label) == \
        ("A plane is taking off.", "An air plane is taking off.", 5.0)
    # csv quoting would read a quote inside a sentence as the start of a quoted field.
    with pytest.raises(TaskDataError, match=f"{path}:\\d+: .*pass quoting='none'"):
        read_table(path, 5, 4, pair_column=6, header=False, label_kind="score", quoting="csv")


def test_table_errors_name_file_and_line(tmp_path):
    path = tmp_path / "scores.tsv"
    path.write_text("text\tscore\ngood\t4.5\n\nshort row\nbad\tfive\n")
    with pytest.raises(TaskDataError, match=f"{path}:4: 1 columns; expected at least 2"):
        read_table(path, "text", "score", label_kind="score")
    with pytest.warns(UserWarning, match=f"{path}: skipped 2 bad lines \\(kept 1\\); first: {path}:4"):
        kept = read_table(path, "text", "score", label_kind="score", skip_bad=True)
    assert kept == [TextExample("good", None, 4.5, f"{path}:2")]
    path.write_text("good\t4.5\nbad\tnan\n")
    with pytest.raises(TaskDataError, match=f"{path}:2: label 'nan' is not a finite number"):
        read_table(path, 0, 1, header=False, label_kind="score")


def test_comma_csv_with_quotes_and_multi_labels(tmp_path):
    path = tmp_path / "topics.csv"
    path.write_text('text,labels\n"Oil, gas and ""coal""","energy; trade"\nquiet day,\n')
    rows = read_table(path, "text", "labels", label_kind="multi", multi_separator=";")
    assert [(r.text, r.label) for r in rows] == [('Oil, gas and "coal"', ("energy", "trade")), ("quiet day", ())]
    with pytest.raises(TaskDataError, match=f"{path}:1: no column 'topic'"):
        read_table(path, "text", "topic")


# ---------------------------------------------------------------------------------- JSON Lines and XML


def test_reuters_multi_label(data_dir):
    train = read_jsonl(data_dir / "reuters21578" / "training.jsonl", label_field="labels", label_kind="multi")
    test = read_file(data_dir / "reuters21578" / "test.jsonl", words=False, label_kind="multi",
                     label_field="labels")
    labels = LabelSet.from_examples(train)
    assert (len(train), len(test), len(labels)) == (7769, 3019, 90)
    assert train[0].label == ("cocoa",) and train[0].text.startswith("BAHIA COCOA REVIEW")
    assert unseen_labels(labels, test) == []


def test_movie_reviews_folds(data_dir):
    path = data_dir / "movie_reviews" / "reviews.jsonl"
    reviews = read_jsonl(path)
    assert len(reviews) == 2000 and Counter(ex.label for ex in reviews) == {"pos": 1000, "neg": 1000}
    held_out = read_jsonl(path, where={"id": lambda i: pang_lee_fold(i) == 1})
    assert len(held_out) == 200 and Counter(ex.label for ex in held_out) == {"pos": 100, "neg": 100}
    assert pang_lee_fold("neg/cv114_19501.txt") == 2


def test_jsonl_errors(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "fine", "label": "x"}\n{"text": "a list", "label": ["x"]}\n{"text": oops}\n')
    with pytest.raises(TaskDataError, match=f"{path}:2: .* is a list; pass label_kind='multi'"):
        read_jsonl(path)
    with pytest.raises(TaskDataError, match=f"{path}:1: no field 'category'"):
        read_jsonl(path, label_field="category")
    with pytest.warns(UserWarning, match="skipped 2 bad lines"):
        assert [ex.text for ex in read_jsonl(path, skip_bad=True)] == ["fine"]


def test_rte_pairs(data_dir):
    sizes = {}
    for name in ("rte1_dev", "rte2_dev", "rte3_dev"):
        pairs = read_rte_xml(data_dir / "nltk_rte" / f"{name}.xml")
        sizes[name] = Counter(ex.label for ex in pairs)
    assert sizes == {"rte1_dev": {"entailment": 283, "not_entailment": 284},
                     "rte2_dev": {"entailment": 210, "not_entailment": 190},
                     "rte3_dev": {"entailment": 412, "not_entailment": 388}}
    first = read_file(data_dir / "nltk_rte" / "rte1_dev.xml", words=False)[0]
    assert first.pair == "Crude oil prices rose to $37.80 per barrel" and first.source.endswith("rte1_dev.xml:4")


def test_rte_errors_name_the_line(tmp_path):
    path = tmp_path / "rte.xml"
    path.write_text('<corpus>\n<pair id="1" value="MAYBE"><t>a</t><h>b</h></pair>\n</corpus>\n')
    with pytest.raises(TaskDataError, match=f"{path}:2: pair label 'MAYBE'"):
        read_rte_xml(path)
    path.write_text('<corpus>\n<pair id="1" value="TRUE"><t>a</t><h>b</pair>\n</corpus>\n')
    with pytest.raises(TaskDataError, match=f"{path}:2: malformed XML"):
        read_rte_xml(path)


# ---------------------------------------------------------------------------------- label sets


def test_unseen_labels_in_dev_are_reported():
    train = [TextExample("a", label="pos"), TextExample("b", label="neg")]
    dev = [TextExample("c", label="pos"), TextExample("d", label="neutral"), TextExample("e")]
    labels = LabelSet.from_examples(train)
    assert labels.labels == ("neg", "pos") and labels.index("pos") == 1 and "neg" in labels
    assert unseen_labels(labels, dev) == ["neutral"]
    with pytest.raises(KeyError, match="'neutral' is not among the 2 training labels"):
        labels.index("neutral")


def test_tag_label_set_holds_both_halves_of_each_bio_pair():
    train = [WordExample(("Ann", "Lee"), ("B-PER", "I-PER")), WordExample(("Rome",), ("B-LOC",))]
    dev = [WordExample(("Big", "Co"), ("B-ORG", "I-ORG"))]
    labels = LabelSet.from_examples(train)
    assert labels.labels == ("B-LOC", "B-PER", "I-LOC", "I-PER")
    assert unseen_labels(labels, dev) == ["B-ORG", "I-ORG"]


@pytest.mark.parametrize("content, columns", [("Confidence NN B-NP\nin IN B-PP\n\nThe DT B-NP\n", True),
                                              ("A sentence to tag.\nAnother one here.\n", False),
                                              ("Two words\nper line\n", False),
                                              ("word\nword\n", False)])
def test_column_files_are_recognised(tmp_path, content, columns):
    path = tmp_path / "input.txt"
    path.write_text(content)
    assert looks_like_columns(str(path)) is columns


def test_a_binary_or_utf16_file_is_called_what_it_is_before_its_columns_are_asked_for(tmp_path):
    binary, utf16 = tmp_path / "data.tsv", tmp_path / "utf16.tsv"
    binary.write_bytes(bytes(range(256)))
    utf16.write_bytes("text\tlabel\n".encode("utf-16"))
    with pytest.raises(ValueError, match="data.tsv:1: a NUL byte: this is not a text file"):
        read_file(binary, words=False)  # no text column given: the file's kind is the first problem
    with pytest.raises(ValueError, match="the file is UTF-16, not UTF-8"):
        read_file(utf16, words=False, text_column="text")
