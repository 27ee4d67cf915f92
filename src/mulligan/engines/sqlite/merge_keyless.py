"""Tables without a declared key: a multiset of whole rows, merged by copies.

A row has no identity other than its content, so there is nothing to remap or
to merge cell by cell. LOST's extra copies of a row (foreign keys rewritten
through the key maps first) are inserted, less any copies CURRENT added of the
very same row since BASE (a link written on both sides is one fact, not two);
LOST's removed copies are deleted from CURRENT as far as CURRENT still has
them. A keyless row's "key" in the plan and the result is the whole row.

``p`` is the planner (:class:`mulligan.engines.sqlite.merge._Planner`).
"""

from __future__ import annotations

from .merge_model import CONFLICT, MISSING_PARENT, PARENT_CONFLICT, PRESENT, REPLAYED, UNIQUE, Write, fmt_key
from .merge_schema import q


def count_rows(p, table: str, row: dict) -> int:
    cols = list(row)
    where = " AND ".join(f"{q(c)} IS ?" for c in cols)
    return p.conn.execute(f"SELECT count(*) FROM main.{q(table)} WHERE {where}", tuple(row.values())).fetchone()[0]


def plan_keyless(p, name: str) -> None:
    info = p.tables[name]
    tc = p.lost.tables[name]
    cols = [c for c in info.columns if c in tc.lost_columns]
    for base_row, base_n, lost_n in tc.removed:
        row = {c: base_row[c] for c in cols}
        key = tuple(row.values())
        gone = min(base_n - lost_n, count_rows(p, name, row))
        if gone:
            p.deletes[name].append(Write(name, "delete", key, row, gone, old=row))
            p.outcome(name, "delete", key, REPLAYED, None, f"{gone} cop{'y' if gone == 1 else 'ies'}")
        if gone < base_n - lost_n:
            p.outcome(name, "delete", key, PRESENT, None, "CURRENT had already removed it")
    for lost_row, lost_n, base_n in tc.added:
        row = {c: lost_row[c] for c in cols}
        lost_key = tuple(row.values())
        mapped, blocked, missing = p.map_refs(name, row)
        if blocked or missing:
            kind = PARENT_CONFLICT if blocked else MISSING_PARENT
            why = (f"refers to a lost row that is not replayed: {'; '.join(blocked)}" if blocked
                   else f"refers to a row CURRENT no longer has: {'; '.join(missing)}")
            p.conflict(name, kind, lost_key, why, rows={"lost": mapped, "current": None})
            p.outcome(name, "insert", lost_key, CONFLICT, None, why)
            continue
        key = tuple(mapped.values())
        already = count_rows(p, name, mapped) - (base_n if key == lost_key else 0)
        copies = (lost_n - base_n) - max(0, already)
        if copies <= 0:
            p.outcome(name, "insert", lost_key, PRESENT, key, "CURRENT already has the same row")
            continue
        clash = p.unique_clash(name, mapped, None)
        if clash is not None:
            group, other = clash
            why = (f"CURRENT already has {', '.join(group)} = {fmt_key(tuple(mapped[c] for c in group))}; "
                   "a human decides")
            p.conflict(name, UNIQUE, lost_key, why, rows={"lost": mapped, "current": other})
            p.outcome(name, "insert", lost_key, CONFLICT, None, why)
            continue
        for _ in range(copies):
            p.inserts[name].append(Write(name, "insert", key, mapped))
        p.outcome(name, "insert", lost_key, REPLAYED, key, f"{copies} cop{'y' if copies == 1 else 'ies'}" if copies > 1 else "")
