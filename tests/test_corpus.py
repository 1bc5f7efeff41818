import numpy as np
import pytest

from bertkit.data.corpus import build_corpus


@pytest.fixture(scope="module")
def books(data_dir):
    return [data_dir / "gutenberg_nltk" / "carroll-alice.txt", data_dir / "gutenberg_nltk" / "shakespeare-caesar.txt"]


def test_corpus_shards_sentences_and_documents(books, minilm, tmp_path):
    _, tokenizer = minilm
    with pytest.warns(UserWarning, match="shakespeare-caesar.txt: 2 lines had invalid UTF-8"):
        corpus = build_corpus(books, tokenizer, tmp_path, errors="replace", progress=False)
    assert corpus.num_documents == 2 and corpus.stats["empty_documents"] == 0
    assert corpus.num_sentences > 1000
    assert corpus.stats["tokens"] == int(corpus.sentence_starts[-1])
    first = tokenizer.decode(corpus.sentence(0).tolist())
    assert first == "[ alice ' s adventures in wonderland by lewis carroll 1865 ]"
    text = " ".join(tokenizer.decode(corpus.sentence(s).tolist()) for s in corpus.document(0))
    assert "down the rabbit - hole" in text and "caesar" not in text
    again = build_corpus(books, tokenizer, tmp_path, errors="replace", progress=False)  # reused, not rebuilt
    assert again.folder == corpus.folder and np.array_equal(again.sentence_starts, corpus.sentence_starts)


def test_strict_decoding_names_file_and_line(books, minilm, tmp_path):
    with pytest.raises(ValueError, match=r"shakespeare-caesar.txt:\d+: invalid UTF-8"):
        build_corpus(books[1:], minilm[1], tmp_path, progress=False)


def test_blank_line_documents_and_empty_ones_are_counted(minilm, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("First doc. It has two sentences.\n\n   \n\nSecond doc here.\n\nA third one.\n", encoding="utf-8")
    corpus = build_corpus([path], minilm[1], tmp_path / "cache", documents="blank_line", progress=False)
    assert corpus.num_documents == 3
    assert [len(corpus.document(d)) for d in range(3)] == [2, 1, 1]
    assert corpus.stats["documents_mode"] == "blank_line"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("One sentence.\n")
    (tmp_path / "folder" / "empty.txt").write_text("\n  \n")
    files = build_corpus([tmp_path / "folder"], minilm[1], tmp_path / "cache", progress=False)
    assert files.num_documents == 1 and files.stats["empty_documents"] == 1
