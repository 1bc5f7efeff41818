"""Reading user text files line by line, with errors that name the file and the line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Iterator, Literal

DecodeErrors = Literal["strict", "replace"]
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 LE / BE (and UTF-32 LE, which starts alike)


def read_lines(path: str | Path, errors: DecodeErrors = "strict") -> Iterator[tuple[int, str]]:
    """Yield (line number from 1, line without its newline) from a UTF-8 file.

    Args:
        errors: "strict" stops at the first line that is not valid UTF-8; "replace" puts U+FFFD for
            the undecodable bytes, and warns once per file with the count and the first line.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is UTF-16 or binary (a NUL byte); or, with errors="strict", a line is not
            valid UTF-8 (file, line and byte offset given).
    """
    path = Path(path)
    check_text(path)
    bad_lines: list[int] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if b"\0" in raw:
                raise ValueError(f"{path}:{number}: a NUL byte: this is not a text file; expected UTF-8 text")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if errors == "strict":
                    raise ValueError(f"{path}:{number}: invalid UTF-8 at byte {e.start} of the line "
                                     f"({raw[max(0, e.start - 10):e.start + 10]!r}); convert the file to "
                                     "UTF-8 (e.g. iconv -f latin1 -t utf-8) or replace the bad bytes "
                                     "(--encoding-errors replace; errors='replace' in Python)") from None
                bad_lines.append(number)
                line = raw.decode("utf-8", errors="replace")
            yield number, line.rstrip("\r\n")
    if bad_lines:
        warnings.warn(f"{path}: {len(bad_lines)} lines had invalid UTF-8, replaced by U+FFFD "
                      f"(first at line {bad_lines[0]})", stacklevel=2)


def read_fields(path: str | Path, errors: DecodeErrors = "strict") -> Iterator[tuple[int, str, list[str]]]:
    """(line number, line, its whitespace-separated fields) of each line that is not blank."""
    return ((number, line, line.split()) for number, line in read_lines(path, errors) if line.strip())


def check_text(path: str | Path) -> None:
    """Refuse a file that is UTF-16 (a byte-order mark) or binary (a NUL byte in its first 64 KiB),
    saying so, before anything else is asked of it.

    Raises:
        FileNotFoundError, IsADirectoryError: no such file, or a folder.
        ValueError: the file is UTF-16 or binary.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a text file")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(UTF16_MARKS):
        raise ValueError(f"{path}: starts with a UTF-16 byte-order mark: the file is UTF-16, not UTF-8; "
                         f"convert it first (iconv -f utf-16 -t utf-8 {path} > converted.txt)")
    if b"\0" in head:
        line = head[:head.index(b"\0")].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: a NUL byte: this is not a text file; expected UTF-8 text")


def read_texts(paths: Iterable[str | Path], errors: DecodeErrors = "strict") -> Iterator[str]:
    """Every line of every file, in order."""
    for path in paths:
        yield from (line for _, line in read_lines(path, errors))


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
