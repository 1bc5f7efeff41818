import warnings

import pytest

from bertkit import Tokenizer
from bertkit.textfiles import read_texts, text_files

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def real_texts(data_dir) -> list[str]:
    """10,000 real sentences: 5,000 from SST-2 (lower-cased reviews), 5,000 from CoNLL-2003 (news)."""
    sst = [line.split("\t")[0] for line in open(data_dir / "sst2" / "train.tsv", encoding="utf-8")][1:5001]
    return sst + [" ".join(words) for words in conll_sentences(data_dir)[:5000]]


def conll_sentences(data_dir) -> list[list[str]]:
    sentences, words = [], []
    for line in open(data_dir / "conll2003" / "eng.train", encoding="utf-8"):
        if line.strip() and not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
        elif words:
            sentences.append(words)
            words = []
    return sentences


@pytest.fixture(scope="module")
def reference(minilm_dir):
    """BertTokenizerFast built from vocab.txt (transformers 5 names the argument `vocab`, 4 `vocab_file`)."""
    import inspect
    arg = "vocab" if "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters else "vocab_file"
    tokenizer = transformers.BertTokenizerFast(**{arg: str(minilm_dir / "vocab.txt")}, do_lower_case=True)
    assert tokenizer.vocab_size == 30522
    return tokenizer


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def ours(request, minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir / request.param)


def assert_same_rows(encoded, expected):
    for r in range(len(encoded)):
        assert encoded.ids(r) == expected["input_ids"][r]
        assert [tuple(o) for o in encoded.offsets(r)] == [tuple(o) for o in expected["offset_mapping"][r]]
        assert encoded.word_ids(r) == expected.word_ids(r)
        assert encoded.rows[r].type_ids == expected["token_type_ids"][r]


def test_single_texts_match_transformers(ours, reference, real_texts):
    encoded = ours.encode(real_texts)
    assert len(encoded) == 10_000
    assert_same_rows(encoded, reference(real_texts, return_offsets_mapping=True))


def test_pairs_match_transformers(ours, reference, real_texts):
    first, second = real_texts[:-1:2], real_texts[1::2]
    assert_same_rows(ours.encode(first, second), reference(first, second, return_offsets_mapping=True))


def test_pre_split_words_match_transformers(ours, reference, data_dir):
    words = conll_sentences(data_dir)[:3000]
    encoded = ours.encode(words, split_into_words=True)
    assert_same_rows(encoded, reference(words, is_split_into_words=True, return_offsets_mapping=True))


def test_trained_vocabulary_has_the_asked_size_and_round_trips(data_dir):
    files = text_files(data_dir / "gutenberg_nltk")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines = list(read_texts(files, errors="replace"))
    assert any("shakespeare-caesar.txt: 2 lines had invalid UTF-8" in str(w.message) for w in caught)
    held_out = lines[::50]
    tokenizer = Tokenizer.train((x for i, x in enumerate(lines) if i % 50), vocab_size=8000, show_progress=False)
    assert tokenizer.vocab_size == 8000
    assert [tokenizer.token_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    encoded = tokenizer.encode(held_out)
    for r, text in enumerate(held_out):
        assert tokenizer.decode(encoded.ids(r), cleanup=False) == tokenizer.normalize(text), text


def test_saved_tokenizer_loads_in_bertkit_and_transformers(tmp_path):
    texts = ["The Quick brown fox.", "Über café naïve résumé", "jumps over the lazy dog"] * 20
    tokenizer = Tokenizer.train(texts, vocab_size=80, min_frequency=1, show_progress=False)
    tokenizer.save(tmp_path)
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    again = Tokenizer.from_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    from_vocab = Tokenizer.from_vocab(tmp_path / "vocab.txt")
    for text in texts[:3]:
        ids = tokenizer.encode([text]).ids(0)
        assert again.encode([text]).ids(0) == ids == hf(text)["input_ids"] == from_vocab.encode([text]).ids(0)


def test_cased_tokenizer_keeps_case_and_accents():
    texts = ["Über Café", "über café"] * 10
    cased = Tokenizer.train(texts, vocab_size=60, lowercase=False, strip_accents=False, min_frequency=1,
                            show_progress=False)
    assert cased.normalize("Über Café") == "Über Café"
    uncased = Tokenizer.train(texts, vocab_size=60, min_frequency=1, show_progress=False)
    assert uncased.normalize("Über Café") == "uber cafe"


def test_empty_and_whitespace_texts_give_only_special_tokens(ours):
    encoded = ours.encode(["", "   \t  "])
    assert [ours.id_to_token(i) for i in encoded.ids(0)] == ["[CLS]", "[SEP]"]
    assert encoded.ids(1) == encoded.ids(0)


def test_long_text_is_an_error_by_default(ours):
    long_text = " ".join(["word"] * 5000)
    with pytest.raises(ValueError, match="input 1 has 5002 tokens, more than max_length=512"):
        ours.encode(["short", long_text])


def test_truncation_is_counted(ours):
    long_text = " ".join(["word"] * 5000)
    with pytest.warns(UserWarning, match="truncated 1 of 2 inputs to 512 tokens"):
        encoded = ours.encode(["short", long_text], overflow="truncate")
    assert encoded.num_truncated == 1 and encoded.lengths.tolist() == [3, 512]


def test_windows_cover_the_whole_text_with_overlap(ours):
    words = [f"w{i}" for i in range(1000)]
    encoded = ours.encode(["short", " ".join(words)], overflow="window", max_length=128, stride=32)
    assert encoded.origin[0] == 0 and (encoded.origin[1:] == 1).all()
    assert all(n <= 128 for n in encoded.lengths)
    seen = sorted({w for r in range(1, len(encoded)) for w in encoded.word_ids(r) if w is not None})
    assert seen == list(range(1000))
    first, second = encoded.word_ids(1), encoded.word_ids(2)
    assert len(set(first) & set(second) - {None}) > 0


def test_encode_refuses_a_bare_string_and_bad_options(ours):
    with pytest.raises(TypeError, match="list of texts"):
        ours.encode("a text")
    with pytest.raises(ValueError, match="overflow must be"):
        ours.encode(["a"], overflow="drop")
    with pytest.raises(ValueError, match="2 texts but 1 pair texts"):
        ours.encode(["a", "b"], ["c"])


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)


def test_special_tokens_in_text_stay_whole(ours):
    assert ours.tokens("a [MASK] b [SEP]") == ["[CLS]", "a", "[MASK]", "b", "[SEP]", "[SEP]"]


def test_window_options_are_checked(ours):
    with pytest.raises(ValueError, match="stride 200 must be >= 0 and less than max_length - 3"):
        ours.encode(["a b c"], overflow="window", max_length=128, stride=200)
    long_first = " ".join(["word"] * 300)
    with pytest.raises(ValueError, match="cannot window these inputs to 128 tokens: the first text of input 0 has 300"):
        ours.encode([long_first], ["short"], overflow="window", max_length=128, stride=16)


def test_a_long_first_text_leaves_its_pair_windows_that_share_less(ours):
    """100 first-text tokens leave the second 25 per window, fewer than the stride of 32 (the Rust
    library panics there): those windows share 12 tokens, and together they hold every token."""
    second = " ".join(f"w{i}" for i in range(60))
    encoded = ours.encode([" ".join(["word"] * 100), "short"], [second, second], overflow="window", max_length=128,
                          stride=32)
    first_rows = [r for r in range(len(encoded)) if encoded.origin[r] == 0]
    assert len(first_rows) > 1 and all(encoded.lengths[r] <= 128 for r in first_rows)
    spans = [{o for o, s in zip(encoded.rows[r].offsets, encoded.rows[r].sequence_ids) if s == 1} for r in first_rows]
    assert len(spans[0] & spans[1]) == 12  # the second text's tokens, by character offsets
    assert set().union(*spans) == set(ours.encode([second]).rows[0].offsets[1:-1])
