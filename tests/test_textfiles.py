import pytest

from bertkit.textfiles import read_lines, read_texts, text_files


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nstill fine\ncaf\xe9 au lait\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: invalid UTF-8 at byte 3"):
        list(read_lines(path))


def test_replace_mode_counts_and_reports(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\ncaf\xe9\nna\xefve\n")
    with pytest.warns(UserWarning, match=r"bad.txt: 2 lines had invalid UTF-8.*first at line 2"):
        lines = list(read_texts([path], errors="replace"))
    assert lines == ["ok", "caf\ufffd", "na\ufffdve"]


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_lines(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError, match="holds no .txt files"):
        text_files(tmp_path)


def test_line_endings_are_stripped(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\n\nc")
    assert list(read_lines(path)) == [(1, "a"), (2, "b"), (3, ""), (4, "c")]
