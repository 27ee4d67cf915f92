"""What LOST changed since BASE, table by table, read with primary-key joins.

BASE and LOST never change while a recovery runs, so this is read once, before
any lock on CURRENT is taken. Rows are paired by declared primary key; every
scan is ordered by that key so SQLite walks the tables in key order instead of
through a secondary index. Only changed rows are materialised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apsw
import blake3

from .merge_schema import Schema, TableInfo, column_names, q, read_schema, table_names


@dataclass
class TableChanges:
    name: str
    pk: list[str]
    lost_columns: list[str]  # every stored column of the table in LOST
    compare_columns: list[str]  # columns BASE and LOST both have
    inserts: dict[tuple, dict] = field(default_factory=dict)  # lost key -> LOST row (lost_columns)
    updates: dict[tuple, tuple[dict, dict]] = field(default_factory=dict)  # key -> (BASE row, LOST row)
    deletes: dict[tuple, dict] = field(default_factory=dict)  # key -> BASE row (compare_columns)
    max_key: int = 0  # largest integer key either BASE or LOST used (surrogate tables)
    counter: int = 0  # largest sqlite_sequence value of BASE or LOST
    # Keyless tables are multisets of whole rows: (row, copies in LOST, copies in BASE)
    added: list[tuple[dict, int, int]] = field(default_factory=list)  # LOST has more copies
    removed: list[tuple[dict, int, int]] = field(default_factory=list)  # LOST has fewer copies

    @property
    def keyless(self) -> bool:
        return not self.pk

    @property
    def changed(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes) + len(self.added) + len(self.removed)


@dataclass
class LostChanges:
    tables: dict[str, TableChanges]
    lost_schema: Schema
    skipped: dict[str, str]  # table -> why it is not compared

    def fingerprint(self) -> str:
        """Identifies these lost changes: the same BASE and LOST give the same fingerprint."""
        h = blake3.blake3()
        for name in sorted(self.tables):
            tc = self.tables[name]
            for part in (tc.inserts.items(), tc.updates.items(), tc.deletes.items(), tc.added, tc.removed):
                h.update(repr((name, list(part))).encode())
        return h.hexdigest()[:32]


def open_pair(base_path: str, lost_path: str) -> apsw.Connection:
    """A read-only connection on BASE with LOST attached as ``lost`` (BASE is ``main``)."""
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
    conn = apsw.Connection(_uri(base_path), flags=flags)
    conn.execute("ATTACH DATABASE ? AS lost", (_uri(lost_path),))
    return conn


def _uri(path: str) -> str:
    from urllib.parse import quote

    return "file:" + quote(str(path)) + "?mode=ro"


def read_lost_changes(base_path: str, lost_path: str) -> LostChanges:
    conn = open_pair(base_path, lost_path)
    try:
        conn.execute("BEGIN")  # one consistent read of both files
        try:
            return _read(conn)
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def _read(conn: apsw.Connection) -> LostChanges:
    lost_schema = read_schema(conn, "lost")
    base_tables = set(table_names(conn, "main"))
    base_schema = read_schema(conn, "main")
    tables: dict[str, TableChanges] = {}
    skipped: dict[str, str] = {}
    lost_seq = _sequences(conn, "lost")
    base_seq = _sequences(conn, "main")
    for name, info in lost_schema.tables.items():
        if info.keyless:
            if name in base_tables and sorted(column_names(conn, name, "main")) != sorted(info.columns):
                skipped[name] = "keyless table whose columns differ between BASE and LOST"
                continue
            tc = TableChanges(name, [], list(info.columns), list(info.columns))
            _diff_keyless(conn, name, tc, name in base_tables)
            tables[name] = tc
            continue
        if name in base_tables and base_schema.tables[name].pk != info.pk:
            skipped[name] = "primary key differs between BASE and LOST"
            continue
        lost_cols = info.columns
        if name in base_tables:
            base_cols = set(column_names(conn, name, "main"))
            compare = [c for c in lost_cols if c in base_cols]
        else:
            compare = []
        tc = TableChanges(name, list(info.pk), list(lost_cols), compare)
        tc.counter = max(lost_seq.get(name, 0), base_seq.get(name, 0))
        if info.surrogate:
            tc.max_key = _max_key(conn, "lost", info)
            if name in base_tables:
                tc.max_key = max(tc.max_key, _max_key(conn, "main", info))
        if name in base_tables:
            _diff_table(conn, info, tc)
        else:
            _all_inserts(conn, info, tc)
        tables[name] = tc
    return LostChanges(tables, lost_schema, skipped)


def _sequences(conn: apsw.Connection, schema: str) -> dict[str, int]:
    has = conn.execute(
        f"SELECT 1 FROM {schema}.sqlite_master WHERE name='sqlite_sequence'"
    ).fetchone()
    if not has:
        return {}
    return {n: int(s or 0) for n, s in conn.execute(f"SELECT name, seq FROM {schema}.sqlite_sequence")}


def _max_key(conn: apsw.Connection, schema: str, info: TableInfo) -> int:
    v = conn.execute(f"SELECT max({q(info.pk[0])}) FROM {schema}.{q(info.name)}").fetchone()[0]
    return v if isinstance(v, int) else 0


def _key_of(row: dict, pk: list[str]) -> tuple:
    return tuple(row[c] for c in pk)


def _all_inserts(conn: apsw.Connection, info: TableInfo, tc: TableChanges) -> None:
    cols = ", ".join(q(c) for c in tc.lost_columns)
    order = ", ".join(q(c) for c in info.pk)
    for values in conn.execute(f"SELECT {cols} FROM lost.{q(info.name)} ORDER BY {order}"):
        row = dict(zip(tc.lost_columns, values))
        tc.inserts[_key_of(row, info.pk)] = row


def _diff_table(conn: apsw.Connection, info: TableInfo, tc: TableChanges) -> None:
    t = q(info.name)
    join = " AND ".join(f"b.{q(c)} = l.{q(c)}" for c in info.pk)
    order_l = ", ".join(f"l.{q(c)}" for c in info.pk)
    order_b = ", ".join(f"b.{q(c)}" for c in info.pk)
    lost_cols = ", ".join(f"l.{q(c)}" for c in tc.lost_columns)
    first = q(info.pk[0])
    for values in conn.execute(
        f"SELECT {lost_cols} FROM lost.{t} l LEFT JOIN main.{t} b ON {join} "
        f"WHERE b.{first} IS NULL ORDER BY {order_l}"
    ):
        row = dict(zip(tc.lost_columns, values))
        tc.inserts[_key_of(row, info.pk)] = row

    base_cols = ", ".join(f"b.{q(c)}" for c in tc.compare_columns)
    for values in conn.execute(
        f"SELECT {base_cols} FROM main.{t} b LEFT JOIN lost.{t} l ON {join} "
        f"WHERE l.{first} IS NULL ORDER BY {order_b}"
    ):
        row = dict(zip(tc.compare_columns, values))
        tc.deletes[_key_of(row, info.pk)] = row

    others = [c for c in tc.compare_columns if c not in info.pk]
    if not others:
        return
    differs = " OR ".join(f"l.{q(c)} IS NOT b.{q(c)}" for c in others)
    n = len(tc.compare_columns)
    for values in conn.execute(
        f"SELECT {base_cols}, {', '.join(f'l.{q(c)}' for c in tc.compare_columns)} "
        f"FROM lost.{t} l JOIN main.{t} b ON {join} WHERE {differs} ORDER BY {order_l}"
    ):
        base_row = dict(zip(tc.compare_columns, values[:n]))
        lost_row = dict(zip(tc.compare_columns, values[n:]))
        tc.updates[_key_of(base_row, info.pk)] = (base_row, lost_row)


def _multiset(conn: apsw.Connection, schema: str, table: str, cols: list[str]) -> dict[tuple, int]:
    c = ", ".join(q(x) for x in cols)
    return {tuple(r[:-1]): r[-1] for r in conn.execute(f"SELECT {c}, count(*) FROM {schema}.{q(table)} GROUP BY {c}")}


def _diff_keyless(conn: apsw.Connection, name: str, tc: TableChanges, in_base: bool) -> None:
    """A table without a key is a multiset of whole rows: compare copies per distinct row."""
    cols = tc.lost_columns
    lost = _multiset(conn, "lost", name, cols)
    base = _multiset(conn, "main", name, cols) if in_base else {}
    for vals in sorted(lost, key=repr):
        if lost[vals] > base.get(vals, 0):
            tc.added.append((dict(zip(cols, vals)), lost[vals], base.get(vals, 0)))
    for vals in sorted(base, key=repr):
        if base[vals] > lost.get(vals, 0):
            tc.removed.append((dict(zip(cols, vals)), base[vals], lost.get(vals, 0)))
