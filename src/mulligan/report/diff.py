"""Renderers for diff and impact: text (rich), JSON dicts (docs/json.md), SQL, CSV."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..engines.sqlite.sqltext import sql_literal
from .tables import table

KIND_MARK = {"insert": "+", "update": "~", "delete": "-"}
KIND_STYLE = {"insert": "green", "update": "yellow", "delete": "red"}


# ---- values -------------------------------------------------------------------
def json_value(v: Any) -> Any:
    """A SQLite value as JSON: blobs as {"blob": hex}, non-finite reals as {"real": "inf"}."""
    if isinstance(v, bytes):
        return {"blob": v.hex()}
    if isinstance(v, float) and not math.isfinite(v):
        return {"real": "nan" if v != v else ("inf" if v > 0 else "-inf")}
    return v


def show_value(v: Any, width: int = 40) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        h = v.hex()
        return f"x'{h[:width]}…'" if len(h) > width else f"x'{h}'"
    if isinstance(v, str):
        s = v if len(v) <= width else v[: width - 1] + "…"
        return "'" + s.replace("\n", "\\n") + "'"
    return repr(v)


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---- diff: JSON -------------------------------------------------------------------
def _row_json(t, r) -> dict:
    out = {"kind": r.kind, "key": dict(zip(t.key, map(json_value, r.key))) if t.key else None,
           "before": dict(zip(t.columns, map(json_value, r.before))) if r.before is not None else None,
           "after": dict(zip(t.columns, map(json_value, r.after))) if r.after is not None else None}
    if r.kind == "update":
        out["changed"] = list(r.changed)
    if t.keyless:
        out["count"] = r.count
    return out


def diff_json(res, *, rows: bool = True) -> dict:
    d = res.diff
    changed = d.changed_tables
    totals = d.totals()
    return {
        "target": res.target,
        "from": res.from_state,
        "to": res.to_state,
        "summary": {"tables_changed": len(changed), **totals, "schema_changes": len(d.schema),
                    "tables_compared": len(d.tables), "tables_skipped_unread": sum(t.method == "skipped" for t in d.tables)},
        "schema": [{"kind": s.kind, "type": s.type, "name": s.name, "table": s.table, "before": s.before, "after": s.after,
                    "columns_added": s.columns_added, "columns_removed": s.columns_removed, "key_changed": s.key_changed}
                   for s in d.schema],
        "tables": [{"name": t.name, "status": t.status, "keyless": t.keyless, "schema_changed": t.schema_changed,
                    "key": t.key, "columns": t.columns, "inserted": t.inserted, "updated": t.updated,
                    "deleted": t.deleted, "method": t.method, "counters": t.counters,
                    **({"truncated": t.truncated, "rows": [_row_json(t, r) for r in t.rows]} if rows else {})}
                   for t in changed],
    }


# ---- diff: text -----------------------------------------------------------------------
def _notes(t) -> str:
    notes = []
    if t.counters:
        notes.append("AUTOINCREMENT counters, not in the total")
    if t.keyless:
        notes.append("primary key changed: compared as a multiset of rows" if t.schema_changed
                     else "no primary key: compared as a multiset of rows")
    if t.schema_changed:
        notes.append("schema changed: rows compared on common columns")
    return "; ".join(notes)


def render_diff_text(res, console: Console, *, rows: bool = True) -> None:
    d = res.diff
    changed = d.changed_tables
    a, b = res.from_state, res.to_state
    console.print(f"diff {escape(_state(a))} → {escape(_state(b))}")
    if not changed and not d.schema:
        console.print("no differences")
        return
    if changed:
        t = table("table", "status", "inserted", "updated", "deleted", "notes")
        for td in changed:
            t.add_row(escape(td.name), td.status, str(td.inserted), str(td.updated), str(td.deleted), _notes(td))
        tot = d.totals()
        t.add_row("[bold]total[/]", "", str(tot["inserted"]), str(tot["updated"]), str(tot["deleted"]), "")
        console.print(t)
    else:
        console.print("no row differs")
    if d.schema:
        console.print("\n[bold]schema changes[/]")
        for s in d.schema:
            extra = ""
            if s.columns_added or s.columns_removed:
                extra = f" (columns added: {', '.join(s.columns_added) or '-'}; removed: {', '.join(s.columns_removed) or '-'})"
            console.print(f"  {s.kind} {s.type} {escape(s.name)}{escape(extra)}")
    if not rows:
        return
    for td in changed:
        if not td.rows:
            continue
        console.print(f"\n[bold]{escape(td.name)}[/]" + (f" (key {', '.join(td.key)})" if td.key else " (no key)"))
        for r in td.rows:
            console.print(_row_line(td, r), soft_wrap=True)
        if td.truncated:
            console.print(f"  … {td.changes - len(td.rows)} more (raise --limit, or use --format json)")


def _state(s: dict) -> str:
    if s.get("snapshot"):
        return f"{s['snapshot']} ({s['time']})"
    return s.get("path") if s.get("kind") == "file" else s.get("spec") or "?"


def _row_line(td, r) -> str:
    mark, style = KIND_MARK[r.kind], KIND_STYLE[r.kind]
    key = ", ".join(f"{k}={show_value(v)}" for k, v in zip(td.key, r.key)) if td.key else ""
    times = f" ×{r.count}" if r.count != 1 else ""
    if r.kind == "update":
        i = {c: n for n, c in enumerate(td.columns)}
        body = "; ".join(f"{c}: {show_value(r.before[i[c]])} → {show_value(r.after[i[c]])}" for c in r.changed)
    else:
        vals = r.after if r.before is None else r.before
        body = ", ".join(f"{c}={show_value(v)}" for c, v in zip(td.columns, vals) if c not in td.key)
    return f"  [{style}]{mark}[/] {escape(key)}{times}  {escape(body)}"


# ---- diff: SQL -------------------------------------------------------------------------
def _where(cols: list[str], vals) -> str:
    return " AND ".join(f"{q(c)} IS {sql_literal(v)}" for c, v in zip(cols, vals))


def _insert(table_: str, cols: list[str], vals) -> str:
    return f"INSERT INTO {q(table_)}({', '.join(map(q, cols))}) VALUES({', '.join(map(sql_literal, vals))});"


def diff_sql(res) -> str:
    """A script that turns FROM into TO (run it with foreign keys off, as it says)."""
    d = res.diff
    by_name = {t.name: t for t in d.tables}
    changes = {(s.type, s.name): s for s in d.schema}
    rebuilt = {t.name for t in d.tables if t.schema_changed or t.status in ("added", "removed")}
    touched = {t.name for t in d.tables if t.changes} | rebuilt
    out = [f"-- mulligan diff: turns {_state(res.from_state)} into {_state(res.to_state)}",
           "PRAGMA foreign_keys=OFF;", "BEGIN;"]
    # triggers must not fire while rows are replayed: drop them, create TO's afterwards
    for typ, name, tbl, sql in d.objects_from:
        if typ == "trigger" and (tbl in touched or ("trigger", name) in changes):
            out.append(f"DROP TRIGGER IF EXISTS {q(name)};")
    for typ, name, tbl, sql in d.objects_from:
        if typ in ("view", "index") and ("view" == typ or tbl not in rebuilt) and (typ, name) in changes:
            out.append(f"DROP {typ.upper()} IF EXISTS {q(name)};")
    for t in d.tables:
        if t.name == "sqlite_sequence":
            continue
        if t.status == "removed" or (t.schema_changed and t.status == "changed"):
            out.append(f"DROP TABLE {q(t.name)};")
        if t.status == "added" or t.schema_changed:
            create = next(s.after for s in d.schema if s.type == "table" and s.name == t.name)
            out.append(create.rstrip(";") + ";")
            if t.status == "added":
                out.extend(_insert(t.name, t.columns, r.after) for r in t.rows)
            elif t.rebuild is None:
                out.append(f"-- the rows of {t.name} were not read; diff again with --format sql")
            else:
                out.extend(_insert(t.name, t.to_columns, row) for row in t.rebuild)
    for kind in ("delete", "update", "insert"):
        for t in d.tables:
            if t.name in rebuilt or t.name == "sqlite_sequence":
                continue
            for r in t.rows:
                if r.kind != kind:
                    continue
                if kind == "insert":
                    out.extend([_insert(t.name, t.columns, r.after)] * r.count)
                elif kind == "delete" and t.keyless:
                    sel = f"SELECT rowid FROM {q(t.name)} WHERE {_where(t.columns, r.before)} LIMIT {r.count}"
                    out.append(f"DELETE FROM {q(t.name)} WHERE rowid IN ({sel});")
                elif kind == "delete":
                    out.append(f"DELETE FROM {q(t.name)} WHERE {_where(t.key, r.key)};")
                else:
                    i = {c: n for n, c in enumerate(t.columns)}
                    sets = ", ".join(f"{q(c)}={sql_literal(r.after[i[c]])}" for c in r.changed)
                    out.append(f"UPDATE {q(t.name)} SET {sets} WHERE {_where(t.key, r.key)};")
    seq = by_name.get("sqlite_sequence")
    if seq is not None and seq.changes and seq.status != "removed":
        out.append('DELETE FROM "sqlite_sequence";')
        rows = seq.rebuild if seq.rebuild is not None else [r.after for r in seq.rows if r.after is not None]
        out.extend(_insert("sqlite_sequence", seq.to_columns or seq.columns, row) for row in rows)
    for typ in ("index", "view", "trigger"):
        for t2, name, tbl, sql in d.objects_to:
            if t2 != typ:
                continue
            if (typ, name) in changes or tbl in rebuilt and typ != "view" or (typ == "trigger" and tbl in touched):
                out.append(sql.rstrip(";") + ";")
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


# ---- impact -----------------------------------------------------------------------------
def _counts(c: dict) -> str:
    return " ".join(f"{KIND_MARK[k]}{n}" for k, n in c.items() if n)


def impact_json(res) -> dict:
    return {
        "target": res.target, "from": res.from_state, "to": res.to_state,
        "users_table": res.users_table, "message": res.message, "owners": res.owners,
        "users": [{"id": json_value(u.id), "label": u.label, "total": u.total, "tables": u.counts,
                   "earliest": u.earliest, "latest": u.latest} for u in res.users],
        "unowned": res.unowned,
        "tables": res.tables,
    }


def render_impact_text(res, console: Console) -> None:
    console.print(f"impact {escape(_state(res.from_state))} → {escape(_state(res.to_state))}")
    if res.message:
        console.print(escape(res.message))
    if res.users_table:
        t = table("user", "label", "changes", "by table (+ inserted ~ updated - deleted)", "earliest", "latest")
        for u in res.users:
            per = "; ".join(f"{tb} {_counts(c)}" for tb, c in u.counts.items())
            t.add_row(escape(str(u.id)), escape(u.label or ""), str(u.total), escape(per), u.earliest or "", u.latest or "")
        console.print(t if res.users else "no user's rows differ")
        if res.unowned:
            console.print("\n[bold]rows without an owner[/]")
            for tb, c in res.unowned.items():
                console.print(f"  {escape(tb)} {_counts(c)}  (owner: {escape(res.owners.get(tb, 'none'))})")
        return
    t = table("table", "inserted", "updated", "deleted")
    for tb, c in res.tables.items():
        t.add_row(escape(tb), str(c["insert"]), str(c["update"]), str(c["delete"]))
    console.print(t)


def impact_csv(res) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["user_id", "label", "table", "inserted", "updated", "deleted", "earliest", "latest"])
    for u in res.users:
        for tb, c in u.counts.items():
            w.writerow([u.id, u.label or "", tb, c["insert"], c["update"], c["delete"], u.earliest or "", u.latest or ""])
    for tb, c in res.unowned.items():
        w.writerow(["", "(no owner)", tb, c["insert"], c["update"], c["delete"], "", ""])
    return buf.getvalue()
