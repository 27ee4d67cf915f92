"""Where SQLite keeps a database's other files.

SQLite follows symbolic links to a database and keeps its ``-wal``, ``-shm`` and
``-journal`` next to the file the link resolves to. A deployment that links each
release's database path to one shared file is common; next to such a link there is
no ``-wal``, and a reader looking there would take every commit still in the WAL
for absent. Everything that opens those files by name resolves the path first.
"""

from __future__ import annotations

import os


def resolved(path: str) -> str:
    """The database file ``path`` names, every symbolic link followed (as SQLite does)."""
    return os.path.realpath(path)


def side_file(path: str, suffix: str) -> str:
    """The ``-wal``, ``-shm`` or ``-journal`` (``suffix``) of the database at ``path``."""
    return resolved(path) + suffix
