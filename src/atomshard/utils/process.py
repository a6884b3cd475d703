"""Process-wide settings that keep CPU runs fast without asking users for env variables.

Two traps seen in peer codes on small CPU machines:
1. glibc maps and unmaps large per-step buffers with mmap/munmap on every step (millions
   of page faults per step); keeping them on the heap (``M_MMAP_MAX = 0``, a high trim
   threshold) removes that cost.
2. OpenMP threads spin-wait between parallel regions; when another process uses a core,
   the spinning threads collapse throughput. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep.
   It only takes effect if set before the OpenMP runtime starts, i.e. before torch is
   imported, which is why the CLI calls :func:`configure_process` first thing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def configure_process(threads: int | None = None) -> None:
    """Apply the allocator and OpenMP settings above (idempotent); optionally set threads."""
    global _done
    if not _done:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if os.environ.get("ATOMSHARD_KEEP_MALLOC") is None:
            name = ctypes.util.find_library("c")
            try:
                libc = ctypes.CDLL(name or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
                mallopt = None
            if mallopt is not None:
                mallopt(_M_MMAP_MAX, 0)
                mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        _done = True
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
