"""File writing helpers for large new files (restored databases).

- ``reserve``: allocate the whole file up front, so a full disk is found before
  a single page is written (and the file system allocates in one go);
- ``RunWriter``: writes pages given by page number, gathering consecutive
  pages into one ``pwritev`` and asking the kernel to start writing back
  what is done every few MiB, so the final fsync has little left to do.
"""

from __future__ import annotations

import errno
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor

_SYNC_FILE_RANGE_WRITE = 2
_IOV_MAX = 1024
_WRITEBACK_EVERY = 8 << 20


_sync_file_range = None if sys.platform.startswith("linux") else False  # None: not looked up yet


def _load_sync_file_range():
    global _sync_file_range
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
        _sync_file_range = fn
    except (OSError, AttributeError, ImportError):
        _sync_file_range = False
    return _sync_file_range


def reserve(fd: int, size: int) -> None:
    """Give the file its final size with its blocks allocated (ENOSPC raises here)."""
    if size and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    os.ftruncate(fd, size)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now (a hint; never waits)."""
    fn = _sync_file_range if _sync_file_range is not None else _load_sync_file_range()
    if fn:
        fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_fsync_pool = None


def fsync_async(fd: int) -> Future:
    """fsync in a background thread (it releases the GIL), for overlapping it with a check."""
    global _fsync_pool
    if _fsync_pool is None:
        _fsync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mulligan-fsync")
    return _fsync_pool.submit(os.fsync, fd)


def pwritev_all(fd: int, bufs: list, offset: int) -> None:
    """``pwritev`` that finishes short writes."""
    total = sum(len(b) for b in bufs)
    n = os.pwritev(fd, bufs, offset)
    if n < total:  # rare: write the rest the simple way
        rest = memoryview(b"".join(bufs))[n:]
        offset += n
        while rest:
            k = os.pwrite(fd, rest, offset)
            rest, offset = rest[k:], offset + k


class RunWriter:
    """Write pages (numbered from 1) into ``fd``, consecutive ones in one call."""

    def __init__(self, fd: int, page_size: int):
        self.fd, self.page_size = fd, page_size
        self._run: list = []
        self._start = self._next = 0
        self._since_writeback = 0
        self._written_lo: int | None = None
        self._written_hi = 0

    def add(self, pgno: int, data) -> None:
        if self._run and pgno == self._next and len(self._run) < _IOV_MAX:
            self._run.append(data)
        else:
            self._flush_run()
            self._run, self._start = [data], pgno
        self._next = pgno + 1

    def _flush_run(self) -> None:
        if not self._run:
            return
        off = (self._start - 1) * self.page_size
        pwritev_all(self.fd, self._run, off)
        n = len(self._run) * self.page_size
        lo = off if self._written_lo is None else min(self._written_lo, off)
        self._written_lo, self._written_hi = lo, max(self._written_hi, off + n)
        self._since_writeback += n
        self._run = []
        if self._since_writeback >= _WRITEBACK_EVERY:
            start_writeback(self.fd, self._written_lo, self._written_hi - self._written_lo)
            self._since_writeback, self._written_lo, self._written_hi = 0, None, 0

    def close(self) -> None:
        self._flush_run()
