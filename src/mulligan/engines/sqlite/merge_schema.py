"""What the recovery merge needs to know about a schema: keys, foreign keys, uniques.

A table's key is its declared primary key. An INTEGER PRIMARY KEY of a rowid
table (a rowid alias) is a *surrogate* key: a number handed out by the
database, which says nothing about the row, so two different rows may carry
the same one on two timelines. Every other declared key (a TEXT key, the
composite key of a link table, any key of a WITHOUT ROWID table) is *natural*:
equal keys mean the same entity. A table without a declared key is keyless.

Foreign keys are grouped per constraint (a composite foreign key is one group
of columns). A group whose parent columns are the parent's primary key can be
rewritten through the parent's key map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apsw

INTERNAL_PREFIX = "_mulligan"


def q(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ForeignKey:
    child: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str = "NO ACTION"
    # True when parent_columns are exactly the parent's primary key, so the
    # parent's key map applies (the map is in the parent's key-column order).
    through_key: bool = False
    # Position of each of our columns in the parent's key tuple (when through_key).
    key_order: tuple[int, ...] = ()


@dataclass
class TableInfo:
    name: str
    columns: list[str]  # stored, writable columns in declaration order
    pk: list[str]  # declared key columns, in key order; [] when keyless
    surrogate: bool  # the key is a rowid alias (INTEGER PRIMARY KEY)
    autoincrement: bool
    without_rowid: bool
    fks: list[ForeignKey] = field(default_factory=list)
    uniques: list[tuple[str, ...]] = field(default_factory=list)  # UNIQUE groups other than the key

    @property
    def keyless(self) -> bool:
        return not self.pk


@dataclass
class Schema:
    tables: dict[str, TableInfo]
    triggers: dict[str, list[str]]  # table -> trigger names
    trigger_sql: dict[str, str] = field(default_factory=dict)  # trigger name -> CREATE TRIGGER

    def children_of(self, parent: str) -> list[ForeignKey]:
        return [fk for t in self.tables.values() for fk in t.fks if fk.parent == parent]

    def order(self) -> list[list[str]]:
        """Tables grouped in strongly connected components, parents before children."""
        return _components(self.tables)


def table_names(conn: apsw.Connection, schema: str = "main") -> list[str]:
    rows = conn.execute(f"PRAGMA {schema}.table_list").fetchall()
    # (schema, name, type, ncol, wr, strict)
    return sorted(
        r[1] for r in rows
        if r[2] == "table" and not r[1].startswith("sqlite_") and not r[1].startswith(INTERNAL_PREFIX)
    )


def column_names(conn: apsw.Connection, table: str, schema: str = "main") -> list[str]:
    """Stored columns a row can be written with (generated and hidden ones left out)."""
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_xinfo({q(table)})") if r[6] == 0]


def read_schema(conn: apsw.Connection, schema: str = "main") -> Schema:
    kinds = {r[1]: r for r in conn.execute(f"PRAGMA {schema}.table_list")}
    tables: dict[str, TableInfo] = {}
    for name in table_names(conn, schema):
        without_rowid = bool(kinds[name][4])
        xinfo = conn.execute(f"PRAGMA {schema}.table_xinfo({q(name)})").fetchall()
        # (cid, name, type, notnull, dflt, pk, hidden)
        columns = [r[1] for r in xinfo if r[6] == 0]
        pk = [r[1] for r in sorted((r for r in xinfo if r[5]), key=lambda r: r[5])]
        types = {r[1]: (r[2] or "").upper() for r in xinfo}
        surrogate = len(pk) == 1 and not without_rowid and types[pk[0]] == "INTEGER"
        sql = conn.execute(
            f"SELECT sql FROM {schema}.sqlite_master WHERE type='table' AND name=?", (name,)
        ).fetchone()[0] or ""
        autoinc = surrogate and "AUTOINCREMENT" in sql.upper()
        tables[name] = TableInfo(name, columns, pk, surrogate, autoinc, without_rowid)
    for info in tables.values():
        info.fks = _foreign_keys(conn, schema, info, tables)
        info.uniques = _uniques(conn, schema, info)
    triggers: dict[str, list[str]] = {}
    trigger_sql: dict[str, str] = {}
    for tname, tbl, tsql in conn.execute(
        f"SELECT name, tbl_name, sql FROM {schema}.sqlite_master WHERE type='trigger' ORDER BY name"
    ):
        triggers.setdefault(tbl, []).append(tname)
        trigger_sql[tname] = tsql
    return Schema(tables, triggers, trigger_sql)


def _foreign_keys(conn, schema: str, info: TableInfo, tables: dict[str, TableInfo]) -> list[ForeignKey]:
    groups: dict[int, list] = {}
    for r in conn.execute(f"PRAGMA {schema}.foreign_key_list({q(info.name)})"):
        # (id, seq, table, from, to, on_update, on_delete, match)
        groups.setdefault(r[0], []).append(r)
    out = []
    for _, rows in sorted(groups.items()):
        rows.sort(key=lambda r: r[1])
        parent = rows[0][2]
        cols = tuple(r[3] for r in rows)
        pinfo = tables.get(parent)
        if pinfo is None:
            # A parent we do not merge (missing, or one of Mulligan's own): values stay as they are.
            pcols = tuple(r[4] for r in rows) if all(r[4] for r in rows) else cols
            out.append(ForeignKey(info.name, cols, parent, pcols, rows[0][6]))
            continue
        if all(r[4] is None for r in rows):
            pcols = tuple(pinfo.pk) if pinfo.pk else ("rowid",)
        else:
            pcols = tuple(r[4] for r in rows)
        through = bool(pinfo.pk) and sorted(pcols) == sorted(pinfo.pk) and len(pcols) == len(pinfo.pk)
        order = tuple(pinfo.pk.index(c) for c in pcols) if through else ()
        out.append(ForeignKey(info.name, cols, parent, pcols, rows[0][6], through, order))
    return out


def _uniques(conn, schema: str, info: TableInfo) -> list[tuple[str, ...]]:
    out = []
    for r in conn.execute(f"PRAGMA {schema}.index_list({q(info.name)})").fetchall():
        # (seq, name, unique, origin, partial)
        if not r[2] or r[3] == "pk":
            continue
        cols = [c[2] for c in conn.execute(f"PRAGMA {schema}.index_info({q(r[1])})")]
        if any(c is None for c in cols):
            continue  # an expression index: not a column-level natural key we can look up
        group = tuple(cols)
        if sorted(group) != sorted(info.pk) and group not in out:
            out.append(group)
    return out


def _components(tables: dict[str, TableInfo]) -> list[list[str]]:
    """Tarjan's strongly connected components over parent edges, emitted parents first."""
    deps = {n: sorted({fk.parent for fk in t.fks if fk.parent in tables}) for n, t in tables.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        # Iterative to survive deep schemas.
        work = [(v, iter(deps[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(deps[w])))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))

    for n in sorted(tables):
        if n not in index:
            visit(n)
    # Tarjan emits a component only after everything it depends on: parents first already.
    return out
