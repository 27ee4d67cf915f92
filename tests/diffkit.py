"""Helpers shared by the diff and impact tests: build pairs of databases, ask sqldiff, read our answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import apsw
import sqldiff

from mulligan.engines.sqlite.diff import DatabaseDiff


def build(path: Path | str, script: str) -> str:
    conn = apsw.Connection(str(path))
    run(conn, script)
    conn.close()
    return str(path)


def run(conn: apsw.Connection, script: str) -> None:
    """Every statement of a script (apsw stops at a statement returning rows until it is read)."""
    for _ in conn.execute(script):
        pass


def derive(src: str, dst: Path | str, script: str) -> str:
    """A copy of ``src`` changed by ``script``."""
    shutil.copyfile(src, dst)
    return build(dst, script)


def sqldiff_changes(a: str, b: str, scratch: Path, tables: list[str] | None = None) -> set[tuple]:
    """What sqldiff --primarykey says changes, as (table, kind, quoted key, changed columns).

    sqldiff's SQL is run on a copy of A whose temporary triggers log each change,
    so nothing parses SQL text.
    """
    if tables is None:
        sql = sqldiff.diff(a, b, primary_key=True)
    else:
        sql = "".join(sqldiff.diff(a, b, table=t, primary_key=True) for t in tables)
    work = scratch / "sqldiff-replay.db"
    shutil.copyfile(a, work)
    conn = apsw.Connection(str(work))
    conn.execute("CREATE TEMP TABLE log(tbl, kind, k, changed)")
    if tables is None:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    for t in tables:
        info = conn.execute("SELECT name, pk FROM pragma_table_info(?)", (t,)).fetchall()
        key = [n for n, p in sorted((r for r in info if r[1]), key=lambda r: r[1])]
        cols = [r[0] for r in info]

        def k(side: str) -> str:  # a keyless table: sqldiff pairs its rows by rowid
            return " || ',' || ".join(f'quote({side}."{c}")' for c in key) if key else f"quote({side}.rowid)"

        changed = " || ".join(f"""CASE WHEN OLD."{c}" IS NOT NEW."{c}" THEN '{c},' ELSE '' END""" for c in cols)
        conn.execute(f"""
            CREATE TEMP TRIGGER "log_i_{t}" AFTER INSERT ON main."{t}" BEGIN
              INSERT INTO log VALUES ('{t}', 'insert', {k('NEW')}, ''); END;
            CREATE TEMP TRIGGER "log_d_{t}" AFTER DELETE ON main."{t}" BEGIN
              INSERT INTO log VALUES ('{t}', 'delete', {k('OLD')}, ''); END;
            CREATE TEMP TRIGGER "log_u_{t}" AFTER UPDATE ON main."{t}" BEGIN
              INSERT INTO log VALUES ('{t}', 'update', {k('NEW')}, {changed}); END;""")
    conn.execute(sql)
    out = {(t, kind, key, frozenset(filter(None, ch.split(",")))) for t, kind, key, ch in conn.execute("SELECT * FROM log")}
    conn.close()
    return out


def our_changes(d: DatabaseDiff) -> set[tuple]:
    conn = apsw.Connection(":memory:")
    out = set()
    for t in d.tables:
        for r in t.rows:
            key = ",".join(conn.execute("SELECT quote(?)", (v,)).fetchone()[0] for v in r.key)
            out.add((t.name, r.kind, key, frozenset(r.changed)))
    return out


def content(path: str) -> dict:
    """Every user table's rows (a sorted multiset) and schema, for comparing databases."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    out = {}
    for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
        quoted = name.replace('"', '""')
        rows = conn.execute(f'SELECT * FROM "{quoted}"').fetchall()
        out[name] = (sql, sorted(rows, key=repr))
    out["(objects)"] = sorted(conn.execute("SELECT type, name, sql FROM sqlite_schema WHERE type != 'table'").fetchall(),
                              key=repr)
    conn.close()
    return out
