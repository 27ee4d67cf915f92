"""Whose is each lost row: the user it belongs to, as LOST knew it.

The owner of a row is a configured owner column, or found by following
foreign keys up to the users table (configured, or recognised by name); rows
of the users table own themselves. It is evaluated where the row lived (LOST,
or BASE for a row LOST deleted), before any remapping, then translated through
the users table's key map so support can tell each user where their data is.
"""

from __future__ import annotations

from collections import deque

import apsw

from .merge_model import MergePlan
from .merge_diff import LostChanges, open_pair
from .merge_schema import ForeignKey, Schema, q

USERS_TABLES = ("auth_user", "users", "accounts", "user", "account")
LABEL_COLUMNS = ("username", "email", "login", "name")


def find_users_table(schema: Schema, configured: str | None = None) -> str | None:
    if configured:
        return configured if configured in schema.tables else None
    for name in USERS_TABLES:
        if name in schema.tables:
            return name
    return None


def owner_paths(schema: Schema, users: str, owner_columns: dict[str, str]) -> dict[str, list[ForeignKey]]:
    """For each table, the shortest chain of foreign keys leading to ``users``."""
    paths: dict[str, list[ForeignKey]] = {users: []}
    for name, info in schema.tables.items():
        if name == users:
            continue
        first = [fk for fk in info.fks if fk.parent in schema.tables and len(fk.columns) == 1]
        if name in owner_columns:
            first = [fk for fk in first if fk.columns[0] == owner_columns[name]]
        seen = {name}
        queue = deque(([fk], fk.parent) for fk in first)
        while queue:
            chain, table = queue.popleft()
            if table == users:
                paths[name] = chain
                break
            if table in seen or len(chain) >= 4:
                continue
            seen.add(table)
            for fk in schema.tables[table].fks:
                if fk.parent in schema.tables and len(fk.columns) == 1:
                    queue.append((chain + [fk], fk.parent))
    return paths


def owners(
    base_path: str,
    lost_path: str,
    lost: LostChanges,
    plan: MergePlan,
    *,
    users_table: str | None = None,
    owner_columns: dict[str, str] | None = None,
) -> dict[tuple[str, tuple], dict]:
    """(table, lost key) -> {"user": key in LOST, "now": key in CURRENT or None, "label": ...}."""
    schema = lost.lost_schema
    users = find_users_table(schema, users_table)
    if users is None:
        return {}
    paths = owner_paths(schema, users, owner_columns or {})
    uinfo = schema.tables[users]
    label_col = next((c for c in LABEL_COLUMNS if c in uinfo.columns), None)
    umap = plan.key_map.get(users, {})
    # Users not in CURRENT after the merge: lost sign-ups not replayed, deletions replayed, users CURRENT deleted.
    absent = {o.lost_key for o in plan.outcomes if o.table == users and (
        (o.change == "insert" and o.status == "conflict")
        or (o.change == "delete" and o.status in ("replayed", "present"))
        or (o.change == "update" and o.key is None))}
    conn = open_pair(base_path, lost_path)
    cache: dict = {}
    try:
        conn.execute("BEGIN")
        out = {}
        for o in plan.outcomes:
            chain = paths.get(o.table)
            if chain is None:
                continue
            tc = lost.tables[o.table]
            if o.change == "insert":
                row = tc.inserts.get(o.lost_key)
            elif o.change == "update":
                row = tc.updates[o.lost_key][1] if o.lost_key in tc.updates else None
            else:
                row = tc.deletes.get(o.lost_key)
            if row is None:
                continue
            user = _follow(conn, chain, row, o.lost_key, uinfo.pk, cache)
            if user is None:
                continue
            label = _label(conn, users, uinfo.pk[0], label_col, user, cache) if label_col else None
            if (user,) in absent:
                now = None
            else:
                now = umap.get((user,), (user,))[0]
            out[(o.table, o.lost_key)] = {"user": user, "now": now, "label": label}
        conn.execute("ROLLBACK")
        return out
    finally:
        conn.close()


def _follow(conn: apsw.Connection, chain: list[ForeignKey], row: dict, key: tuple, users_pk, cache):
    if not chain:
        return key[0] if len(key) == 1 else None
    value = row.get(chain[0].columns[0])
    for prev, fk in zip(chain, chain[1:]):
        if value is None:
            return None
        value = _lookup(conn, fk, prev.parent_columns[0], value, cache)
    return value


def _lookup(conn, fk: ForeignKey, by_column: str, parent_value, cache):
    """fk's column in the row of fk.child whose ``by_column`` is ``parent_value`` (LOST, else BASE)."""
    ck = ("hop", fk.child, fk.columns[0], parent_value)
    if ck in cache:
        return cache[ck]
    prev_parent_col = by_column
    value = None
    for schema in ("lost", "main"):
        r = conn.execute(
            f"SELECT {q(fk.columns[0])} FROM {schema}.{q(fk.child)} WHERE {q(prev_parent_col)} = ?",
            (parent_value,),
        ).fetchone()
        if r is not None:
            value = r[0]
            break
    cache[ck] = value
    return value


def _label(conn, users: str, pk: str, col: str, user, cache):
    ck = ("label", user)
    if ck not in cache:
        value = None
        for schema in ("lost", "main"):
            r = conn.execute(f"SELECT {q(col)} FROM {schema}.{q(users)} WHERE {q(pk)} = ?", (user,)).fetchone()
            if r is not None:
                value = r[0]
                break
        cache[ck] = value
    return cache[ck]
