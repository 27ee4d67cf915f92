"""The identity stamp inside a protected SQLite database.

One small table, ``_mulligan_identity``, with one row: which target this
database is, its environment, when it was stamped, a generation counter the
watcher and in-place restores advance, and whether it is an original or a
restored copy. Because the stamp travels inside the file, a copy of production
says it is production's copy; restores re-stamp it so it can never pass for
the original.
"""

from __future__ import annotations

import apsw

from ...errors import DatabaseBusy
from ...model import Identity

TABLE = "_mulligan_identity"
PREFIX = "_mulligan"

_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    target_id TEXT NOT NULL,
    name TEXT NOT NULL,
    env TEXT NOT NULL,
    stamped_at TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'original',
    source_target_id TEXT,
    source_snapshot TEXT
)"""

_COLS = "target_id, name, env, stamped_at, generation, kind, source_target_id, source_snapshot"


def is_internal(table: str) -> bool:
    return table.lower().startswith(PREFIX)


def read(conn: apsw.Connection) -> Identity | None:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchall()
    if not exists:
        return None
    row = conn.execute(f"SELECT {_COLS} FROM {TABLE} WHERE id = 1").fetchone()
    return Identity(*row) if row else None


def write(conn: apsw.Connection, ident: Identity) -> None:
    """Write the stamp in its own short write transaction."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except apsw.BusyError:
        raise DatabaseBusy(
            "the database stayed locked by another writer",
            unchanged="the identity stamp was not written",
            hint="run the command again",
        ) from None
    try:
        conn.execute(_DDL)
        conn.execute(
            f"INSERT OR REPLACE INTO {TABLE} (id, {_COLS}) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ident.target_id, ident.name, ident.env, ident.stamped_at, ident.generation, ident.kind,
             ident.source_target_id, ident.source_snapshot),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (a full disk at COMMIT)
            conn.execute("ROLLBACK")
        raise


def bump_generation(conn: apsw.Connection) -> int | None:
    """Advance the generation inside the caller's transaction; return the new value."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchall()
    if not exists:
        return None
    conn.execute(f"UPDATE {TABLE} SET generation = generation + 1 WHERE id = 1")
    row = conn.execute(f"SELECT generation FROM {TABLE} WHERE id = 1").fetchone()
    return row[0] if row else None
