"""The record of applied recoveries, kept inside the database they were applied to.

A recovery applied twice would write every remapped lost row a second time
(under yet another new key). So the apply writes, in the same transaction as
the merge, one row into ``_mulligan_recoveries``: the fingerprint of the lost
changes, when, and the key map. Another apply of the same lost changes is
refused unless asked for. Kept in the database, the record commits or rolls
back with the merge, and an undo (which puts back the whole database) takes it
away with the merge. Like every ``_mulligan`` table it is never diffed or merged.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import apsw

from .merge_model import MergePlan

TABLE = "_mulligan_recoveries"


def find(conn: apsw.Connection, fingerprint: str) -> dict | None:
    """The earlier application of these lost changes, if any."""
    has = conn.execute("SELECT 1 FROM main.sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
    if not has:
        return None
    row = conn.execute(
        f"SELECT applied_at, writes, remapped, conflicts FROM main.{TABLE} WHERE fingerprint = ? ORDER BY id DESC",
        (fingerprint,),
    ).fetchone()
    if row is None:
        return None
    return {"applied_at": row[0], "writes": row[1], "remapped": row[2], "conflicts": row[3]}


def write(conn: apsw.Connection, fingerprint: str, plan: MergePlan) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS main.{TABLE}(id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, "
        "applied_at TEXT NOT NULL, writes INTEGER, remapped INTEGER, conflicts INTEGER, key_map TEXT)"
    )
    key_map = {t: [[list(a), list(b)] for a, b in m.items()] for t, m in plan.key_map.items()}
    conn.execute(
        f"INSERT INTO main.{TABLE}(fingerprint, applied_at, writes, remapped, conflicts, key_map) VALUES (?, ?, ?, ?, ?, ?)",
        (
            fingerprint,
            datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            len(plan.writes),
            sum(t.remapped for t in plan.tables.values()),
            len(plan.conflicts),
            json.dumps(key_map, default=str),
        ),
    )
