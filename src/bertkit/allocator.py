"""Let the C library keep freed memory for reuse: large, changing tensor shapes on CPU.

PyTorch's CPU tensors come from malloc. glibc serves blocks larger than 32 MB with a fresh mmap and
unmaps them on free, so an attention-sized tensor (32 x 12 heads x 256 x 256 floats is 100 MB) is
page-faulted in, and zeroed by the kernel, again at every step. One epoch of the Reuters-21578
recipe over 1,280 articles (256-token windows, batch 32; `make bench-allocator`) spends 86 CPU-s in
the kernel and takes 128 s with glibc's defaults; with freed memory kept, 27 CPU-s and 78 s.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
OPT_OUT = "BERTKIT_SYSTEM_MALLOC"


@functools.cache
def reuse_freed_memory() -> bool:
    """Serve every block from the heap (no per-block mmap), and shrink the heap only when more than
    1 GiB is free at its top: freed memory below that stays with the process for later tensors.

    Process-wide and lasting, so the library never calls it in your process on its own: the `bertkit`
    command does, and a script calls it once. The processes bertkit spawns for itself (the server's
    model processes) call it too. `BERTKIT_SYSTEM_MALLOC=1` makes it do nothing, in those processes as
    well (they inherit the environment).

    Returns:
        whether the settings took effect (False off Linux or with a C library other than glibc).
    """
    if os.environ.get(OPT_OUT) or not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def release_freed_memory() -> bool:
    """Hand the memory freed so far back to the system (glibc's `malloc_trim`); a no-op elsewhere.

    A long streaming job calls it between chunks: freed blocks of the many tensor shapes a chunk
    makes otherwise stay with the process, and its resident memory grew with the input (`bertkit
    embed` of a random 2-layer encoder: about 2 KB a line, flat with a trim after each chunk).

    Returns:
        whether memory was released.
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None
    return bool(trim(0)) if trim is not None else False
