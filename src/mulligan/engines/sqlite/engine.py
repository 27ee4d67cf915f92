"""The SQLite engine."""

from __future__ import annotations

import errno
import os
from concurrent.futures import wait
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import apsw

from ... import fsio
from ...parallel import fan_out
from ...runtime import tune_allocator
from ...errors import DatabaseBusy, IntegrityError, NotADatabase, StorageError
from ...model import Identity
from ..base import Engine
from . import identity as ident_mod
from .files import cannot_open
from .locks import locked_message
from .reader import ConsistentReader, sniff

SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def open_conn(path: str, busy_ms: int = 5000, readonly: bool = False) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    try:
        conn = apsw.Connection(path, flags=flags)
    except apsw.CantOpenError:
        raise NotADatabase(f"cannot open {path} as a SQLite database") from None
    conn.set_busy_timeout(busy_ms)
    return conn


class SqliteEngine(Engine):
    name = "sqlite"

    def check(self, location: str) -> dict:
        h = sniff(location)
        return {"page_size": h.page_size, "page_count": h.page_count, "wal": h.wal_mode}

    def read_identity(self, location: str) -> Identity | None:
        sniff(location)
        conn = open_conn(location)
        try:
            return ident_mod.read(conn)
        except apsw.NotADBError:
            raise NotADatabase(f"{location} is not a SQLite database", unchanged="nothing was read or written") from None
        except apsw.CantOpenError:
            raise cannot_open(location, "nothing was read or written", "or snapshot a copy made where it can be") from None
        except apsw.BusyError:
            pass
        finally:
            conn.close()
        # Closed first: this process holds no lock on the file for the probe to drop (locks.py).
        held = locked_message(location)
        if held:
            raise DatabaseBusy(held[0], unchanged="nothing was read or written", hint=held[1])
        raise DatabaseBusy(f"{location} stayed locked by another process", unchanged="nothing was read or written",
                           hint="run the command again; if it keeps failing, look for a process holding a long transaction")

    def write_identity(self, location: str, identity: Identity) -> None:
        sniff(location)
        conn = open_conn(location)
        try:
            ident_mod.write(conn, identity)
        except apsw.NotADBError:
            raise NotADatabase(f"{location} is not a SQLite database") from None
        except apsw.CantOpenError:
            raise cannot_open(location, "the database was not stamped",
                              "protect writes the identity row once, then reads only") from None
        except apsw.ReadOnlyError:
            raise StorageError(
                f"{location} is read-only", unchanged="the database was not stamped", hint="run as a user that can write it"
            ) from None
        except apsw.FullError:
            raise StorageError(
                f"the disk holding {location} is full", unchanged="the database was not stamped",
                hint="free space on that disk, then run the command again",
            ) from None
        finally:
            conn.close()

    def consistent_state(self, location: str):
        return ConsistentReader(location)

    def check_integrity(self, location: str, full: bool = False) -> list[str]:
        conn = open_conn(location)
        try:
            pragma = "integrity_check" if full else "quick_check"
            rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}")]
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            return [f"SQLite cannot read the database: {exc}"]
        finally:
            conn.close()
        return [] if rows == ["ok"] else rows

    def write_new(
        self,
        location: str,
        page_size: int,
        page_count: int,
        shards: Sequence[Iterable[list[tuple[int, bytes]]]],
        progress=None,
        identity: Identity | None = None,
        check: str = "quick",
    ) -> None:
        """Write batches of (page number, bytes) to a temporary file beside ``location``, fsync,
        check (``check``: ``quick``, ``full`` or ``none``), stamp, rename. The batches come in
        ``shards``, each page in one: the first is written by this process, each other one by
        a child process of its own at the same time (parallel.py)."""
        tune_allocator()  # pages stream through large buffers: keep them in the heap
        final = Path(location)
        tmp = final.with_name(f".{final.name}.mulligan-{os.getpid()}-{os.urandom(3).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            sync = None
            try:
                fsio.reserve(fd, page_count * page_size)  # a full disk shows here, before any page is written
                # The pages each process holds to write in order: together what one would hold.
                window = max(256, fsio.RunWriter.WINDOW // len(shards))

                def write(batches):
                    def job(report):
                        out = fsio.RunWriter(fd, page_size, window)
                        for batch in batches:
                            out.add_many(batch)
                            report(len(batch))
                        out.close()
                    return job

                fan_out([write(batches) for batches in shards], progress)
                # The check reads the file from the page cache while the fsync writes it out.
                sync = fsio.fsync_async(fd)
                problems = [] if check == "none" else self.check_integrity(str(tmp), full=check == "full")
                sync.result()
            finally:
                if sync is not None:
                    wait([sync])
                os.close(fd)
            if problems:
                # Every page matched its hash on the way out of the vault: the state itself was
                # damaged when it was taken. SQLite's report spans lines; the error is one.
                first = "; ".join(line.strip() for line in problems[0].splitlines()
                                  if line.strip() and not line.startswith("*** in database"))
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise IntegrityError(
                    f"the restored database fails {'integrity_check' if check == 'full' else 'quick_check'}: {first}{more}; "
                    "every page matched its hash, so the database was already damaged when this restore point was taken",
                    unchanged=f"nothing was written at {location}",
                    hint="restore an earlier point ('mulligan snapshots NAME' lists them), or add --check none to write "
                         "this one anyway and salvage its rows with sqlite3's .recover",
                )
            if identity is not None:
                conn = open_conn(str(tmp))
                try:
                    ident_mod.write(conn, identity)
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except (apsw.CorruptError, apsw.NotADBError) as exc:
                    raise IntegrityError(
                        f"the restored database cannot be stamped as a copy: SQLite: {exc}; its pages matched their "
                        "hashes, so the database was already damaged when this restore point was taken",
                        unchanged=f"nothing was written at {location}",
                        hint="restore an earlier point ('mulligan snapshots NAME' lists them)",
                    ) from None
                finally:
                    conn.close()
            _fsync_path(tmp)
            try:
                os.link(tmp, final)
            except FileExistsError:
                from ...errors import GuardRefused

                raise GuardRefused(
                    f"{location} appeared while the restore was running",
                    unchanged=f"the file at {location} was not touched",
                    hint="choose a new path",
                ) from None
            _fsync_path(final.parent)
        except (apsw.FullError, apsw.IOError) as exc:
            # SQLite's own writes (the identity stamp, its WAL and checkpoint) fail this way.
            if isinstance(exc, apsw.FullError):
                raise StorageError(
                    "the disk is full writing the restored database (SQLite: database or disk is full)",
                    unchanged=f"nothing was left at {location}; the vault is unchanged",
                    hint=f"free space on the disk holding {final.parent}, then run the restore again",
                ) from None
            raise StorageError(f"cannot write {location}: SQLite: {exc}", unchanged=f"nothing was left at {location}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StorageError(
                    f"the disk is full writing the restored database ({exc.strerror})",
                    unchanged=f"nothing was left at {location}; the vault is unchanged",
                    hint=f"free space on the disk holding {final.parent}, then run the restore again",
                ) from None
            raise StorageError(f"cannot write {location}: {exc.strerror}", unchanged=f"nothing was left at {location}") from None
        finally:
            for suffix in ("",) + SIDE_SUFFIXES:
                try:
                    os.unlink(str(tmp) + suffix)
                except FileNotFoundError:
                    pass

    @contextmanager
    def connection(self, location: str):
        conn = open_conn(location)
        try:
            yield conn
        finally:
            conn.close()


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
