"""File writing helpers for large new files (restored databases).

- ``reserve``: allocate the whole file up front, so a full disk is found before
  a single page is written (and the file system allocates in one go);
- ``RunWriter``: writes pages given by page number, gathering consecutive
  pages into one ``pwritev`` and asking the kernel to start writing back
  what is done every few MiB, so the final fsync has little left to do;
- ``room``: what is free on a disk, and what Mulligan leaves free there.
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

# Room Mulligan leaves free on a disk it stores or restores onto, unless [vault] min_free says
# otherwise: the smaller of this and a tenth of the filesystem. Such a disk is often a
# production database's, and filling it makes the application's own commits fail.
MIN_FREE_DEFAULT = 1 << 30


def room(path: str, min_free: int | None) -> tuple[int, int] | None:
    """(bytes free on the disk holding ``path``, bytes to leave free there), or None if it
    cannot be told. ``min_free``: None for the default, 0 for none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    keep = min_free if min_free is not None else min(MIN_FREE_DEFAULT, st.f_blocks * st.f_frsize // 10)
    return st.f_bavail * st.f_frsize, keep


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


_sync_pool: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _sync_pool
    _sync_pool = None  # a forked child (parallel.py) has not the parent's thread: it makes its own


os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> ThreadPoolExecutor:
    global _sync_pool
    if _sync_pool is None:
        _sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mulligan-sync")
    return _sync_pool


def fsync_async(fd: int) -> Future:
    """fsync in a background thread (it releases the GIL), for overlapping it with a check."""
    return _pool().submit(os.fsync, fd)


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
    """Write pages (numbered from 1) into ``fd``.

    Pages arrive in the order the vault holds them, which for a captured history is
    scattered over the file; they are gathered (up to ``window`` pages, whose bytes
    are held anyway until written) and written sorted, consecutive pages in one
    ``pwritev``. Every few MiB the kernel is asked, from a background thread, to
    start writing back what is done, so the final fsync has little left to do.
    """

    WINDOW = 4096

    def __init__(self, fd: int, page_size: int, window: int = WINDOW):
        self.fd, self.page_size, self.window = fd, page_size, window
        self._pending: list[tuple[int, object]] = []
        self._since_writeback = 0
        self._lo: int | None = None
        self._hi = 0
        self._writeback: Future | None = None

    def add_many(self, pages: list[tuple[int, object]]) -> None:
        self._pending.extend(pages)
        if len(self._pending) >= self.window:
            self._write_pending()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        pending.sort(key=_first)
        run: list = []
        start = nxt = 0
        for pgno, data in pending:
            if run and pgno == nxt and len(run) < _IOV_MAX:
                run.append(data)
            else:
                if run:
                    self._write_run(start, run)
                run, start = [data], pgno
            nxt = pgno + 1
        self._write_run(start, run)
        if self._since_writeback >= _WRITEBACK_EVERY:
            self._start_writeback()

    def _write_run(self, start: int, run: list) -> None:
        off = (start - 1) * self.page_size
        pwritev_all(self.fd, run, off)
        end = off + len(run) * self.page_size
        self._lo = off if self._lo is None else min(self._lo, off)
        self._hi = max(self._hi, end)
        self._since_writeback += end - off

    def _start_writeback(self) -> None:
        if self._writeback is not None and not self._writeback.done():
            return  # the kernel is still at the last range: let it be
        lo, hi = self._lo or 0, self._hi
        self._since_writeback, self._lo, self._hi = 0, None, 0
        self._writeback = _pool().submit(_writeback_and_close, os.dup(self.fd), lo, hi - lo)

    def close(self) -> None:
        """Write what is pending (a writeback request still running holds its own descriptor)."""
        self._write_pending()


def _writeback_and_close(fd: int, offset: int, length: int) -> None:
    try:
        start_writeback(fd, offset, length)
    finally:
        os.close(fd)


def _first(item):
    return item[0]
