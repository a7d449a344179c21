"""keep_freed_memory: after it, a big tensor allocated where a bigger one was freed reuses that one's
pages (no page faults), which glibc's default malloc does not (it unmaps and maps again)."""
import subprocess
import sys

import pytest

from mrcnn_plugin.utils.allocator import _libc

_CHILD = """
import resource, sys, torch
from mrcnn_plugin.utils.allocator import keep_freed_memory
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for size in (64 << 20, 48 << 20, 40 << 20):  # all above glibc's largest mmap threshold (32 MiB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(size, dtype=torch.uint8)
    x.fill_(1)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""

PAGES = [(64 << 20) // 4096, (48 << 20) // 4096, (40 << 20) // 4096]


def _faults(mode: str):
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(_libc() is None, reason="the C library is not glibc")
def test_default_malloc_faults_in_every_big_allocation():
    # The premise: without the setting, each allocation touches fresh pages.
    assert all(f >= 0.9 * pages for f, pages in zip(_faults("default"), PAGES))


@pytest.mark.skipif(_libc() is None, reason="the C library is not glibc")
def test_keep_freed_memory_reuses_pages():
    faults = _faults("keep")
    assert faults[0] >= 0.9 * PAGES[0]  # the first allocation still maps its pages
    assert all(f < 0.05 * pages for f, pages in zip(faults[1:], PAGES[1:])), faults
