"""A consistent state of a live SQLite database, read as pages, without stopping writers.

WAL mode: a read transaction is held for the whole read. While it is held,

* if it uses a WAL read mark, the WAL is never restarted (only appended to) and
  a checkpoint copies into the main file only frames at or below that mark;
* if it holds read mark 0 (the WAL was fully checkpointed when it began), no
  checkpoint may write into the main file at all, though a writer may restart
  the WAL with new salts.

Either way, "main file overlaid with the latest frame of each page up to the
last valid commit frame" is the state at that commit, as long as the WAL was not
restarted *while* we read it. The WAL header is read again after the last page
is read; if its salts changed, the read is done again (the main file is static
in that case). A torn read of a main-file page a checkpoint is writing does not
matter: its newer version is in the WAL and overlays it.

Rollback-journal mode: the read transaction holds a SHARED lock, so writers
wait until the read ends (the "writer pause", reported in the result).

POSIX-lock trap: closing any descriptor of the database file in this process
drops this process's SQLite locks on it. The descriptors used here are opened
before the connection and closed after it.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from typing import Iterator

import apsw

from ...errors import DatabaseBusy, IntegrityError, NotADatabase, NotFound
from ...model import PageBatch
from . import wal, walindex
from .files import cannot_open, resolved
from .locks import locked_message

SQLITE_MAGIC = b"SQLite format 3\x00"
BATCH = 512


@dataclass
class HeaderInfo:
    page_size: int
    page_count: int
    change_counter: int
    wal_mode: bool


def parse_header(raw: bytes, file_size: int, path: str) -> HeaderInfo:
    if len(raw) < 100 or not raw.startswith(SQLITE_MAGIC):
        raise NotADatabase(
            f"{path} is not a SQLite database",
            unchanged="nothing was read or written",
            hint="check the path; Mulligan protects SQLite 3 database files",
        )
    ps = struct.unpack(">H", raw[16:18])[0]
    ps = 65536 if ps == 1 else ps
    if ps < 512 or ps & (ps - 1):
        raise NotADatabase(f"{path} has an invalid page size ({ps}); it is not a usable SQLite database")
    change = struct.unpack(">I", raw[24:28])[0]
    in_header = struct.unpack(">I", raw[28:32])[0]
    valid_for = struct.unpack(">I", raw[92:96])[0]
    count = in_header if (in_header and valid_for == change) else file_size // ps
    return HeaderInfo(ps, count, change, raw[18] == 2 and raw[19] == 2)


def sniff(path: str) -> HeaderInfo:
    """Check a file is a SQLite database (do not call while holding SQLite locks on it)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(100)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise NotFound(f"no database at {path}", hint="check the path") from None
    except IsADirectoryError:
        raise NotADatabase(f"{path} is a folder, not a SQLite database") from None
    except PermissionError:
        raise NotFound(f"cannot read {path}: permission denied", hint="run as a user that can read the database") from None
    if size == 0:
        raise NotADatabase(f"{path} is an empty file, not a SQLite database", unchanged="nothing was read or written")
    return parse_header(raw, size, path)


@dataclass
class PageState:
    """The pages of one committed state, readable while the read transaction is held."""

    path: str
    page_size: int
    page_count: int
    journal_mode: str
    meta: dict = field(default_factory=dict)
    _reader: "ConsistentReader | None" = None

    def batches(self, size: int = BATCH) -> Iterator[PageBatch]:
        assert self._reader is not None
        yield from self._reader._batches(self, size)


class StateMoved(DatabaseBusy):
    """The WAL was restarted under the read; read again."""


class ConsistentReader:
    """Context manager: ``with ConsistentReader(path) as state: state.batches()``."""

    def __init__(self, path: str, busy_timeout_ms: int = 5000):
        self.path = os.path.abspath(path)
        self._file = self.path
        self.busy_timeout_ms = busy_timeout_ms
        self._db_fd: int | None = None
        self._wal_fd: int | None = None
        self._shm_fd: int | None = None
        self._conn: apsw.Connection | None = None
        self._began = 0.0

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> PageState:
        sniff(self.path)  # before any SQLite lock is held: opening/closing here is safe
        self._file = resolved(self.path)  # a link's target, once: where SQLite keeps the -wal
        self._db_fd = os.open(self._file, os.O_RDONLY)
        for suffix, attr in (("-wal", "_wal_fd"), ("-shm", "_shm_fd")):
            try:
                setattr(self, attr, os.open(self._file + suffix, os.O_RDONLY))
            except FileNotFoundError:
                pass
        try:
            return self._begin()
        except BaseException:
            self._close()
            raise

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("ROLLBACK")
            except apsw.Error:
                pass
            self._conn.close()
            self._conn = None
        # Descriptors last: closing them earlier would drop the connection's locks.
        for fd in (self._wal_fd, self._shm_fd, self._db_fd):
            if fd is not None:
                os.close(fd)
        self._wal_fd = self._shm_fd = self._db_fd = None

    def _begin(self) -> PageState:
        try:
            conn = apsw.Connection(self._file, flags=apsw.SQLITE_OPEN_READWRITE)
            self._conn = conn
            conn.set_busy_timeout(self.busy_timeout_ms)
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0].lower()
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except apsw.NotADBError:
            raise NotADatabase(f"{self.path} is not a SQLite database", unchanged="nothing was read or written") from None
        except apsw.BusyError:
            held = locked_message(self.path, self._db_fd)  # a descriptor kept open: no lock of ours dropped
            if held:
                raise DatabaseBusy(held[0], unchanged="nothing was read or written", hint=held[1]) from None
            raise DatabaseBusy(
                f"{self.path} stayed locked by another process for {self.busy_timeout_ms / 1000:.0f} s",
                unchanged="nothing was read or written",
                hint="run the command again; if it keeps failing, find the process holding a long write transaction",
            ) from None
        except apsw.CantOpenError:
            raise cannot_open(self.path, "nothing was read or written", "or snapshot a copy made where it can be") from None
        except apsw.CorruptError:
            raise IntegrityError(f"{self.path} is damaged (SQLite reports corruption)", unchanged="nothing was written") from None
        self._began = time.monotonic()
        state = PageState(self.path, 0, 0, mode, _reader=self)
        if mode == "wal" and self._wal_fd is None:
            # The WAL appeared after our descriptors were opened (first write since open):
            # opening one now is safe (closing it later, after the connection, is what matters).
            try:
                self._wal_fd = os.open(self._file + "-wal", os.O_RDONLY)
                if self._shm_fd is None:
                    self._shm_fd = os.open(self._file + "-shm", os.O_RDONLY)
            except FileNotFoundError:
                pass
        self._plan(state)
        return state

    # -- planning and reading -------------------------------------------------
    def _plan(self, state: PageState) -> None:
        raw = os.pread(self._db_fd, 100, 0)
        size = os.fstat(self._db_fd).st_size
        hdr = parse_header(raw, size, self.path) if size else None
        scan = self._scan_wal()
        if hdr is None and not scan.commits:
            raise NotADatabase(f"{self.path} is empty", unchanged="nothing was read or written")
        state.page_size = scan.header.page_size if scan.commits else hdr.page_size
        if scan.commits:
            state.page_count = scan.commits[-1].db_pages
            overlay = wal.page_map(scan.commits)
        else:
            state.page_count = hdr.page_count
            overlay = {}
        self._scan, self._overlay = scan, overlay
        state.meta = {
            "journal_mode": state.journal_mode,
            "wal_salts": list(scan.header.salts) if scan.header else None,
            "wal_frame": scan.last_commit_frame,
            "wal_commits": len(scan.commits),
            "wal_checkpoint_seq": scan.header.checkpoint_seq if scan.header else None,
            "wal_scan": getattr(self, "_scan_kind", None) if scan.header else None,
        }

    def _scan_wal(self) -> wal.WalScan:
        if self._wal_fd is None:
            return wal.WalScan(None, [])
        header = wal.read_header(self._wal_fd)
        if header is None:
            return wal.WalScan(None, [])
        # The wal-index is read without a lock: a writer committing meanwhile can make one look
        # inconsistent with the frames. Look again a few times before walking the checksum chain.
        for _ in range(3) if self._shm_fd is not None else ():
            idx = walindex.read(self._shm_fd)
            if idx is None or idx.salts != header.salts or idx.page_size != header.page_size:
                break
            commits = walindex.scan_headers(self._wal_fd, header, idx.mx_frame)
            if commits and commits[-1].frame == idx.mx_frame:
                self._scan_kind = "wal-index"
                return wal.WalScan(header, commits, next_frame=idx.mx_frame + 1)
        self._scan_kind = "checksum-chain"
        return wal.scan(self._wal_fd)  # no usable wal-index: walk the checksum chain

    def _wal_restarted(self) -> bool:
        if self._wal_fd is None or self._scan.header is None:
            return False
        h = wal.read_header(self._wal_fd)
        return h is None or h.salts != self._scan.header.salts

    def _batches(self, state: PageState, size: int) -> Iterator[PageBatch]:
        """Stream the pages; raise :class:`StateMoved` at the end if the WAL was
        restarted during the read (the caller reads again: nothing it stored is
        referenced until its manifest is written)."""
        yield from self._read_all(state, size)
        if self._wal_restarted():
            self._plan(state)
            raise StateMoved(f"the WAL of {self.path} was restarted during the read")
        self._finish(state)

    def _finish(self, state: PageState) -> None:
        if state.journal_mode != "wal":
            state.meta["writer_pause_ms"] = round((time.monotonic() - self._began) * 1000, 1)

    def _read_all(self, state: PageState, size: int) -> Iterator[PageBatch]:
        ps, n = state.page_size, state.page_count
        overlay = self._overlay
        for start in range(1, n + 1, size):
            count = min(size, n - start + 1)
            raw = os.pread(self._db_fd, ps * count, (start - 1) * ps)
            if len(raw) < ps * count:
                raw = raw + bytes(ps * count - len(raw))
            patched = {}
            if overlay:
                for i in range(count):
                    fr = overlay.get(start + i)
                    if fr is not None:
                        patched[i] = wal.read_frame_page(self._wal_fd, fr, ps)
            yield PageBatch(raw, ps, count, patched)
