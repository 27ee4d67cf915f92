"""The schema side of a diff: each state's tables and other objects, and what changed.

``read_schema`` lists one attached state's user tables (columns, declared key,
rowid or not, root page) and its indexes, views, triggers and virtual tables;
``compare_schema`` names every object added, removed or changed between the two
states of a :class:`.diff.StatePair`. Mulligan's own tables never take part, nor
SQLite's internal ones (``sqlite_sequence`` excepted: its AUTOINCREMENT counters
are compared like a table keyed by name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import apsw

from .identity import is_internal

if TYPE_CHECKING:
    from .diff import StatePair


@dataclass
class TableSchema:
    name: str
    sql: str
    columns: list[str]
    types: list[str]
    key: list[str]  # declared primary key in key order; [] when keyless
    rowid: bool  # a rowid table (False for WITHOUT ROWID)
    rootpage: int


@dataclass
class SchemaChange:
    """One schema object that differs: added, removed or changed."""

    kind: str  # added | removed | changed
    type: str  # table | index | view | trigger
    name: str
    table: str
    before: str | None = None
    after: str | None = None
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    key_changed: bool = False


def read_schema(conn: apsw.Connection, db: str) -> tuple[dict[str, TableSchema], list[tuple[str, str, str, str]]]:
    """User tables of one attached state, and its other objects (type, name, table, sql)."""
    kinds = {r[1]: (r[2], r[4]) for r in conn.execute(f"PRAGMA {db}.table_list")}
    tables: dict[str, TableSchema] = {}
    others = []
    for typ, name, tbl, root, sql in conn.execute(f"SELECT type, name, tbl_name, rootpage, sql FROM {db}.sqlite_schema"):
        if is_internal(tbl) or is_internal(name) or (name.startswith("sqlite_") and name != "sqlite_sequence"):
            continue
        if typ != "table":
            if sql:
                others.append((typ, name, tbl, sql))
            continue
        kind, wr = kinds.get(name, ("table", 0))
        if kind == "virtual":
            others.append(("virtual table", name, tbl, sql))
            continue
        info = conn.execute("SELECT name, type, pk FROM pragma_table_info(?, ?)", (name, db)).fetchall()
        key = [c for c, _, p in sorted((r for r in info if r[2]), key=lambda r: r[2])]
        if name == "sqlite_sequence":
            key = ["name"]
        tables[name] = TableSchema(name, sql or "", [r[0] for r in info], [r[1] or "" for r in info], key, not wr, root or 0)
    return tables, others


def compare_schema(pair: StatePair, names: set[str] | None) -> list[SchemaChange]:
    """Tables, then indexes, views and triggers, that differ (only those of ``names``, when given)."""
    out: list[SchemaChange] = []
    for name in sorted(set(pair.schema_a) | set(pair.schema_b)):
        if names is not None and name not in names:
            continue
        ta, tb = pair.schema_a.get(name), pair.schema_b.get(name)
        if ta is None or tb is None:
            out.append(SchemaChange("added" if ta is None else "removed", "table", name, name,
                                    ta.sql if ta else None, tb.sql if tb else None))
        elif ta.sql != tb.sql:
            la, lb = [c.lower() for c in ta.columns], [c.lower() for c in tb.columns]
            out.append(SchemaChange("changed", "table", name, name, ta.sql, tb.sql,
                                    [c for c in tb.columns if c.lower() not in la],
                                    [c for c in ta.columns if c.lower() not in lb], ta.key != tb.key))
    oa = {(t, n): (tbl, sql) for t, n, tbl, sql in pair.others_a}
    ob = {(t, n): (tbl, sql) for t, n, tbl, sql in pair.others_b}
    for typ, name in sorted(set(oa) | set(ob)):
        tbl = (oa.get((typ, name)) or ob.get((typ, name)))[0]
        if names is not None and tbl not in names:
            continue
        before, after = oa.get((typ, name), (None, None))[1], ob.get((typ, name), (None, None))[1]
        if before != after:
            kind = "added" if before is None else "removed" if after is None else "changed"
            out.append(SchemaChange(kind, typ, name, tbl, before, after))
    return out
