"""Replacing a database's content in place, through SQLite, and telling whose commit came last.

Replacement goes through the backup API into the target (``Connection.backup``,
one ``step(-1)``: one write transaction). A connection the application holds
open sees the new content at its next read; nothing is swapped under it, so
its later writes land in the real file instead of an unlinked one. The target
keeps its own identity: the source is stamped with it, generation advanced,
before the copy, so the stamp arrives in the same transaction as the data.

The commit marker is a cheap fingerprint of "the last commit" read from the
files without any SQLite lock:

* WAL with committed frames: the WAL salts, the last valid commit frame and
  its running checksum. A new commit changes it; a mere reader does not (it
  never writes the -wal; at most it creates an empty one).
* otherwise: the header's file change counter (bumped by every commit in
  rollback-journal mode), the file size and the main file's mtime in ns.

A checkpoint changes the marker without changing content; the callers then
compare content digests (ops/liveuse.py). Both functions here open and close
the database file: never call them in a process that holds SQLite locks on
it (POSIX locks belong to the process; closing any descriptor drops them).
"""

from __future__ import annotations

import dataclasses
import os
import struct
import time

import apsw

from ...errors import DatabaseBusy, IntegrityError, MulliganError, StorageError
from ...model import Identity
from . import identity as ident_mod
from . import wal as wal_mod
from .files import side_file
from .reader import sniff


def commit_marker(path: str) -> dict:
    """The fingerprint of the last commit (see module docstring)."""
    info = sniff(path)
    st = os.stat(path)
    with open(path, "rb") as fh:
        counter = struct.unpack(">I", fh.read(28)[24:28])[0]
    marker = {"counter": counter, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "wal": None,
              "journal": "wal" if info.wal_mode else "rollback"}
    scan = _wal_scan(path)
    if scan is not None and scan.commits:
        last = scan.commits[-1]
        marker["wal"] = {"salts": list(scan.header.salts), "frame": last.frame, "cksum": list(scan.cksum)}
        # The main file is rewritten by checkpoints, which do not change content: with
        # committed frames present, the last commit is fully named by the WAL.
        marker.update(counter=None, size=None, mtime_ns=None)
    return marker


def last_write(path: str) -> tuple[float, str]:
    """(time, what) of the newest write to the database's content files.

    The -wal counts only when it holds committed frames (a reader may create an
    empty one); the -shm never counts (readers write their read marks there).
    """
    newest, what = os.stat(path).st_mtime, "database file"
    scan = _wal_scan(path)
    if scan is not None and scan.commits:
        m = os.stat(side_file(path, "-wal")).st_mtime
        if m > newest:
            newest, what = m, "write-ahead log"
    journal = side_file(path, "-journal")
    if os.path.exists(journal) and os.path.getsize(journal) > 0:
        m = os.stat(journal).st_mtime
        if m > newest:
            newest, what = m, "rollback journal"
    return newest, what


def _wal_scan(path: str):
    try:
        fd = os.open(side_file(path, "-wal"), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return wal_mod.scan(fd)
    finally:
        os.close(fd)


def journal_mode_and_page_size(path: str) -> tuple[str, int]:
    info = sniff(path)
    return ("wal" if info.wal_mode else "rollback"), info.page_size


@dataclasses.dataclass
class Replaced:
    identity_before: Identity | None
    identity_after: Identity
    pages: int
    seconds: float


def replace_content(target_path: str, source_path: str, busy_ms: int = 10000) -> Replaced:
    """Copy ``source_path`` (a scratch file Mulligan owns) over ``target_path`` in one transaction.

    The scratch file is first stamped with the target's own identity, generation
    advanced past the target's current one, so identity and data arrive together.
    Raises without changing the target when anything fails before the copy commits.
    """
    started = time.monotonic()
    dest = apsw.Connection(target_path, flags=apsw.SQLITE_OPEN_READWRITE)
    dest.set_busy_timeout(busy_ms)
    try:
        before = ident_mod.read(dest)
        src = apsw.Connection(source_path, flags=apsw.SQLITE_OPEN_READWRITE)
        src.set_busy_timeout(busy_ms)
        try:
            if before is not None:
                src_ident = ident_mod.read(src)
                floor = max(before.generation, src_ident.generation if src_ident else 0)
                after = dataclasses.replace(before, generation=floor + 1)
                ident_mod.write(src, after)
            else:
                after = None
            # The target keeps its journal mode: page 1 of the copy carries the WAL flag.
            dest_mode = dest.execute("PRAGMA journal_mode").fetchall()[0][0].lower()
            src.execute(f"PRAGMA journal_mode={'wal' if dest_mode == 'wal' else 'delete'}").fetchall()
            pages = src.execute("PRAGMA page_count").fetchall()[0][0]
            try:
                with dest.backup("main", src, "main") as b:
                    b.step(-1)
            except apsw.BusyError:
                raise DatabaseBusy(
                    f"{target_path} stayed locked by another writer for {busy_ms / 1000:.0f} s",
                    unchanged=f"{target_path} was not changed",
                    hint="find the process holding a long write transaction, then run the command again",
                ) from None
            except apsw.ReadOnlyError:
                raise StorageError(
                    f"{target_path} cannot be written (read-only, or a WAL database with another page size)",
                    unchanged=f"{target_path} was not changed",
                    hint="run as a user that can write it; check the page sizes of the database and the restore point",
                ) from None
        finally:
            src.close()
        now = ident_mod.read(dest)
        problems = [r[0] for r in dest.execute("PRAGMA quick_check")]
    finally:
        dest.close()
    if problems != ["ok"]:
        raise IntegrityError(
            f"{target_path} fails quick_check after the replacement: {problems[0]}",
            hint="put the previous state back with 'mulligan undo'",
        )
    if after is not None and (now is None or now.generation != after.generation or now.target_id != after.target_id):
        raise MulliganError(
            f"{target_path} does not carry the expected identity after the replacement",
            hint="another process may have written it at the same moment; inspect it, then 'mulligan undo' if needed",
        )
    return Replaced(before, now or after, pages, time.monotonic() - started)
