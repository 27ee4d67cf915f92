"""Row-level difference between two SQLite files.

Both states (files, or vault restore points served page by page, see
:mod:`.vault_vfs`) are attached read-only to one in-memory connection (``a`` is
FROM, ``b`` is TO) inside one read transaction, so each side is one consistent
state.
Rows are paired by the declared primary key with three joins that scan in key
order (the planner is not allowed to wander through a secondary index);
values are compared with ``IS NOT``, as SQLite's own sqldiff does. A table with
no declared key is compared as a multiset of whole rows. Tables, and within a
rowid table key ranges, whose pages are identical in both files are skipped
without reading their rows (see :mod:`.pages`).

Mulligan's own tables never take part.
"""

from __future__ import annotations

import os
import struct
import urllib.parse
from dataclasses import dataclass, field

import apsw

from ...errors import IntegrityError, NotADatabase, NotFound
from . import pages as pg
from . import vault_vfs
from .diff_schema import SchemaChange, TableSchema, compare_schema, read_schema

INSERT, UPDATE, DELETE = "insert", "update", "delete"


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class RowChange:
    kind: str  # insert | update | delete
    key: tuple  # key column values (a keyless table: the whole row)
    before: tuple | None  # values of TableDiff.columns in FROM
    after: tuple | None  # values of TableDiff.columns in TO
    changed: tuple[str, ...] = ()  # updated columns
    count: int = 1  # copies of this row (keyless tables)


@dataclass
class TableDiff:
    name: str
    columns: list[str]  # the columns compared: those both states have
    key: list[str]  # [] when the table is compared as a multiset
    status: str = "same"  # same | changed | added | removed
    keyless: bool = False
    schema_changed: bool = False
    method: str = "full"  # skipped | ranges | full
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rows: list[RowChange] = field(default_factory=list)
    truncated: bool = False
    rebuild: list[tuple] | None = None  # every TO row (all TO columns), for SQL output of a changed schema
    to_columns: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return self.inserted + self.updated + self.deleted

    @property
    def counters(self) -> bool:
        """SQLite's AUTOINCREMENT counters (sqlite_sequence): listed, but not counted in totals."""
        return self.name == "sqlite_sequence"

    def add(self, change: RowChange, limit: int | None) -> None:
        n = change.count
        if change.kind == INSERT:
            self.inserted += n
        elif change.kind == DELETE:
            self.deleted += n
        else:
            self.updated += n
        if limit is None or len(self.rows) < limit:
            self.rows.append(change)
        else:
            self.truncated = True


@dataclass
class DatabaseDiff:
    tables: list[TableDiff]
    schema: list[SchemaChange]
    pages_compared: bool = False
    # every index, view and trigger of each state: (type, name, table, sql)
    objects_from: list[tuple[str, str, str, str]] = field(default_factory=list)
    objects_to: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def changed_tables(self) -> list[TableDiff]:
        return [t for t in self.tables if t.changes or t.status != "same" or t.schema_changed]

    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(t, k) for t in self.tables if not t.counters) for k in ("inserted", "updated", "deleted")}


def _sqlite_header(path: str) -> bool:
    """An empty file or one that starts like a SQLite database (which file to name in an error)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head == b"" or head == b"SQLite format 3\x00"


class StatePair:
    """Two states opened read-only side by side in one read transaction.

    A state is a path to a SQLite file, or a :class:`~.vault_vfs.VirtualImage` (a
    vault state, read page by page without being restored).
    """

    def __init__(self, from_state, to_state, *, compare_pages: bool = True):
        self.sources = (from_state, to_state)
        self.paths = tuple(s.path if isinstance(s, vault_vfs.VirtualImage) else str(s) for s in self.sources)
        self.compare_pages = compare_pages
        self.images: list = []
        self.uris: list[str] = []
        self.conn: apsw.Connection | None = None

    def __enter__(self) -> "StatePair":
        for s in self.sources:
            if not isinstance(s, vault_vfs.VirtualImage) and not os.path.isfile(s):
                raise NotFound(f"no database file at {s}", hint="check the path, or give live, a snapshot id or @TIME")
        try:
            for s in self.sources:  # descriptors first: see the POSIX-lock note in pages.py
                if isinstance(s, vault_vfs.VirtualImage):
                    self.images.append(s)
                    self.uris.append(vault_vfs.serve(s))
                else:
                    self.images.append(pg.FileImage.open(str(s)) if self.compare_pages else None)
                    self.uris.append("file:" + urllib.parse.quote(os.path.abspath(s)) + "?mode=ro")
            self.conn = apsw.Connection(":memory:", flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI)
            self.conn.set_busy_timeout(5000)
            for alias, uri in zip(("a", "b"), self.uris):
                self.conn.execute(f"ATTACH ? AS {alias}", (uri,))
            self.conn.execute("BEGIN")
            self.schema_a, self.others_a = read_schema(self.conn, "a")
            self.schema_b, self.others_b = read_schema(self.conn, "b")
        except apsw.NotADBError:
            self.__exit__(None, None, None)
            bad = [p for s, p in zip(self.sources, self.paths)
                   if not isinstance(s, vault_vfs.VirtualImage) and not _sqlite_header(p)]
            which = " and ".join(bad) if bad else f"{self.paths[0]} or {self.paths[1]}"
            raise NotADatabase(f"{which} {'are' if len(bad) > 1 else 'is'} not a SQLite database",
                               unchanged="nothing was changed", hint="check the path") from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("ROLLBACK")
            except apsw.Error:
                pass
            self.conn.close()
            self.conn = None
        for img in self.images:  # only after the connection let go of its locks
            if img is not None:
                img.close()
        for uri in self.uris:
            vault_vfs.unserve(uri)
        self.images, self.uris = [], []

    def rows(self, db: str, table: str, columns: list[str]):
        return self.conn.execute(f"SELECT {', '.join(q(c) for c in columns)} FROM {db}.{q(table)}")

    # ---- page plans ------------------------------------------------------
    def plans(self, names: list[str]) -> dict[str, pg.TablePlan]:
        if None in self.images or len(self.images) != 2:
            return {}
        a, b = self.images
        try:
            roots = [self._roots("a"), self._roots("b")]
            rowid = {n: self.schema_a[n].rowid and self.schema_b[n].rowid and _rowid_name(self.schema_a[n]) is not None
                     for n in names if n in self.schema_a and n in self.schema_b}
            plans = pg.plan_tables(a, b, roots[0], roots[1], rowid, self._overflow_owners)
        except (pg.PageMapError, struct.error, IndexError):
            return {}  # pages not shaped as expected: compare every row instead
        # A commit since the pages were read means they may not be the state our read
        # transaction sees (it began in between): trust them only if nothing was committed.
        return plans if all(img.current() for img in self.images if isinstance(img, pg.FileImage)) else {}

    def _roots(self, db: str) -> dict[str, int]:
        out = {"sqlite_schema": 1}
        for typ, name, root in self.conn.execute(f"SELECT type, name, rootpage FROM {db}.sqlite_schema WHERE rootpage > 0"):
            out[name if typ == "table" else f"{typ} {name}"] = root
        return out

    def _overflow_owners(self, side: str, wanted: set[int]) -> dict[int, tuple[str, int | None]]:
        """Owner table and leaf page of overflow pages (``dbstat`` walks every cell, in C)."""
        pages, found = {}, {}
        for name, path, pageno in self.conn.execute("SELECT name, path, pageno FROM dbstat(?)", (side,)):
            pages[path] = pageno
            if pageno in wanted:
                found[pageno] = (name, path[: path.rindex("/") + 1] if "+" in path else None)
        return {p: (name, pages.get(leaf) if leaf else None) for p, (name, leaf) in found.items()}


def _rowid_name(t: TableSchema) -> str | None:
    cols = {c.lower() for c in t.columns}
    return next((n for n in ("_rowid_", "rowid", "oid") if n not in cols), None)


def _keys_match(a: TableSchema, b: TableSchema, common: list[str]) -> bool:
    return bool(a.key) and [k.lower() for k in a.key] == [k.lower() for k in b.key] and all(k in common for k in a.key)


def diff_pair(pair: StatePair, *, tables: list[str] | None = None, limit: int | None = None,
              rebuild: bool = False) -> DatabaseDiff:
    """Compare two attached states. ``limit`` caps the rows kept per table (counts are always whole)."""
    names = sorted(set(pair.schema_a) | set(pair.schema_b))
    if tables is not None:
        missing = [t for t in tables if t not in names]
        if missing:
            raise NotFound(f"no table named {missing[0]!r} in either state",
                           hint="tables in the two states: " + (", ".join(names) or "none"))
        names = [n for n in names if n in tables]
    schema = compare_schema(pair, set(names) if tables is not None else None)
    plans = pair.plans(names)
    result = DatabaseDiff([], schema, bool(plans), pair.others_a, pair.others_b)
    for name in names:
        try:
            result.tables.append(_diff_table(pair, name, plans.get(name), limit, rebuild))
        except UnicodeDecodeError:
            raise IntegrityError(f"table {name} holds text that is not valid UTF-8", unchanged="neither state was changed",
                                 hint="compare it with sqldiff, or fix the text (CAST it to BLOB)") from None
    return result


def _diff_table(pair: StatePair, name: str, plan: pg.TablePlan | None, limit: int | None, rebuild: bool) -> TableDiff:
    ta, tb = pair.schema_a.get(name), pair.schema_b.get(name)
    if ta is None or tb is None:
        t = tb or ta
        td = TableDiff(name, t.columns, t.key, "added" if ta is None else "removed", keyless=not t.key)
        kind, db = (INSERT, "b") if ta is None else (DELETE, "a")
        order = f" ORDER BY {', '.join(q(k) for k in t.key)}" if t.key else ""
        idx = [t.columns.index(k) for k in t.key]
        for row in pair.conn.execute(f"SELECT {', '.join(q(c) for c in t.columns)} FROM {db}.{q(name)}{order}"):
            key = tuple(row[i] for i in idx) if idx else row
            td.add(RowChange(kind, key, row if kind == DELETE else None, row if kind == INSERT else None), limit)
        return td
    lb = {c.lower() for c in tb.columns}
    common = [c for c in ta.columns if c.lower() in lb]
    keyed = _keys_match(ta, tb, common)
    td = TableDiff(name, common, ta.key if keyed else [], keyless=not keyed, schema_changed=ta.sql != tb.sql)
    td.to_columns = tb.columns
    if plan is not None and plan.mode == "skip" and not td.schema_changed:
        td.method = "skipped"
    elif keyed:
        ranges = plan.ranges if plan is not None and plan.mode == "ranges" else None
        td.method = "ranges" if ranges else "full"
        _keyed(pair, td, ranges, limit)
    else:
        _multiset(pair, td, limit)
    if td.changes or td.schema_changed:
        td.status = "changed"
    if rebuild and (td.schema_changed or (name == "sqlite_sequence" and td.changes)):
        td.rebuild = pair.rows("b", name, tb.columns).fetchall()
    return td


def _keyed(pair: StatePair, td: TableDiff, ranges: list[tuple[int, int]] | None, limit: int | None) -> None:
    conn, t = pair.conn, q(td.name)
    key = td.key
    vals = [c for c in td.columns if c not in key]
    on = " AND ".join(f"y.{q(k)} = x.{q(k)}" for k in key)
    order = ", ".join(f"x.{q(k)}" for k in key)
    sel = ", ".join(f"x.{q(c)}" for c in key + vals)

    def source(db: str) -> str:
        if ranges is None:
            return f"{db}.{t} AS x NOT INDEXED" if pair.schema_a[td.name].rowid is False or _int_key(pair, td) else f"{db}.{t} AS x"
        rid = _rowid_name(pair.schema_a[td.name])
        return f"temp._mg_ranges AS r CROSS JOIN {db}.{t} AS x ON x.{rid} BETWEEN r.lo AND r.hi"

    if ranges is not None:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _mg_ranges(lo INTEGER, hi INTEGER)")
        conn.execute("DELETE FROM temp._mg_ranges")
        conn.executemany("INSERT INTO temp._mg_ranges VALUES (?, ?)", ranges)
    nk, order_cols = len(key), key + vals
    # FROM's rows: deleted when TO has no row with the key, updated when a value differs (one scan)
    pick = "".join(f", y.{q(v)}, x.{q(v)} IS NOT y.{q(v)}" for v in vals)
    differs = "".join(f" OR x.{q(v)} IS NOT y.{q(v)}" for v in vals)
    missing = f"y.{q(key[0])} IS NULL"
    sql = (f"SELECT {sel}, {missing}{pick} FROM {source('a')} LEFT JOIN b.{t} AS y ON {on} "
           f"WHERE {missing}{differs} ORDER BY {order}")
    nv = len(vals)
    for row in conn.execute(sql):
        k, before = row[:nk], row[: nk + nv]
        if row[nk + nv]:
            full = _reorder(td.columns, order_cols, before)
            td.add(RowChange(DELETE, k, full, None), limit)
            continue
        tail = row[nk + nv + 1 :]
        after = k + tail[0::2]
        changed = tuple(v for v, d in zip(vals, tail[1::2]) if d)
        td.add(RowChange(UPDATE, k, _reorder(td.columns, order_cols, before), _reorder(td.columns, order_cols, after),
                         changed), limit)
    sql = (f"SELECT {sel} FROM {source('b')} WHERE NOT EXISTS "
           f"(SELECT 1 FROM a.{t} AS y WHERE {on}) ORDER BY {order}")
    for row in conn.execute(sql):
        td.add(RowChange(INSERT, row[:nk], None, _reorder(td.columns, order_cols, row)), limit)


def _int_key(pair: StatePair, td: TableDiff) -> bool:
    """The key is the rowid itself, so a plain table scan is already in key order."""
    t = pair.schema_a[td.name]
    if len(t.key) != 1 or not t.rowid:
        return False
    i = t.columns.index(t.key[0])
    return t.types[i].upper() == "INTEGER"


def _reorder(columns: list[str], got: list[str], row) -> tuple:
    if columns == got:
        return tuple(row)
    pos = {c: i for i, c in enumerate(got)}
    return tuple(row[pos[c]] for c in columns)


def _multiset(pair: StatePair, td: TableDiff, limit: int | None) -> None:
    cols = ", ".join(q(c) for c in td.columns)
    t = q(td.name)
    sql = (f"SELECT {cols}, sum(_mg_side) FROM (SELECT {cols}, 1 AS _mg_side FROM a.{t} UNION ALL "
           f"SELECT {cols}, -1 AS _mg_side FROM b.{t}) GROUP BY {cols} HAVING sum(_mg_side) != 0 ORDER BY {cols}")
    for row in pair.conn.execute(sql):
        values, n = tuple(row[:-1]), row[-1]
        if n > 0:
            td.add(RowChange(DELETE, values, values, None, count=n), limit)
        else:
            td.add(RowChange(INSERT, values, None, values, count=-n), limit)


def diff_files(from_path: str, to_path: str, *, tables: list[str] | None = None, limit: int | None = None,
               rebuild: bool = False, compare_pages: bool = True) -> DatabaseDiff:
    with StatePair(from_path, to_path, compare_pages=compare_pages) as pair:
        return diff_pair(pair, tables=tables, limit=limit, rebuild=rebuild)
