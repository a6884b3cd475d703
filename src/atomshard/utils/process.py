"""Process-wide settings that keep CPU runs fast without asking users for env variables.

Two traps seen in peer codes on small CPU machines:
1. glibc maps and unmaps large per-step buffers with mmap/munmap on every step (millions
   of page faults per step); keeping them on the heap (``M_MMAP_MAX = 0``, a high trim
   threshold) removes that cost.
2. OpenMP threads spin-wait between parallel regions; when several processes share the
   cores (the ranks of a local group), the spinning threads of one rank take the core a
   thread of another needs, and throughput collapses. ``OMP_WAIT_POLICY=PASSIVE`` makes
   them sleep; :func:`passive_waits` sets it for the ranks that
   :class:`atomshard.comm.LocalGroup` starts. A single process keeps the OpenMP
   runtime's default (spin briefly, then sleep): with passive waits every one of the
   thousands of short parallel regions of a training step starts by waking the team,
   which cost 2-thread force training 14 % of its throughput (Si cells, 1,316 against
   1,535 atoms/s; ``benchmarks/bench_train_speed.py``, 2026-12-07). The setting only
   takes effect before the OpenMP runtime starts, i.e. before torch is imported in that
   process.

Keeping big blocks on the heap has a price on large systems: the heap fragments (long-lived
tensors land between freed temporaries of different sizes), and the free holes stay
resident. :func:`release_free_heap`, called by the chunked convolution between chunks,
hands the free pages back once they have piled up (:data:`FREE_HEAP_BYTES`). For the
largest systems a different allocator does better still: ``atomshard --allocator tcmalloc``
re-runs the command with gperftools' tcmalloc preloaded (:func:`exec_with_allocator`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import sys
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False
#: :func:`release_free_heap` trims the heap once the resident size has grown by this many
#: bytes since its last trim (or first call) and the heap holds at least as much free.
FREE_HEAP_BYTES = 1 << 30
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _load_c_library() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if hasattr(libc, "mallinfo2") and hasattr(libc, "malloc_trim"):
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_c_cache: list[ctypes.CDLL | None] = []  # empty until looked up


def _c_library() -> ctypes.CDLL | None:
    """The C library (loaded once), or None where it cannot be loaded."""
    if not _c_cache:
        _c_cache.append(_load_c_library())
    return _c_cache[0]


def _libc() -> ctypes.CDLL | None:
    """The C library if it is glibc with ``mallinfo2`` and ``malloc_trim`` (2.33+), else None."""
    libc = _c_library()
    if libc is None or not hasattr(libc, "mallinfo2") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def free_heap_bytes() -> int | None:
    """Bytes the heap holds free (glibc ``mallinfo2().fordblks``), or None without glibc."""
    libc = _libc()
    return None if libc is None else int(libc.mallinfo2().fordblks)


def mapped_bytes() -> int | None:
    """Bytes glibc's allocator holds in blocks of their own ``mmap`` (``hblkhd``; 0 once
    :func:`configure_process` keeps big blocks on the heap), or None without glibc."""
    libc = _libc()
    return None if libc is None else int(libc.mallinfo2().hblkhd)


def live_heap_bytes() -> int | None:
    """Bytes glibc's allocator has handed out (``uordblks + hblkhd``), or None without glibc
    (near 0 when another allocator is preloaded: glibc's heap is then unused)."""
    libc = _libc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def resident_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


_resident_mark: list[int] = []  # the resident size after the last trim (or at the first call)


def release_free_heap(min_growth: int | None = None) -> bool:
    """Return the heap's free pages to the system once they have piled up.

    ``malloc_trim(0)`` releases every free page, also in the middle of the heap (where a
    fragmented heap keeps its holes resident). Its cost is a page fault for every released
    page used again, so it runs only when the resident size has grown by more than
    ``min_growth`` (default :data:`FREE_HEAP_BYTES`) since the last trim and the heap holds
    that much free; between trims the
    holes are reused as they are. Returns whether it trimmed; a no-op without glibc or
    ``/proc``, or with ``ATOMSHARD_KEEP_MALLOC`` set.
    """
    if os.environ.get("ATOMSHARD_KEEP_MALLOC") is not None:
        return False
    min_growth = FREE_HEAP_BYTES if min_growth is None else int(min_growth)
    libc = _libc()
    rss = resident_bytes()
    if libc is None or rss == 0:
        return False
    if not _resident_mark:
        _resident_mark.append(rss)
        return False
    if rss - _resident_mark[0] <= min_growth or (free_heap_bytes() or 0) <= min_growth:
        return False
    libc.malloc_trim(0)
    _resident_mark[0] = resident_bytes()
    return True


def configure_process(threads: int | None = None) -> None:
    """Apply the allocator settings above (idempotent); optionally set threads."""
    global _done
    if not _done:
        if os.environ.get("ATOMSHARD_KEEP_MALLOC") is None:
            # not glibc (musl, macOS): nothing to tune
            mallopt = getattr(_c_library(), "mallopt", None)
            if mallopt is not None:
                mallopt(_M_MMAP_MAX, 0)
                mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        _done = True
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))


@contextlib.contextmanager
def passive_waits(on: bool = True) -> Iterator[None]:
    """``OMP_WAIT_POLICY=PASSIVE`` in the environment of the processes started inside
    (with ``on``, unless the user set a policy): OpenMP threads that sleep between parallel
    regions instead of spinning, for processes that share the cores (see the module
    docstring). The parent's own environment is restored on exit."""
    if not on or "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)


#: ``--allocator`` choices with the shared libraries that provide them (``find_library``
#: names, then file patterns in the usual library folders).
ALLOCATORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tcmalloc": (("tcmalloc_minimal", "tcmalloc"), ("libtcmalloc_minimal.so*", "libtcmalloc.so*")),
    "jemalloc": (("jemalloc",), ("libjemalloc.so*",)),
}
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib")  # fmt: skip
_PRELOADED = "ATOMSHARD_ALLOCATOR_PRELOADED"


def find_allocator(name: str) -> str | None:
    """The shared library of allocator ``name`` (a soname or a path), or None if absent."""
    names, patterns = ALLOCATORS[name]
    for lib in names:
        found = ctypes.util.find_library(lib)
        if found:
            return found
    for folder in _LIB_DIRS:
        for pattern in patterns:
            hits = sorted(glob.glob(os.path.join(folder, pattern)))
            if hits:
                return hits[0]
    return None


def is_mapped(lib: str) -> bool:
    """Whether a shared library named like ``lib`` (its file name) is loaded in this process."""
    base = os.path.basename(lib).split(".so")[0] + ".so"
    try:
        with open("/proc/self/maps") as f:
            return any(base in line for line in f)
    except OSError:
        return False


def exec_with_allocator(name: str, argv: list[str]) -> str | None:
    """Re-run this program (``python -m atomshard.cli`` with ``argv``) with allocator
    ``name`` preloaded; returns (without exec) the library when this process already is that
    re-run, None for ``"glibc"`` (and for ``"auto"`` where tcmalloc is not installed:
    ``"auto"`` is tcmalloc where it is); raises ``FileNotFoundError`` naming the package to
    install when an explicitly chosen library is missing.

    Preloading has to happen before the process starts, hence the re-run (``execve``: same
    pid, arguments and environment, plus ``LD_PRELOAD``); child processes (ranks) inherit it.
    """
    if name == "glibc":
        return None
    if name != "auto" and name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; choose glibc or one of {sorted(ALLOCATORS)}")
    done = os.environ.get(_PRELOADED)
    if done:
        if not is_mapped(done):
            raise FileNotFoundError(f"--allocator {name}: {done} was preloaded but is not loaded")
        return done
    lib = find_allocator("tcmalloc" if name == "auto" else name)
    if lib is None and name == "auto":
        return None
    if lib is None:
        package = {"tcmalloc": "libtcmalloc-minimal4 (Debian/Ubuntu) or gperftools-libs (RHEL)",
                   "jemalloc": "libjemalloc2 (Debian/Ubuntu) or jemalloc (RHEL)"}[name]  # fmt: skip
        raise FileNotFoundError(f"--allocator {name}: no {name} library found; install {package}")
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[_PRELOADED] = lib
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "atomshard.cli", *argv], env)
    return lib  # not reached: execve replaces the process
