"""Where SQLite keeps a database's other files.

SQLite follows symbolic links to a database and keeps its ``-wal``, ``-shm`` and
``-journal`` next to the file the link resolves to. A deployment that links each
release's database path to one shared file is common; next to such a link there is
no ``-wal``, and a reader looking there would take every commit still in the WAL
for absent. Everything that opens those files by name resolves the path first.
"""

from __future__ import annotations

import os

from ...errors import MulliganError, NotFound, StorageError


def resolved(path: str) -> str:
    """The database file ``path`` names, every symbolic link followed (as SQLite does)."""
    return os.path.realpath(path)


def side_file(path: str, suffix: str) -> str:
    """The ``-wal``, ``-shm`` or ``-journal`` (``suffix``) of the database at ``path``."""
    return resolved(path) + suffix


def cannot_open(path: str, unchanged: str, then: str) -> MulliganError:
    """The error for SQLite's "unable to open database file" on a database that is there:
    usually a folder Mulligan cannot write into (a read-only mount, another user's folder).
    Reading a WAL database needs its -shm beside it, which SQLite creates when missing."""
    folder = os.path.dirname(resolved(path)) or "."
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(folder, os.W_OK):
        why = "is on a read-only file system" if read_only else "is in a folder this user cannot write"
        return StorageError(
            f"{path} {why}: SQLite cannot open it there (a WAL database needs its -shm beside it, "
            "created on first open; a stamp or a checkpoint writes the file itself)",
            unchanged=unchanged,
            hint=f"mount it read-write, or run as a user who can write {folder}; {then}",
        )
    return NotFound(f"cannot open {path}", unchanged=unchanged, hint="check the path and its permissions")
