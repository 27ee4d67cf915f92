"""Who holds a SQLite database's file locks (POSIX advisory locks, as SQLite's unix VFS takes them).

Closing any descriptor of a file drops every POSIX lock the process holds on it: given no
descriptor, these open and close one, so they are called only where this process holds no
SQLite lock on the file; otherwise pass one that stays open.
"""

from __future__ import annotations

import fcntl
import os
import struct

SHARED_FIRST = 0x40000002  # SQLite's shared-lock range: readers hold read locks on it
SHARED_SIZE = 510


def exclusive_holder(path: str, fd: int | None = None) -> tuple[int, str, bool] | None:
    """(pid, command line, WAL mode) of a process holding the database exclusively (a write
    lock on the shared-lock range), or None. A WAL database is held so for good by an
    application that set ``PRAGMA locking_mode=EXCLUSIVE`` (in normal locking only for a moment,
    a recovery); a rollback-journal database by a writer while it commits, or for the whole of a
    ``BEGIN EXCLUSIVE`` transaction."""
    own = fd is None
    try:
        if own:
            fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        lk = struct.pack("hhqqi", fcntl.F_RDLCK, os.SEEK_SET, SHARED_FIRST, SHARED_SIZE, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, lk))
        header = os.pread(fd, 20, 0)
    except OSError:
        return None
    finally:
        if own:
            os.close(fd)
    if kind != fcntl.F_WRLCK or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return pid, cmd, len(header) == 20 and header[18] == 2  # file format 2: WAL


def locked_message(path: str, fd: int | None = None) -> tuple[str, str] | None:
    """(message, hint) when the database is held exclusively by another process."""
    held = exclusive_holder(path, fd)
    if held is None:
        return None
    pid, cmd, wal_mode = held
    who = f"process {pid}" + (f" ({cmd[:80]})" if cmd else "")
    if wal_mode:
        return (f"{path} is held exclusively by {who}",
                "the application set PRAGMA locking_mode=EXCLUSIVE, which lets no other process read the database; "
                "set it back to NORMAL (the default) in the application")
    return (f"{path} is locked for writing by {who}",
            "run the command again; if it keeps failing, that process holds a long write transaction")
