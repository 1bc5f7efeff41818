"""reuse_freed_memory: a freed large tensor's memory is reused instead of faulted in again."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import resource, sys, torch
from bertkit import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
faults = []
for step in range(10):  # 100 MB tensors made, written and freed, as in a training step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(100 * 2**20 // 4)
    y = x * 2
    del x, y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def page_faults(mode: str) -> int:
    """Page faults of steps 2-10 of PROBE, run in a fresh process."""
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def huge_pages_always() -> bool:
    """Transparent huge pages for every mapping: then a fresh 100 MB map faults 50 times, not 25,600."""
    try:
        return "[always]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's settings are glibc's")
@pytest.mark.skipif(huge_pages_always(), reason="with transparent huge pages always on, faults are 2 MB each")
def test_freed_large_tensors_are_reused_instead_of_faulted_in_again():
    pages = 2 * 100 * 2**20 // 4096  # two 100 MB tensors a step
    system, reuse = page_faults("system"), page_faults("reuse")
    assert system >= 9 * pages  # glibc: a fresh mmap per tensor, every page faulted in at every step
    assert reuse < 0.5 * system  # the heap's freed blocks serve most steps (exactly how many depends
    # on where the blocks fall: a block freed next to a live one is reused only once its neighbours are)


def test_opting_out_leaves_malloc_alone(monkeypatch):
    from bertkit import allocator
    monkeypatch.setenv(allocator.OPT_OUT, "1")
    allocator.reuse_freed_memory.cache_clear()
    try:
        assert allocator.reuse_freed_memory() is False
    finally:
        allocator.reuse_freed_memory.cache_clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_released_memory_leaves_the_process():
    """Blocks freed below a live one stay with the process until they are released."""
    import numpy as np
    from bertkit.allocator import release_freed_memory

    def resident_mib() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    blocks = [np.ones(100_000 // 8) for _ in range(2000)]  # 200 MB in blocks under the mmap threshold
    pin = np.ones(100_000 // 8)  # above them on the heap
    del blocks
    before = resident_mib()
    assert release_freed_memory()
    assert before - resident_mib() > 100, (before, resident_mib())
    del pin
