"""Keep freed memory in a long-running process instead of handing it back to the kernel at once.

Why. glibc's ``malloc`` gives memory back to the kernel when a large block is freed (``mmap``ed
blocks at ``free``, and the top of a heap once more than ``M_TRIM_THRESHOLD`` of it is free), and
every page it later takes again costs a page fault that zeroes 4 KB. The reranker allocates and
frees the same few megabytes on every request (the UMNN quadrature's ``[tasks, rows x nodes, 50]``
activations alone are ~1.5 MB a tensor), on several threads, each with its own malloc arena. Under
8 clients its server took 45-170 minor page faults a request (``/proc/PID/stat``, 2026-12-07), about
4 µs each on that VM: 0.2-0.7 ms of a core a request. With ``M_MMAP_THRESHOLD`` and
``M_TRIM_THRESHOLD`` set, blocks up to the threshold come from the heap and freed memory stays
there for the next request (the PyTorch CPU tuning guide recommends jemalloc or tcmalloc for the
same reason; this needs no preloaded library). The price is that the process keeps its peak heap.

``mallopt`` is glibc's; elsewhere (macOS, musl) :func:`keep_freed_memory` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MB on 64-bit)
MAX_MMAP_THRESHOLD = 32 << 20


def keep_freed_memory(megabytes: int) -> bool:
    """Serve blocks up to ``min(megabytes, 32)`` MB from the heap and trim it only past ``megabytes``.

    Returns whether both settings took (False: not glibc, or ``megabytes`` is 0, which keeps
    glibc's defaults). Call it once at start-up, before the threads that allocate start.
    """
    if megabytes < 0:
        raise ValueError(f"megabytes must be >= 0, got {megabytes}")
    if megabytes == 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # musl and other libcs
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    limit = min(megabytes, 2047) << 20  # an int for mallopt
    return bool(mallopt(M_MMAP_THRESHOLD, min(limit, MAX_MMAP_THRESHOLD))) and bool(mallopt(M_TRIM_THRESHOLD, limit))
