"""Process-wide memory allocator setting for long inference (or training) loops on Linux.

PyTorch's CPU tensors come from the C library's malloc. glibc serves every
block larger than its mmap threshold (at most 32 MiB) from fresh pages mapped
for it and unmaps them on free, so each inference maps and faults in its big
feature maps again: measured on the R50-FPN benchmark (`mrcnn bench`, 2
threads, AMD EPYC VM), ~115k page faults and ~0.24 s of kernel time per image
for this project's fast mode, ~670k and ~1.4 s for torchvision's model.
`keep_freed_memory()` makes malloc keep freed memory in its heap for the next
image instead: no page faults after the first image, at the cost of a resident
size that stays at its high-water mark. glibc does not always fit a new block
into a freed one of the same size (posix_memalign asks for a little more), so
some allocation orders grow the heap: running the fast model over coco-mini's
79 val photos (sizes vary), the resident size rose in steps with the largest
image seen, from 1.9 to 2.7 GB, against ~1.3 GB with the default malloc over 12
photos (weights and libraries included).

The same setting for a process started from a shell (the C++ program, a
Python script) is the environment variable GLIBC_TUNABLES set to
`GLIBC_TUNABLES_KEEP_FREED_MEMORY` before the process starts.
"""
import ctypes
import ctypes.util
from typing import Optional

__all__ = ["keep_freed_memory", "GLIBC_TUNABLES_KEEP_FREED_MEMORY"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# No block served by mmap; never give the top of the heap back to the system.
GLIBC_TUNABLES_KEEP_FREED_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"


def _libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Tells glibc's malloc, for the rest of this process, to reuse freed memory instead of
    returning it to the system. Returns False (and changes nothing) where the C library is not
    glibc. Allocations made before the call are not affected."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 0xFFFFFFFF))
