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
~78,000 -> ~27,000 faults). ``watch`` does the opposite (``daemon=True``): a
daemon must give memory back. glibc raises its threshold to the size of each
large block freed (up to 32 MiB), so after a large commit had gone through the
watcher in 2 MiB reads and 8 MiB packs, those sizes stayed in the heap among live
pages: capturing one commit of 300 MiB peaked at 255-261 MiB. With blocks from
1 MiB up always mapped and 8 MiB of free heap kept before trimming, 203-208 MiB
(and at 64 KiB, 154-164 MiB, but the watcher's CPU at 1,000 tx/s rose from
about 8-9 % to 9.4-10.3 %; at 1 MiB it is within the runs' spread; docs/capture.md).
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
DAEMON_MMAP_THRESHOLD = 1 << 20
DAEMON_TRIM_THRESHOLD = 8 << 20
_done = False
_gc_done = False
GC_YOUNG_THRESHOLD = 50_000


def tune_allocator(daemon: bool = False) -> bool:
    """Apply the allocator settings once (the first call's kind wins); True if they were applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return False
    _done = True
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError, ImportError):
        return False  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if daemon:
        return bool(mallopt(_M_MMAP_THRESHOLD, DAEMON_MMAP_THRESHOLD)) \
            and bool(mallopt(_M_TRIM_THRESHOLD, DAEMON_TRIM_THRESHOLD))
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


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
