"""Process-wide settings, made once by the work that needs them.

glibc's allocator hands large blocks (128 KiB and up, after its own dynamic
adjustment) straight back to the kernel when they are freed and trims the heap
eagerly, so a restore that streams 8 MiB packs through ~1 MiB buffers pays a
fresh page fault for every 4 KiB it touches, again and again: on a virtual
machine that was 10-25% of a restore's time. Keeping blocks up to 32 MiB in the
heap and up to 64 MiB of free heap before trimming removes most of those faults
(measured on a captured 93 MiB restore: 113,000-136,000 faults -> 19,000-25,000,
1.14-1.40 s -> 1.04-1.09 s; docs/benchmarks.md). Restores call it before they
write, and the ``snapshot`` command before it reads (a full snapshot of 239 MiB:
~78,000 -> ~27,000 faults). ``watch`` keeps glibc's own settings: fixing its
threshold lower (so that a large commit's 2 MiB reads and 8 MiB packs go back to
the kernel) cost the watcher 4-5 % more CPU at every rate, for good (page faults on
each pack), to save some 50 MB at the peak of a 300 MiB commit. It calls
``release_free_memory`` once such a commit is stored instead (docs/capture.md).
Nothing changes where the allocator is not glibc, or where the user set
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` themselves.

``tune_gc`` does the same for Python's own collector, for the same two commands.
"""

from __future__ import annotations

import gc
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_done = False
_gc_done = False
GC_YOUNG_THRESHOLD = 50_000


def _glibc(name: str, *argtypes):
    """The named function of glibc, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError, ImportError):
        return None
    fn.argtypes = list(argtypes)
    return fn


def tune_allocator() -> bool:
    """Apply the allocator settings once; True if they were applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return False
    _done = True
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    import ctypes

    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc's ``malloc_trim``): after a large
    transient peak, a long-running process would otherwise keep it resident for good. True
    if it was done."""
    import ctypes

    trim = _glibc("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True


def tune_gc() -> bool:
    """Make the cyclic garbage collector cheap for a one-shot command that streams pages.

    Snapshot and restore allocate a few small objects per page (ids, entries, slices),
    none in cycles, and CPython's collector runs after every 700 of them, walking every
    object alive: 0.05-0.07 s of a snapshot or restore (timed with gc.callbacks).
    Everything alive once the command starts (modules, configuration) is frozen out of
    the collector's walks, and young objects are collected every 50,000 allocations
    instead (measured in docs/benchmarks.md). Cycles are still collected, only less often. Applied once;
    True if applied by this call."""
    global _gc_done
    if _gc_done:
        return False
    _gc_done = True
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    return True


def hostname() -> str:
    """This machine's name, as leases, audit entries and alerts record it (what
    ``socket.gethostname()`` returns, without importing ``socket`` at start-up)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return uname().nodename
    import socket

    return socket.gethostname()
