"""Reading user text files line by line, with errors that name the file and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (line number from 1, line without its newline) from a UTF-8 file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not valid UTF-8; the message gives file, line and byte offset.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a text file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{number}: invalid UTF-8 at byte {e.start} of the line "
                                 f"({raw[max(0, e.start - 10):e.start + 10]!r}); convert the file "
                                 "to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
            yield number, line.rstrip("\r\n")


def read_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    """Every line of every file, in order."""
    for path in paths:
        for _, line in read_lines(path):
            yield line


def text_files(path: str | Path) -> list[Path]:
    """A file, or the .txt files of a folder (sorted, recursively)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .txt files")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]
