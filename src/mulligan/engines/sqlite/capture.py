"""Tailing a live SQLite database's WAL: every committed transaction, as it is seen.

One :class:`Tailer` per database, for the life of ``watch``. It keeps:

* two reader connections that take turns holding a read transaction, so at
  every moment one is held: a WAL frame we have not read yet can then never be
  overwritten (a WAL restart needs every reader off the read marks, and a
  reader on mark 0 blocks the backfill a restart needs). Taking turns, instead
  of holding one read for ever, lets an application's own FULL/RESTART/TRUNCATE
  checkpoint finish within one poll instead of waiting its whole busy timeout;
* a writer connection for our own short writes (sealing the WAL for our
  checkpoint, the identity generation, counter raises), each recognisable by
  the commit frame SQLite reports through the WAL hook;
* a checkpoint connection (PASSIVE, never waits);
* one descriptor each on the database, the ``-wal`` and the ``-shm`` file,
  opened once and closed only after every connection: closing any descriptor of
  a file this process holds POSIX locks on drops those locks.

New commits are found from the wal-index header in ``-shm`` (``mxFrame``, the
last commit frame SQLite validated), so no checksum is computed here: reading
a poll's new frames is one ``pread``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import apsw

from ...errors import DatabaseBusy, IntegrityError, MulliganError, NotADatabase, NotFound
from . import identity as ident_mod
from . import wal
from .files import cannot_open, resolved
from .locks import locked_message
from .reader import parse_header, sniff

SHM_DMS_BYTE = 128  # a connection holds a shared lock on this byte of -shm while it has the database open


class NotWal(MulliganError):
    kind = "not-wal"


class WalDamaged(IntegrityError):
    """The -wal file is shorter than its index says, and the WAL did not start over."""


class OwnWriteFailed(DatabaseBusy):
    """A write of the watcher's own into the database failed (a full disk, an I/O error). ``tail``
    holds the commits read under the write lock before it: the caller must still apply them."""

    def __init__(self, message: str, tail: "Poll", **kw):
        super().__init__(message, **kw)
        self.tail = tail


def _own_write_failure(path: str, what: str, exc: Exception, tail: "Poll") -> OwnWriteFailed:
    if isinstance(exc, apsw.FullError):
        msg = f"the disk holding {path} is full: the watcher's {what} could not be written"
        hint = "free space on that disk (the application cannot commit there either); capture goes on meanwhile"
    else:
        msg = f"the watcher's {what} in {path} failed: SQLite: {exc}"
        hint = "capture goes on meanwhile"
    return OwnWriteFailed(msg, tail, unchanged="nothing of the database was changed by it", hint=hint)


@dataclass
class Commit:
    frame: int
    db_pages: int
    pages: dict[int, bytes]
    seen: float
    by: str = "app"  # app | mulligan:<why>


@dataclass
class Poll:
    commits: list[Commit] = field(default_factory=list)
    restarted: bool = False  # the WAL started over since the last poll
    continuous: bool = True  # everything before the restart was captured and backfilled
    header: wal.IndexHeader | None = None
    more: bool = False  # committed frames remain unread: poll again before anything else
    # Pages of a commit too large to read at once, read so far: the first commit of a later
    # poll completes it (its pages win over these).
    part: dict[int, bytes] | None = None
    part_dropped: bool = False  # the pieces read before will not be completed: forget them


# What one poll reads at most: a commit larger than this (a migration, a VACUUM) is read in
# pieces, so the watcher's memory does not grow with the largest transaction.
POLL_MAX_BYTES = 16 << 20
# observe() reads every table's largest key again at least this often, whatever the pages say.
OBSERVE_ALL_EVERY = 5.0


@dataclass
class Observation:
    """Facts about the state a reader sees: what rollback detection compares."""

    target_id: str | None
    generation: int | None
    seq: dict[str, int]
    maxrow: dict[str, int]
    autoinc: set[str]
    time: float = 0.0

    def to_json(self) -> dict:
        return {"target_id": self.target_id, "generation": self.generation, "seq": self.seq,
                "maxrow": self.maxrow, "autoinc": sorted(self.autoinc)}

    @classmethod
    def from_json(cls, d: dict | None) -> "Observation | None":
        if not d:
            return None
        return cls(d.get("target_id"), d.get("generation"), dict(d.get("seq") or {}), dict(d.get("maxrow") or {}),
                   set(d.get("autoinc") or []))


def _ino(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


class Tailer:
    def __init__(self, path: str, busy_ms: int = 50):
        self.path = os.path.abspath(path)  # as configured (in messages; a link may change target)
        self.file = self.path  # the file it named at open(), every link followed: SQLite's files are next to it
        self.busy_ms = busy_ms
        self._readers: list[apsw.Connection] = []
        self._active = 0
        self._w: apsw.Connection | None = None
        self._ck: apsw.Connection | None = None
        self.db_fd: int | None = None
        self.wal_fd: int | None = None
        self.shm_fd: int | None = None
        self.page_size = 0
        self.salts: tuple[int, int] | None = None
        self.frame = 0  # last WAL frame captured in this WAL generation
        self.page_frames: dict[int, int] = {}  # page -> the WAL frame of its last captured version
        self.last: wal.IndexHeader | None = None
        self.own: dict[tuple, str] = {}  # (salts, commit frame) -> why, for our own writes
        self._own_frame = 0
        self.last_own: tuple | None = None
        self.overlay_frames: dict[int, int] = {}  # pgno -> WAL frame, of the last full_state()
        self._schema: tuple[int, list[str], set[str], dict[str, int]] | None = None
        # observe(): each table's largest key as last read, and the pages from its b-tree's root
        # to its rightmost leaf (None: not known, the key is read every time); the pages written
        # by the commits captured since (a table none of whose path pages were written kept its
        # largest key). None: read every table.
        self._maxrow: dict[str, int] = {}
        self._paths: dict[str, frozenset[int] | None] | None = None
        self._touched: set[int] = set()
        self._all_read_at = 0.0
        self.inodes: dict[str, tuple[int, int]] = {}
        self._turned_at: tuple | None = None  # the WAL (salts, mxFrame, nBackfill) at the last turn
        # Inside a commit read in pieces: the last frame read and the frame of each page so far.
        self._part_end = 0
        self._part_at: dict[int, int] = {}
        self.poll_max = POLL_MAX_BYTES

    # ---- lifecycle ------------------------------------------------------------
    def open(self) -> None:
        info = sniff(self.path)  # no SQLite lock is held yet: plain open/close is safe here
        self.file = resolved(self.path)
        if not info.wal_mode:
            raise NotWal(f"{self.path} is not in WAL mode: continuous capture needs it",
                         unchanged="nothing was captured",
                         hint="switch the database to WAL (PRAGMA journal_mode=WAL) in the application; "
                              "'mulligan snapshot' still works meanwhile")
        try:
            for _ in range(2):
                c = apsw.Connection(self.file, flags=apsw.SQLITE_OPEN_READWRITE)
                c.set_busy_timeout(2000)
                c.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are ours, on purpose
                self._readers.append(c)
            self._w = apsw.Connection(self.file, flags=apsw.SQLITE_OPEN_READWRITE)
            self._w.set_busy_timeout(self.busy_ms)
            self._w.set_wal_hook(self._wal_hook)
            self._ck = apsw.Connection(self.file, flags=apsw.SQLITE_OPEN_READWRITE)
            self._ck.execute("PRAGMA wal_autocheckpoint=0")
            for c in self._readers + [self._w, self._ck]:
                # Closing must never checkpoint: after a file was copied over the database, a
                # checkpoint on close would write our WAL frames into somebody else's content.
                c.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            self._begin(self._readers[0])
        except apsw.BusyError:
            self.close()  # first: no lock of ours is left for the probe below to drop
            held = locked_message(self.path)
            if held:
                raise DatabaseBusy(held[0], unchanged="nothing was captured",
                                   hint=f"{held[1]}; watch retries by itself") from None
            raise DatabaseBusy(f"{self.path} stayed locked", hint="watch retries by itself") from None
        except apsw.CantOpenError:
            self.close()
            raise cannot_open(self.path, "nothing was captured", "watch retries by itself") from None
        except apsw.Error as exc:
            self.close()
            raise NotADatabase(f"cannot open {self.path} for capture: {exc}") from None
        # The read transaction exists, so -wal and -shm exist. Open each once, for good.
        try:
            self.db_fd = os.open(self.file, os.O_RDONLY)
            self.wal_fd = os.open(self.file + "-wal", os.O_RDONLY)
            self.shm_fd = os.open(self.file + "-shm", os.O_RDONLY)
            self.inodes = {s: _ino(os.fstat(fd)) for s, fd in
                           (("", self.db_fd), ("-wal", self.wal_fd), ("-shm", self.shm_fd))}
        except OSError as exc:
            # Removed or replaced under us: close the connections (then any descriptor opened),
            # so a retry every few seconds leaks nothing.
            self.close()
            raise NotFound(f"cannot open {exc.filename or self.path} for capture: {exc.strerror}",
                           unchanged="nothing was captured", hint="watch retries by itself") from None

    def close(self) -> None:
        for c in self._readers + [self._w, self._ck]:
            if c is not None:
                try:
                    c.close()
                except apsw.Error:
                    pass
        self._readers, self._w, self._ck = [], None, None
        # Descriptors last: every connection is closed, no lock is left to drop.
        for fd in (self.db_fd, self.wal_fd, self.shm_fd):
            if fd is not None:
                os.close(fd)
        self.db_fd = self.wal_fd = self.shm_fd = None

    def _begin(self, conn: apsw.Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

    @staticmethod
    def _end(conn: apsw.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except apsw.Error:
            pass

    def _turn(self) -> None:
        """Begin a read on the other reader, then end the current one: one is always held."""
        nxt = 1 - self._active
        self._begin(self._readers[nxt])
        self._end(self._readers[self._active])
        self._active = nxt
        self._turned_at = None

    @property
    def reader(self) -> apsw.Connection:
        return self._readers[self._active]

    # ---- reading ----------------------------------------------------------------
    def header(self) -> wal.IndexHeader:
        h = wal.read_index_header(self.shm_fd)
        if h is None:
            raise DatabaseBusy(f"the wal-index of {self.path} cannot be read consistently", hint="watch retries by itself")
        return h

    def full_state(self, consume: Callable[[list[bytes]], None], restart: Callable[[], None]) -> tuple[int, wal.IndexHeader]:
        """Every page of the state at the last commit, under the held read transaction,
        handed to ``consume`` in batches (never all in memory).

        Main file overlaid by the latest frame of each page up to mxFrame; if the
        WAL restarted during the read (possible only while we hold read mark 0),
        ``restart`` is called and the read done again. Sets the capture position
        to that commit."""
        self.forget_part()
        for _ in range(10):
            restart()
            h = self.header()
            ps = h.page_size
            frames: dict[int, int] = {}
            count = 0
            nb = min(h.n_backfill, h.mx_frame)
            self.page_frames, self._paths = {}, None
            if h.mx_frame > nb:
                # Frames up to nBackfill are in the main file already (and after a file was copied
                # over the main file, SQLite's readers no longer apply them either). The pages past
                # it are read one by one below, not held: the WAL may hold gigabytes not backfilled.
                fr = wal.scan_commits(self.wal_fd, nb, h.mx_frame, ps, h.salts)
                if fr.bad:
                    if fr.short:
                        self._check_short(h)
                    self._turn()
                    continue
                for f, size, at in fr.commits:
                    self.page_frames.update(at)
                    frames.update(dict.fromkeys(at, f))
                    count = size
            overlay = self.page_frames
            raw = os.pread(self.db_fd, 100, 0)
            size_now = os.fstat(self.db_fd).st_size
            if not count:
                if not raw:
                    raise NotADatabase(f"{self.path} is empty")
                hdr = parse_header(raw, size_now, self.path)
                ps, count = hdr.page_size, hdr.page_count
            step = 256
            for start in range(1, count + 1, step):
                n = min(step, count - start + 1)
                blob = os.pread(self.db_fd, ps * n, (start - 1) * ps)
                if len(blob) < ps * n:
                    blob += bytes(ps * n - len(blob))
                pages = []
                for i in range(n):
                    f = overlay.get(start + i)
                    if f is None:
                        pages.append(blob[i * ps:(i + 1) * ps])
                    else:
                        pg = os.pread(self.wal_fd, ps, wal.frame_offset(f, ps) + wal.FRAME_HEADER)
                        pages.append(pg + bytes(ps - len(pg)))  # a short read: the check below reads again
                consume(pages)
            h2 = self.header()
            if h2.salts != h.salts or h2.mx_frame < h.mx_frame:
                self._turn()
                continue
            self.page_size, self.salts, self.frame, self.last = ps, h.salts, h.mx_frame, h
            self.overlay_frames = frames
            return count, h
        raise DatabaseBusy(f"the WAL of {self.path} kept restarting during the read", hint="watch retries by itself")

    def poll(self, bounded: bool = True) -> Poll:
        """Commits since the last poll, then move the held read forward past them.

        ``bounded``: at most about ``poll_max`` bytes of pages are read; ``more`` then says to
        poll again. The held read stays where it was until everything is read: while it is held,
        no checkpoint can backfill past it and the WAL cannot start over, so the frames not read
        yet stay."""
        h = self.header()
        res = Poll(header=h)
        if h.salts != self.salts:
            prev = self.last
            res.restarted = True
            # Normal only when every frame of the old WAL was both captured and backfilled.
            res.continuous = prev is not None and self.frame == prev.mx_frame and prev.n_backfill >= prev.mx_frame \
                and h.mx_frame >= 0
            self.salts, self.frame, self.page_frames, self._paths = h.salts, 0, {}, None
            res.part_dropped |= self.forget_part()
        if h.mx_frame < self.frame:  # cannot happen without a restart; treat it as one
            res.restarted, res.continuous = True, False
            self.frame, self.page_frames, self._paths = 0, {}, None
            res.part_dropped |= self.forget_part()
        if h.mx_frame > self.frame:
            where: dict[int, int] = {}
            fr = wal.read_commits(self.wal_fd, max(self.frame, self._part_end), h.mx_frame,
                                  self.page_size or h.page_size, h.salts, where=where,
                                  max_bytes=self.poll_max if bounded else None)
            if fr.short and not fr.commits:
                self._check_short(h)
            now = time.time()
            for f, size, pages in fr.commits:
                res.commits.append(Commit(f, size, pages, now, self.own.pop((h.salts, f), "app")))
            self._touched.update(where)  # pages the captured commits wrote (observe)
            self._touched.update(fr.part_at)
            if fr.part is not None:
                res.part = fr.part
                self._part_end = fr.part_end
                self._part_at.update(fr.part_at)
            else:
                if fr.commits and self._part_at:
                    # The pieces read before belong to the first commit; its own frames are later.
                    where = {**self._part_at, **where}
                if fr.commits:
                    self.forget_part()
                elif fr.bad:
                    res.part_dropped |= self.forget_part()
                self.frame = fr.last_frame
            self.page_frames.update(where)
            res.more = fr.more
        self.last = h
        if res.more:
            return res
        # Move the held read forward only when the WAL changed: with no new commit, no new
        # backfill and no restart, the read already sees the newest state, and an application's
        # checkpoint has nothing to wait for from us (it backfills first, which changes
        # nBackfill, and we move at the next poll). An idle database then costs one pread.
        mark = (h.salts, h.mx_frame, h.n_backfill)
        if mark != self._turned_at:
            self._turn()
            self._turned_at = mark
        return res

    def _check_short(self, h: wal.IndexHeader) -> None:
        """The -wal ended before the frames its index says are committed. A WAL that started
        over (a TRUNCATE checkpoint) has new salts by now; one that did not was cut short or
        damaged outside SQLite, and reading it again would never succeed."""
        now = self.header()
        if now.salts != h.salts or now.mx_frame < h.mx_frame:
            return  # it started over: the next read sees the new WAL
        size = os.fstat(self.wal_fd).st_size
        end = wal.frame_offset(h.mx_frame, h.page_size) + wal.FRAME_HEADER + h.page_size
        raise WalDamaged(f"{self.path}-wal is shorter than its index says ({size:,} bytes; its last committed "
                         f"frame, {h.mx_frame}, ends at {end:,}): it was cut short or damaged outside SQLite",
                         unchanged="every commit captured before it is in the vault",
                         hint="'mulligan restore NAME --latest --to PATH' gives the last state captured; the "
                              "application's database is likely damaged too (PRAGMA integrity_check)")

    def forget_part(self) -> bool:
        """Read the commit being read in pieces from its start again; True if one was."""
        was = bool(self._part_end)
        self._part_end, self._part_at = 0, {}
        return was

    # ---- our own writes and checkpoints ---------------------------------------------
    def _wal_hook(self, _conn, _db, nframes: int) -> int:
        self._own_frame = nframes
        return apsw.SQLITE_OK

    @contextmanager
    def sealed(self) -> Iterator[Poll]:
        """Hold the write lock: no commit can happen; yields the commits up to now."""
        assert self._w is not None
        try:
            self._w.execute("BEGIN IMMEDIATE")
        except apsw.BusyError:
            raise DatabaseBusy("the application holds the write lock", hint="tried again at the next poll") from None
        try:
            h = self.header()
            unread = h.mx_frame - (max(self.frame, self._part_end) if h.salts == self.salts else 0)
            if self._part_end or unread * (wal.FRAME_HEADER + h.page_size) > self.poll_max:
                # Everything is read under the lock at once: not with a large commit still to read.
                raise DatabaseBusy("a large commit is still being captured", hint="tried again at the next poll")
            yield self.poll(bounded=False)
        finally:
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")

    def checkpoint(self) -> dict:
        """Seal, capture the tail (returned), PASSIVE checkpoint, release. The caller stores the
        tail. A checkpoint that could not write (a full disk) is ``failed``, not raised: the
        tail must be stored all the same, and the WAL keeps every commit meanwhile."""
        failed = None
        with self.sealed() as tail:
            # The writer connection holds a read at the newest commit: backfill may reach it.
            self._end(self.reader)
            try:
                busy, log, done = self._ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            except apsw.BusyError:
                busy, log, done = 1, -1, -1
            except apsw.Error as exc:
                busy, log, done = 1, -1, -1
                failed = _own_write_failure(self.path, "checkpoint", exc, tail)
            # Take a read again before the write lock goes: fully backfilled means read mark 0,
            # which lets the next writer restart the WAL but blocks any backfill past us.
            self._begin(self.reader)
            self.last = h = self.header()
            # Taken under the write lock, after the tail was read whole: exactly at the last
            # captured commit, as a turn at this mark leaves it (observe reads only the tables
            # the commits since moved; it read every table after each checkpoint of ours).
            self._turned_at = (h.salts, h.mx_frame, h.n_backfill) if (h.salts, h.mx_frame) == (self.salts, self.frame) \
                else None
        return {"tail": tail, "busy": busy, "log": log, "checkpointed": done, "failed": failed}

    def truncate_wal(self) -> bool:
        """Checkpoint everything and empty the -wal (only when no other process uses the file:
        before letting go of a database whose path now names another file, so the stale -wal
        beside that path cannot be replayed into it)."""
        for c in self._readers:
            self._end(c)
        self._turned_at = None  # no read is held now: the next poll must take one
        try:
            busy, _log, _done = self._ck.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            return busy == 0
        except apsw.Error:
            return False

    def write(self, why: str, fn: Callable[[apsw.Connection], object]):
        """Our own short write transaction; its commit is tagged ``mulligan:<why>``.

        Returns (commits captured before it, fn's result)."""
        with self.sealed() as before:
            self._own_frame = 0
            try:
                result = fn(self._w)
                self._w.execute("COMMIT")
            except apsw.Error as exc:  # rolled back by sealed(); the commits read before it still count
                raise _own_write_failure(self.path, f"write ({why})", exc, before) from None
            if self._own_frame:
                self.last_own = (self.salts_now(), self._own_frame)
                self.own[self.last_own] = f"mulligan:{why}"
        return before, result

    def salts_now(self) -> tuple[int, int]:
        return self.header().salts

    def bump_generation(self) -> int | None:
        return self.write("generation", ident_mod.bump_generation)

    # ---- observing ------------------------------------------------------------------
    def observe(self) -> Observation:
        """Identity, generation and counters as the held read sees them.

        The largest key of a table is read again only when a page on the path from its b-tree's
        root to its rightmost leaf was written since it was last read (if none was, the same
        leaf ends the table, unchanged), and of every table when the read is not exactly at the
        last captured commit, after the schema changed, and every OBSERVE_ALL_EVERY seconds."""
        c = self.reader
        ident = ident_mod.read(c)
        schema_version = c.execute("PRAGMA schema_version").fetchone()[0]
        if self._schema is None or self._schema[0] != schema_version:
            tables, autoinc, roots = [], set(), {}
            for name, sql, root in c.execute("SELECT name, sql, rootpage FROM sqlite_master WHERE type='table'"):
                if name.startswith("sqlite_") or ident_mod.is_internal(name) or not sql:
                    continue
                upper = sql.upper()
                if "WITHOUT ROWID" in upper or upper.startswith("CREATE VIRTUAL"):
                    continue
                tables.append(name)
                roots[name] = int(root or 0)
                if "AUTOINCREMENT" in upper:
                    autoinc.add(name)
            self._schema = (schema_version, tables, autoinc, roots)
            self._paths = None
        _, tables, autoinc, roots = self._schema
        seq: dict[str, int] = {}
        if c.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchall():
            seq = {n: int(s) for n, s in c.execute("SELECT name, seq FROM sqlite_sequence") if s is not None}
        touched, self._touched = self._touched, set()
        now = time.monotonic()
        # The pages can be read as this read sees them (the main file overlaid by the captured
        # frames) only when it is exactly at the last captured commit.
        at = self._turned_at
        aligned = at is not None and at[0] == self.salts and at[1] == self.frame
        if aligned:
            h = self.header()
            aligned = h.salts == self.salts and h.mx_frame == self.frame
        paths = self._paths if aligned and now - self._all_read_at < OBSERVE_ALL_EVERY else None
        if paths is None:
            todo, maxrow = tables, {}
        else:
            todo = [t for t in tables if (p := paths.get(t)) is None or not p.isdisjoint(touched)]
            maxrow = dict(self._maxrow)
        maxrow.update(self._largest_keys(c, todo))
        self._maxrow = maxrow
        if aligned:
            paths = dict(paths) if paths is not None else {}
            for t in todo:
                paths[t] = self._rightmost_path(roots.get(t, 0))
            if self._paths is None or todo is tables:
                self._all_read_at = now
            self._paths = paths
        else:
            self._paths = None
        return Observation(ident.target_id if ident else None, ident.generation if ident else None,
                           seq, dict(maxrow), set(autoinc), time.time())

    @staticmethod
    def _largest_keys(c: apsw.Connection, tables: list[str]) -> dict[str, int]:
        """{table: its largest rowid} in one statement per 400 tables (SQLite allows 500 terms in
        a compound SELECT): one statement each cost 45 % more at 100 tables."""
        out = {}
        for i in range(0, len(tables), 400):
            names = tables[i : i + 400]
            sql = " UNION ALL ".join('SELECT (SELECT max(rowid) FROM "' + t.replace('"', '""') + '")' for t in names)
            for t, (v,) in zip(names, c.execute(sql)):
                out[t] = int(v or 0)
        return out

    def _rightmost_path(self, root: int) -> frozenset[int] | None:
        """The pages from a table b-tree's root to its rightmost leaf, read as the held read sees
        them (only when it is at the last captured commit); None when they do not look like one."""
        ps, path, pgno = self.page_size or (self.last.page_size if self.last else 0), [], root
        for _ in range(40):
            if pgno < 1 or not ps:
                return None
            f = self.page_frames.get(pgno)
            data = wal.read_frame_page(self.wal_fd, f, ps) if f is not None else \
                os.pread(self.db_fd, ps, (pgno - 1) * ps)
            off = 100 if pgno == 1 else 0
            if len(data) < off + 12:
                return None
            path.append(pgno)
            kind = data[off]
            if kind == 0x0D:  # a table b-tree's leaf: the rightmost one
                return frozenset(path)
            if kind != 0x05:  # not an interior table page
                return None
            pgno = int.from_bytes(data[off + 8 : off + 12], "big")  # its right-most child
        return None

    # ---- what changed on disk --------------------------------------------------------
    def replaced(self) -> list[str]:
        """Which of the database, -wal, -shm paths now name another file than ours."""
        out = []
        where = resolved(self.path)  # once a poll: each resolution is an lstat per folder of the path
        for suffix, ino in self.inodes.items():
            try:
                # The path itself (a link re-pointed is a file replaced); SQLite's files where
                # they now are for it.
                if _ino(os.stat(where + suffix if suffix else self.path)) != ino:
                    out.append(suffix or "db")
            except FileNotFoundError:
                out.append(suffix or "db")
        return out

    def others_attached(self) -> bool:
        """Does another process hold the database open (its shared lock on -shm's DMS byte)?"""
        lk = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, SHM_DMS_BYTE, 1, 0)
        try:
            got = fcntl.fcntl(self.shm_fd, fcntl.F_GETLK, lk)
        except OSError:
            return True
        return struct.unpack("hhqqi", got)[0] != fcntl.F_UNLCK

    def copied_since_restart(self) -> set[int] | None:
        """Pages a checkpoint has copied into the main file from the WAL as it is now (its frames
        up to nBackfill): what the main file holds of them came after the restart. None when the
        WAL started over again since the last poll (the next poll looks again)."""
        h = self.header()
        if h.salts != self.salts:
            return None
        if not h.n_backfill:
            return set()
        fr = wal.scan_commits(self.wal_fd, 0, h.n_backfill, self.page_size, h.salts)
        if fr.bad:
            return None
        return {p for _f, _size, pages in fr.commits for p in pages}

    def main_file_pages(self, pgnos: list[int]) -> dict[int, bytes]:
        out = {}
        for p in pgnos:
            out[p] = os.pread(self.db_fd, self.page_size, (p - 1) * self.page_size)
        return out

    def current_pages(self, pgnos: list[int]) -> list[bytes]:
        """The pages (ascending numbers) as last captured: from the WAL frame that held their
        last captured version, else from the main file, runs of neighbours in one read.
        Unverified: the caller compares each with what it captured (the WAL may have restarted
        since)."""
        ps, out, frames = self.page_size, [], self.page_frames
        i, n = 0, len(pgnos)
        while i < n:
            p = pgnos[i]
            f = frames.get(p)
            if f is not None:
                out.append(wal.read_frame_page(self.wal_fd, f, ps))
                i += 1
                continue
            j = i + 1
            while j < n and pgnos[j] == pgnos[j - 1] + 1 and pgnos[j] not in frames:
                j += 1
            blob = os.pread(self.db_fd, ps * (j - i), (p - 1) * ps)
            if len(blob) < ps * (j - i):  # past the end of the file: no match, but keep the order
                blob += bytes(ps * (j - i) - len(blob))
            out.extend(blob[k * ps : (k + 1) * ps] for k in range(j - i))
            i = j
        return out

    def db_stat(self) -> tuple[int, int]:
        st = os.fstat(self.db_fd)
        return (st.st_size, st.st_mtime_ns)


def plain_pages(path: str, batch_pages: int = 1024) -> Iterator[tuple[int, list[bytes]]]:
    """(page size, a batch of pages) of a database file read with plain I/O, WAL ignored, a
    batch at a time (for a file we must not open with SQLite: another inode at the path, whose
    -wal beside it may be ours). The last batch is padded with zeros to the header's count."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"no database at {path}") from None
    with fh:
        raw = fh.read(100)
        hdr = parse_header(raw, os.fstat(fh.fileno()).st_size, path)
        ps, left = hdr.page_size, hdr.page_count
        fh.seek(0)
        while left:
            k = min(left, batch_pages)
            blob = fh.read(k * ps).ljust(k * ps, b"\0")
            yield ps, [blob[i * ps:(i + 1) * ps] for i in range(k)]
            left -= k
