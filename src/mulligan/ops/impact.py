"""impact: which users' data differs between two states.

Every differing row is attributed to the user who owns it, evaluated in the
state where the row existed (FROM for deleted and updated rows, TO for inserted
ones). The owner of a row is, in order:

1. the users table's own rows own themselves;
2. a configured owner column (``[targets.NAME.owners] blog_post = "author_id"``);
3. a foreign key from the row's table to the users table;
4. the owner of the parent row, through the shortest chain of foreign keys
   leading to a table that has an owner (a comment's post's author; a
   many-to-many row's post).

Rows whose owner cannot be found are counted under "unowned", never dropped.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import apsw

from ..engines.sqlite.diff import INSERT, StatePair, TableSchema, diff_pair, q
from ..model import Target
from .diff import open_states
from .workspace import Workspace

RECOGNIZED_USERS = ("auth_user", "users", "accounts")
LABEL_COLUMNS = ("username", "email", "name")
PREFERRED_OWNER = ("user_id", "owner_id", "author_id", "created_by_id", "created_by", "user", "owner", "author")
TIME_NAMES = {"created", "updated", "modified", "timestamp", "date_joined", "pub_date", "date", "time", "ts"}
TIME_SUFFIXES = ("_at", "_on", "_date", "_time", "_ts")
KINDS = ("insert", "update", "delete")


@dataclass
class Hop:
    columns: list[str]  # in the child
    parent: str
    parent_columns: list[str]


@dataclass
class OwnerPath:
    """How a table's rows lead to a user id: hops through parents, then a column."""

    column: str  # the column (in the last table) holding the user id
    hops: list[Hop] = field(default_factory=list)
    configured: bool = False

    def describe(self, table: str, users_table: str) -> str:
        if table == users_table and not self.hops and not self.configured:
            return "self"
        parts = [f"{','.join(h.columns)} -> {h.parent}" for h in self.hops]
        return " -> ".join(parts + [self.column]) if parts else self.column


@dataclass
class UserImpact:
    id: Any
    label: str | None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> kind -> rows
    earliest: str | None = None
    latest: str | None = None

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


@dataclass
class ImpactResult:
    from_state: dict
    to_state: dict
    target: str | None
    users_table: str | None
    owners: dict[str, str]  # table -> how its rows are attributed ("none" when they cannot be)
    users: list[UserImpact]
    unowned: dict[str, dict[str, int]]
    tables: dict[str, dict[str, int]]  # every differing table's counts
    message: str | None = None
    seconds: float = 0.0


def _zero() -> dict[str, int]:
    return {k: 0 for k in KINDS}


def find_users_table(tables: dict[str, TableSchema], configured: str | None) -> str | None:
    if configured:
        return configured if configured in tables else None
    lower = {t.lower(): t for t in tables}
    return next((lower[n] for n in RECOGNIZED_USERS if n in lower), None)


def _foreign_keys(conn, db: str, table: str) -> list[Hop]:
    groups: dict[int, Hop] = {}
    for fid, _seq, parent, col, to, *_ in conn.execute("SELECT * FROM pragma_foreign_key_list(?, ?)", (table, db)):
        hop = groups.setdefault(fid, Hop([], parent, []))
        hop.columns.append(col)
        hop.parent_columns.append(to)
    return [groups[k] for k in sorted(groups)]


def _rank(h: Hop) -> tuple:
    name = h.columns[0].lower()
    return (PREFERRED_OWNER.index(name) if name in PREFERRED_OWNER else len(PREFERRED_OWNER), name)


def owner_paths(pair: StatePair, users: str, configured: dict[str, str]) -> dict[str, OwnerPath]:
    """The shortest way from each table to a user id (tables with none are left out)."""
    schema = {**pair.schema_b, **pair.schema_a}
    fks = {t: _foreign_keys(pair.conn, "a" if t in pair.schema_a else "b", t) for t in schema}
    named = {t.lower(): t for t in schema}
    for t, hops in fks.items():
        for h in hops:
            h.parent = named.get(h.parent.lower(), h.parent)  # REFERENCES may spell the name differently
            if all(c is None for c in h.parent_columns) and h.parent in schema:
                h.parent_columns = list(schema[h.parent].key)
    ukey = schema[users].key
    paths: dict[str, OwnerPath] = {users: OwnerPath(ukey[0])}
    for t, col in configured.items():
        if t in schema and t != users:
            paths[t] = OwnerPath(col, configured=True)
    for t, hops in fks.items():
        direct = sorted((h for h in hops if h.parent == users and h.parent_columns == ukey), key=_rank)
        if t not in paths and direct:
            paths[t] = OwnerPath(direct[0].columns[0])
    grew = True
    while grew:  # one more hop per round, so each table gets its shortest chain
        grew = False
        found = {}
        for t, hops in fks.items():
            if t in paths:
                continue
            via = sorted((h for h in hops if h.parent in paths and h.parent != t and None not in h.parent_columns), key=_rank)
            if via:
                p = paths[via[0].parent]
                found[t] = OwnerPath(p.column, [via[0]] + p.hops)
        paths.update(found)
        grew = bool(found)
    return paths


class _Resolver:
    def __init__(self, pair: StatePair, paths: dict[str, OwnerPath]):
        self.pair, self.paths = pair, paths
        self.cache: dict[tuple, Any] = {}

    def owner(self, db: str, table: str, row: dict) -> Any:
        path = self.paths.get(table)
        if path is None:
            return None
        for hop in path.hops:
            vals = tuple(row.get(c.lower()) for c in hop.columns)
            if any(v is None for v in vals):
                return None
            row = self._parent(db, hop, vals)
            if row is None:
                return None
        return row.get(path.column.lower())

    def _parent(self, db: str, hop: Hop, vals: tuple) -> dict | None:
        key = (db, hop.parent, tuple(hop.parent_columns), vals)
        if key not in self.cache:
            self.cache[key] = None
            where = " AND ".join(f"{q(c)} = ?" for c in hop.parent_columns)
            for side in (db, "b" if db == "a" else "a"):  # the other state when the parent is gone here
                table = (self.pair.schema_a if side == "a" else self.pair.schema_b).get(hop.parent)
                if table is None:
                    continue
                cols = ", ".join(q(c) for c in table.columns)
                row = self.pair.conn.execute(f"SELECT {cols} FROM {side}.{q(hop.parent)} WHERE {where} LIMIT 1",
                                             vals).fetchone()
                if row is not None:
                    self.cache[key] = dict(zip((c.lower() for c in table.columns), row))
                    break
        return self.cache[key]


def _time_columns(t: TableSchema) -> list[str]:
    out = []
    for c, typ in zip(t.columns, t.types):
        n, ty = c.lower(), typ.upper()
        if n in TIME_NAMES or n.endswith(TIME_SUFFIXES) or "DATE" in ty or "TIME" in ty:
            out.append(c)
    return out


def _as_time(v: Any) -> str | None:
    if isinstance(v, str) and v.strip():
        return v.strip()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        seconds = v / 1000 if v > 1e11 else v
        if 1e8 < seconds < 1e10:
            return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")
    return None


def _label(pair: StatePair, users: str, schema: TableSchema, uid: Any) -> str | None:
    lower = {c.lower(): c for c in schema.columns}
    col = next((lower[n] for n in LABEL_COLUMNS if n in lower), None)
    if col is None:
        return None
    for db in ("a", "b"):
        try:
            row = pair.conn.execute(f"SELECT {q(col)} FROM {db}.{q(users)} WHERE {q(schema.key[0])} = ?", (uid,)).fetchone()
        except apsw.SQLError:
            row = None
        if row is not None and row[0] is not None:
            return str(row[0])
    return None


def impact_pair(pair: StatePair, *, users_table: str | None = None, owners: dict[str, str] | None = None) -> dict:
    """Attribute every differing row of two attached states; the fields of an ImpactResult."""
    d = diff_pair(pair)
    tables = {t.name: {"insert": t.inserted, "update": t.updated, "delete": t.deleted}
              for t in d.tables if t.changes and not t.name.startswith("sqlite_")}
    schema = {**pair.schema_b, **pair.schema_a}
    users = find_users_table(schema, users_table)
    if users is None or len(schema[users].key) != 1:
        looked = users_table or ", ".join(RECOGNIZED_USERS)
        why = f"no users table found (looked for {looked})" if users is None else f"the users table {users} has no single-column key"
        return {"users_table": None, "owners": {}, "users": [], "unowned": {}, "tables": tables,
                "message": why + "; set users_table in [targets.NAME] of mulligan.toml or pass --users-table. "
                                 "The differences per table are listed instead."}
    paths = owner_paths(pair, users, owners or {})
    resolver = _Resolver(pair, paths)
    per_user: dict[Any, UserImpact] = {}
    unowned: dict[str, dict[str, int]] = defaultdict(_zero)
    for t in d.tables:
        if t.name not in tables:
            continue
        cols = [c.lower() for c in t.columns]
        times = [c.lower() for c in _time_columns(schema[t.name])]
        for r in t.rows:
            db, values = ("b", r.after) if r.kind == INSERT else ("a", r.before)
            row = dict(zip(cols, values))
            uid = resolver.owner(db, t.name, row)
            if uid is None:
                unowned[t.name][r.kind] += r.count
                continue
            u = per_user.get(uid)
            if u is None:
                u = per_user[uid] = UserImpact(uid, _label(pair, users, schema[users], uid))
            u.counts.setdefault(t.name, _zero())[r.kind] += r.count
            for v in filter(None, (_as_time(row.get(c)) for c in times)):
                u.earliest = v if u.earliest is None or v < u.earliest else u.earliest
                u.latest = v if u.latest is None or v > u.latest else u.latest
    ranked = sorted(per_user.values(), key=lambda u: (-u.total, str(u.id)))
    described = {t: (paths[t].describe(t, users) if t in paths else "none") for t in tables}
    return {"users_table": users, "owners": described, "users": ranked, "unowned": dict(unowned), "tables": tables,
            "message": None}


def impact_states(from_state, to_state, *, users_table: str | None = None,
                  owners: dict[str, str] | None = None) -> ImpactResult:
    """Attribute the differences between two states (file paths or vault images) to users."""
    started = time.monotonic()
    with StatePair(from_state, to_state) as pair:
        fields = impact_pair(pair, users_table=users_table, owners=owners)
    describe = [{"kind": "file", "spec": str(s), "path": str(s), "snapshot": None, "time": None}
                for s in (pair.paths)]
    return ImpactResult(describe[0], describe[1], None, **fields, seconds=time.monotonic() - started)


def impact(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str, *,
           users_table: str | None = None, owners: dict[str, str] | None = None) -> ImpactResult:
    """Resolve both STATE specs and attribute their differences to users.

    ``users_table`` and ``owners`` default to the target's configuration
    (``users_table`` and the ``owners`` table of ``[targets.NAME]``).
    """
    started = time.monotonic()
    opts = target.options if target is not None else {}
    users_table = users_table or opts.get("users_table")
    owners = owners if owners is not None else dict(opts.get("owners", {}))
    with open_states(ws, target, from_spec, to_spec) as ((ref_a, ref_b), (pa, pb)):
        with StatePair(pa, pb) as pair:
            fields = impact_pair(pair, users_table=users_table, owners=owners)
    return ImpactResult(ref_a.to_json(), ref_b.to_json(), target.name if target else None, **fields,
                        seconds=time.monotonic() - started)
