"""keep_freed_memory: after it, a process that frees a big tensor and allocates it again reuses the
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
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(64 << 20, dtype=torch.uint8)
    x.fill_(1)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""

PAGES_64MIB = (64 << 20) // 4096


def _faults(mode: str):
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(_libc() is None, reason="the C library is not glibc")
def test_default_malloc_faults_in_every_big_allocation():
    # The premise: without the setting, each 64 MiB allocation touches fresh pages.
    assert all(f >= PAGES_64MIB * 0.9 for f in _faults("default"))


@pytest.mark.skipif(_libc() is None, reason="the C library is not glibc")
def test_keep_freed_memory_reuses_pages():
    faults = _faults("keep")
    assert faults[0] >= PAGES_64MIB * 0.9  # the first allocation still maps its pages
    assert all(f < PAGES_64MIB * 0.05 for f in faults[-3:]), faults
