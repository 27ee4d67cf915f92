"""Rendering a recovery: the plan as text (rich), as JSON, and as a reviewable SQL script.

JSON shape (``recover --json``), stable for scripts::

    {"kind": "recovery-plan" | "recovery-result", "applied": bool,
     "base": path, "lost": path, "current": path,
     "tables": {table: {"inserts", "updates", "deletes", "remapped", "conflicts", "skipped", "present"}},
     "totals": {same keys}, "rows_recovered": int, "remapped": int,
     "key_map": {table: [{"lost": [key...], "now": [key...]}]},
     "conflicts": [{"table", "kind", "key", "reason", "columns": {col: {"base", "lost", "current"}},
                    "rows": {"base"|"lost"|"current": {col: value} | null}}],
     "rows": [{"table", "change", "lost_key", "status", "key", "detail",
               "owner": {"user", "now", "label"} | null}],
     "users": [{"user", "label", "now", "rows", "back", "remapped", "conflicts", "skipped"}],  # most affected first
     "counters": {table: seq}, "skipped_tables": {table: why},
     "triggers": {"enabled": bool, "tables": {table: [trigger...]}},
     "already_applied": {"applied_at", "writes", "remapped", "conflicts"} | null,
     "warnings": [str], "seconds": float,
     # recovery-result only:
     "undo_point": id | null, "lock_seconds": float, "check_seconds": float,
     "preexisting_fk_violations": [..]}

Values follow docs/json.md: a BLOB is ``{"blob": "<hex>"}``, a non-finite real ``{"real": "inf"}``.
A keyless table's ``key`` / ``lost_key`` is the whole row.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..engines.sqlite.merge_apply import sql_script
from ..ops.recover import RecoveryPlan, RecoveryResult
from .diff import json_value
from .tables import table

COUNT_KEYS = ("inserts", "updates", "deletes", "remapped", "conflicts", "skipped", "present")


def _v(value):
    return json_value(value)


def _key(key):
    return None if key is None else [_v(v) for v in key]


def _row(row):
    return None if row is None else {c: _v(v) for c, v in row.items()}


def recovery_json(obj: RecoveryPlan | RecoveryResult) -> dict:
    result = obj if isinstance(obj, RecoveryResult) else None
    plan = result.plan if result else obj
    tables = {n: {k: getattr(t, k) for k in COUNT_KEYS} for n, t in plan.tables.items()}
    totals = {k: sum(t[k] for t in tables.values()) for k in COUNT_KEYS}
    out = {
        "kind": "recovery-result" if result else "recovery-plan",
        "applied": bool(result and result.applied),
        "base": plan.base,
        "lost": plan.lost,
        "current": plan.current,
        "tables": tables,
        "totals": totals,
        "rows_recovered": totals["inserts"] + totals["updates"] + totals["deletes"],
        "remapped": totals["remapped"],
        "key_map": {
            t: [{"lost": _key(a), "now": _key(b)} for a, b in m.items()] for t, m in plan.key_map.items()
        },
        "conflicts": [
            {
                "table": c.table,
                "kind": c.kind,
                "key": _key(c.key),
                "reason": c.reason,
                "columns": {col: {k: _v(v) for k, v in d.items()} for col, d in c.columns.items()},
                "rows": {k: _row(r) for k, r in c.rows.items()},
            }
            for c in plan.conflicts
        ],
        "rows": [
            {
                "table": r.table,
                "change": r.change,
                "lost_key": _key(r.lost_key),
                "status": r.status,
                "key": _key(r.key),
                "detail": r.detail,
                "owner": {k: _v(v) for k, v in r.owner.items()} if r.owner else None,
            }
            for r in plan.rows
        ],
        "users": [{k: _v(v) for k, v in u.items()} for u in by_user(plan)],
        "counters": dict(plan.merge.counters),
        "skipped_tables": dict(plan.merge.skipped_tables),
        "triggers": {"enabled": plan.triggers_enabled, "tables": plan.merge.triggers},
        "already_applied": plan.merge.already_applied,
        "warnings": list(plan.warnings),
        "seconds": round(plan.seconds, 4),
    }
    if result:
        out.update({
            "undo_point": result.undo_point,
            "lock_seconds": round(result.lock_seconds, 4),
            "check_seconds": round(result.check_seconds, 4),
            "seconds": round(result.seconds, 4),
            "preexisting_fk_violations": result.preexisting_fk_violations,
        })
    return out


def by_user(plan: RecoveryPlan) -> list[dict]:
    """Lost rows per owner: what support tells each user. Most affected first."""
    users: dict = {}
    for r in plan.rows:
        if not r.owner:
            continue
        u = users.setdefault(r.owner["user"], {"user": r.owner["user"], "label": r.owner["label"], "now": r.owner["now"],
                                               "rows": 0, "back": 0, "remapped": 0, "conflicts": 0, "skipped": 0})
        u["rows"] += 1
        u["back"] += r.status in ("replayed", "remapped", "merged", "present")
        u["remapped"] += r.status == "remapped"
        u["conflicts"] += r.status == "conflict"
        u["skipped"] += r.status == "skipped"
    return sorted(users.values(), key=lambda u: (-u["rows"], str(u["label"])))


def recovery_sql(plan: RecoveryPlan) -> str:
    header = (
        "Mulligan recovery plan: replays what LOST changed into CURRENT.\n"
        f"BASE    {plan.base}\nLOST    {plan.lost}\nCURRENT {plan.current}\n"
        f"{len(plan.merge.writes)} statements, {len(plan.conflicts)} conflicts left for a human (not in this script).\n"
        "Computed ahead: if users wrote since, 'mulligan recover --apply' plans again under the write lock."
    )
    return sql_script(plan.merge, header=header, triggers=plan.triggers_enabled)


def _fmt_key(key) -> str:
    if key is None:
        return "-"
    return ", ".join(str(v) for v in key)


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return f"x'{v.hex()[:16]}{'…' if len(v) > 8 else ''}'"
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 40 else s[:39] + "…"


def render_recovery_text(obj: RecoveryPlan | RecoveryResult, out: Console, *, limit: int | None = 20) -> None:
    result = obj if isinstance(obj, RecoveryResult) else None
    plan = result.plan if result else obj
    if result:
        out.print(f"[bold green]Recovery applied[/] to {plan.current}"
                  + (f"; undo point {result.undo_point}" if result.undo_point else ""))
    else:
        out.print(f"[bold]Recovery plan[/] for {plan.current} (nothing written; --apply runs it)")
    out.print(f"BASE {plan.base}\nLOST {plan.lost}")

    if not plan.rows:
        out.print("Nothing to recover: LOST has no changes since BASE in the tables CURRENT has.")
        return
    t = table("table", "inserts", "updates", "deletes", "remapped", "conflicts", "skipped", "already there")
    for name, p in plan.tables.items():
        t.add_row(name, *(str(getattr(p, k)) for k in COUNT_KEYS))
    out.print(t)
    n = {k: sum(getattr(p, k) for p in plan.tables.values()) for k in COUNT_KEYS}
    verb = "written back" if result else "to write back"
    out.print(f"{n['inserts'] + n['updates'] + n['deletes']} lost change(s) {verb}, {n['remapped']} under a new key; "
              f"{len(plan.conflicts)} conflict(s) and {n['skipped']} skipped delete(s) for a human")

    if plan.key_map:
        km = table("table", "lost key", "new key", title="Key map (lost rows written under a new key)")
        for name, m in plan.key_map.items():
            items = list(m.items())
            for a, b in items[: limit if limit is not None else len(items)]:
                km.add_row(name, _fmt_key(a), _fmt_key(b))
            if limit is not None and len(items) > limit:
                km.add_row(name, f"… {len(items) - limit} more", "(--json has all)")
        out.print(km)

    users = by_user(plan)
    if users:
        ut = table("user", "now", "lost rows", "back", "new key", "conflict", "skipped", title="By user (whose the lost rows are)")
        for u in users[: limit if limit is not None else len(users)]:
            now = "-" if u["now"] is None else str(u["now"])
            ut.add_row(str(u["label"] if u["label"] is not None else u["user"]), now, str(u["rows"]),
                       str(u["back"]), str(u["remapped"]), str(u["conflicts"]), str(u["skipped"]))
        if limit is not None and len(users) > limit:
            ut.add_row(f"… {len(users) - limit} more", "", "", "", "", "", "")
        out.print(ut)

    if plan.conflicts:
        out.print(f"[bold yellow]{len(plan.conflicts)} conflict(s)[/]: CURRENT's data stays; LOST's is shown for a human")
        shown = plan.conflicts if limit is None else plan.conflicts[:limit]
        for c in shown:
            out.print(f"  [bold]{c.table}[/] {_fmt_key(c.key)} [yellow]{c.kind}[/]: {c.reason}")
            if c.columns:
                ct = Table(show_header=True, header_style="dim", box=None, padding=(0, 2))
                for h in ("column", "base", "lost", "current"):
                    ct.add_column(h)
                for col, d in c.columns.items():
                    ct.add_row(col, _cell(d.get("base")), _cell(d.get("lost")), _cell(d.get("current")))
                out.print(ct)
            elif c.rows:
                for side in ("lost", "current"):
                    r = c.rows.get(side)
                    if r is not None:
                        out.print(f"    {side:8} " + ", ".join(f"{k}={_cell(v)}" for k, v in r.items()))
        if limit is not None and len(plan.conflicts) > limit:
            out.print(f"  … {len(plan.conflicts) - limit} more (--json lists every one)")
    else:
        out.print("No conflicts.")

    if plan.merge.counters:
        out.print("Counters raised: " + ", ".join(f"{t} → {v}" for t, v in plan.merge.counters.items()))
    if result:
        out.print(f"Write lock held {result.lock_seconds:.3f} s (checks {result.check_seconds:.3f} s); "
                  f"foreign_key_check and integrity_check passed.")
