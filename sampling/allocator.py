"""Keep freed heap memory in a CPU sampling process instead of handing it back to the OS after every network call.

glibc serves large allocations with fresh mappings and unmaps them on free (and trims the heap top); a sampler
allocates and frees the same activations every step, so on a CPU it page-faults them in again each time. Measured on
the demo's PAG row (128 samples, 1 thread, 2 busy cores): 9.1 s of system time in 31 s of CPU time by default,
0.65 s with both thresholds raised (docs/speed.md). RSS stays at the run's peak, which the first step reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap, and up to 1 GiB of free heap top is kept


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to KEEP_BYTES; False (nothing changed) off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
