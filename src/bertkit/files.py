"""Files that are never half written: every file bertkit writes goes through `atomic_write`.

The data goes to a temporary file in the same folder, is flushed to disk, and only then renamed
over the target. A kill at any moment leaves either the old file or the new one, never a mix.
`write_safetensors` writes tensors that way, and reports a failed write (a full disk) as the OSError it
is; `figure` writes a matplotlib figure that way. This module imports nothing from bertkit, so every
other module may use it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError
from safetensors.torch import save_file


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes owner-only files
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` as UTF-8, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def figure(path: str | Path, dpi: int = 120, **subplots) -> Iterator[tuple]:
    """(fig, axes) of `plt.subplots(**subplots)` on the Agg backend (no display needed), laid out
    and written to `path` (its suffix names the format) when the block ends."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip("."))
    finally:
        plt.close(fig)


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file atomically.

    Raises:
        OSError: the write failed, with the OS's errno (ENOSPC for a full disk); safetensors itself
            reports such a failure as a SafetensorError that names the error only in its text.
    """
    with atomic_write(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code[1]), f"{os.strerror(int(code[1]))} while writing {path}") from None
