"""Background threads per kind of work (compression, reading), shared by the process: one
for each kind, or a few for reads from an object store."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def _forget_pools() -> None:
    """In a forked child (parallel.py): the parent's threads are not there; new pools are made."""
    global _LOCK
    _POOLS.clear()
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


REQUESTS_PER_READ_AHEAD = 4


def requests(read_ahead: int) -> ThreadPoolExecutor:
    """The pool for small requests to a store a round trip away (objects, ranges, deletes):
    REQUESTS_PER_READ_AHEAD threads per ``Storage.read_ahead``, so that many wait on the
    network at once."""
    n = REQUESTS_PER_READ_AHEAD * read_ahead
    return worker(f"get-{n}", n)


def worker(name: str, threads: int = 1) -> ThreadPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(name)
        if pool is None:
            pool = _POOLS[name] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"mulligan-{name}")
        return pool
