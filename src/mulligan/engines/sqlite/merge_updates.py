"""LOST's updates, merged cell by cell into CURRENT.

A column (or a whole composite foreign key: it moves as one) that only LOST
changed is replayed, with foreign keys rewritten through the key maps; one that
both changed differently is a conflict and CURRENT's value stays. An update of
a row CURRENT deleted is a conflict and the row stays deleted.

UNIQUE values may move between rows (LOST renamed 'bob' to 'rob' and another
row to 'bob'). SQLite checks uniqueness row by row, so the update that frees a
value must run before the one that takes it: updates are ordered accordingly,
and a value that would have to pass through a cycle (a swap) is a conflict.

``p`` is the planner (:class:`mulligan.engines.sqlite.merge._Planner`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .merge_deletes import value_provided
from .merge_model import (
    CELL, CONFLICT, MERGED, MISSING_PARENT, PARENT_CONFLICT, PRESENT, REFERENCED, REPLAYED, UNIQUE, UPDATE_DELETED,
    Write, fmt_key, same,
)


@dataclass(eq=False)
class _Pending:
    key: tuple
    base: dict
    lost: dict
    cur: dict
    sets: dict = field(default_factory=dict)
    cells: dict = field(default_factory=dict)  # column -> {base, lost, current, kind}
    reasons: list = field(default_factory=list)
    current_changed_other: bool = False


def units(p, name: str, cols: list[str]) -> list[tuple[str, ...]]:
    """Columns merged together: each composite foreign key is one unit."""
    out: list[set[str]] = [{c} for c in cols]
    for fk in p.fks(name, cols):
        group = set(fk.columns)
        merged = set(group)
        rest = []
        for u in out:
            if u & group:
                merged |= u
            else:
                rest.append(u)
        out = rest + [merged]
    order = {c: i for i, c in enumerate(cols)}
    return sorted((tuple(sorted(u, key=order.get)) for u in out), key=lambda u: order[u[0]])


def plan_updates(p, name: str) -> None:
    info = p.tables[name]
    tc = p.lost.tables[name]
    cols = [c for c in tc.compare_columns if c in info.columns and c not in info.pk]
    groups = p.units_of[name] = units(p, name, cols)
    pending: list[_Pending] = []
    for key, (base_row, lost_row) in tc.updates.items():
        cur = p.current_row(name, key)
        if cur is None:
            p.conflict(
                name, UPDATE_DELETED, key, "LOST updated this row, CURRENT deleted it; it stays deleted",
                columns={c: {"base": base_row[c], "lost": lost_row[c], "current": None}
                         for c in cols if not same(lost_row[c], base_row[c])},
                rows={"base": base_row, "lost": lost_row, "current": None},
            )
            p.outcome(name, "update", key, CONFLICT, None, "updated in LOST, deleted in CURRENT")
            continue
        pd = _Pending(key, base_row, lost_row, cur)
        _merge_cells(p, name, groups, pd)
        pending.append(pd)
    ordered = _settle_unique(p, name, pending)
    for pd in ordered:
        _emit(p, name, pd)


def _merge_cells(p, name: str, groups, pd: _Pending) -> None:
    mapped, _, _ = p.map_refs(name, {c: pd.lost[c] for g in groups for c in g})
    for unit in groups:
        lost_changed = any(not same(pd.lost[c], pd.base[c]) for c in unit)
        cur_changed = any(not same(pd.cur[c], pd.base[c]) for c in unit)
        if not lost_changed:
            pd.current_changed_other |= cur_changed
            continue
        if all(same(pd.cur[c], mapped[c]) for c in unit):
            continue
        refusal = _unit_refusal(p, name, unit, pd.lost) or _still_referenced(p, name, unit, pd.key, pd.cur)
        if refusal is None and cur_changed:
            refusal = (CELL, "changed differently in LOST and CURRENT; CURRENT's value stays")
        if refusal is not None:
            _refuse_cells(pd, unit, refusal, {c: mapped[c] for c in unit})
            continue
        for c in unit:
            pd.sets[c] = mapped[c]


def _refuse_cells(pd: _Pending, unit, refusal, lost_values: dict) -> None:
    pd.reasons.append(f"{', '.join(unit)}: {refusal[1]}")
    for c in unit:
        pd.cells[c] = {"base": pd.base[c], "lost": lost_values[c], "current": pd.cur[c], "kind": refusal[0]}


def _unit_refusal(p, name: str, unit: tuple[str, ...], lost_row: dict) -> tuple[str, str] | None:
    _, blocked, missing = p.map_refs(name, {c: lost_row[c] for c in unit})  # LOST's own values
    if blocked:
        return PARENT_CONFLICT, f"refers to a lost row that is not replayed: {'; '.join(blocked)}"
    if missing:
        return MISSING_PARENT, f"refers to a row CURRENT no longer has: {'; '.join(missing)}"
    return None


def _still_referenced(p, name: str, unit: tuple[str, ...], key: tuple, cur: dict) -> tuple[str, str] | None:
    """A column other rows refer to by value (REFERENCES t(handle)) must not change under them.

    Rows of CURRENT that refer to the old value stay with it unless the replay
    deletes them, LOST itself pointed them elsewhere (and CURRENT did not), or
    the replay gives the old value to another row (LOST moved it there). The
    last is taken on trust here and checked once the plan is known.
    """
    for fk in p.schema.children_of(name):
        if fk.through_key or fk.child not in p.tables or not set(fk.parent_columns) & set(unit):
            continue
        old = tuple(cur.get(c) for c in fk.parent_columns)
        if any(v is None for v in old) or not _referrers_stay(p, fk, old):
            continue
        if (name, key) not in p.keep_values and value_provided(p, fk, dict(zip(fk.parent_columns, old)), trust_lost=True):
            p.value_deps.append((name, key, fk, old))
            continue
        return REFERENCED, f"CURRENT's {fk.child} rows still refer to the old value; CURRENT's value stays"
    return None


def _referrers_stay(p, fk, old: tuple) -> bool:
    """Some row of CURRENT refers to ``old`` and the replay neither deletes it nor points it elsewhere."""
    child = p.tables[fk.child]
    lost_child = p.lost.tables[fk.child]
    for row in p.rows_where(fk.child, fk.columns, old):
        if child.keyless:
            if any(all(same(r.get(c), row[c]) for c in r) for r, _, _ in lost_child.removed):
                continue
            return True
        ck = tuple(row[c] for c in child.pk)
        if ck in p.planned_deletes[fk.child]:
            continue
        upd = lost_child.updates.get(ck)
        if upd is not None and all(c in upd[1] for c in fk.columns) \
                and any(not same(upd[1][c], upd[0][c]) for c in fk.columns) \
                and all(same(row[c], upd[0][c]) for c in fk.columns):
            continue
        return True
    return False


def _settle_unique(p, name: str, pending: list[_Pending]) -> list[_Pending]:
    """Refuse UNIQUE values CURRENT keeps; order the rest so a value is freed before it is taken."""
    info = p.tables[name]
    for _ in range(len(pending) + 2):
        p.moved[name] = {pd.key: pd.sets for pd in pending if pd.sets}
        changed = False
        for pd in pending:
            if not pd.sets:
                continue
            clash = p.unique_clash(name, {**pd.cur, **pd.sets}, pd.key, touched=pd.sets)
            if clash is not None:
                group, other = clash
                unit = _expand(p, name, [c for c in group if c in pd.sets])
                why = f"CURRENT's row {fmt_key(tuple(other[c] for c in info.pk))} already has that value"
                _refuse_cells(pd, unit, (UNIQUE, why), {c: pd.sets.pop(c) for c in unit})
                changed = True
        changed |= _refuse_merged_duplicates(p, name, pending)
        if changed:
            continue
        _record_taken(p, name, pending)
        ordered, cycle = _order(p, name, pending)
        if not cycle:
            return ordered
        for pd in cycle:
            unit = _expand(p, name, [c for g in info.uniques for c in g if c in pd.sets])
            _refuse_cells(pd, unit, (UNIQUE, "a UNIQUE value swapped between rows: a human decides the order"),
                          {c: pd.sets.pop(c) for c in unit})
    raise RuntimeError("UNIQUE moves did not settle")  # pragma: no cover - every pass refuses at least one cell


def _expand(p, name: str, cols: list[str]) -> tuple[str, ...]:
    """The columns, grown to whole units: part of a composite foreign key is never refused alone."""
    out = set(cols)
    for unit in p.units_of.get(name, []):
        if out & set(unit):
            out |= set(unit)
    return tuple(c for c in p.tables[name].columns if c in out)


def _refuse_merged_duplicates(p, name: str, pending: list[_Pending]) -> bool:
    """Two rows that would end with the same UNIQUE values: a cell merge can make a pair neither side had."""
    info = p.tables[name]
    refused = False
    for group in info.uniques:
        seen: dict[tuple, _Pending] = {}
        for pd in pending:
            row = {**pd.cur, **pd.sets}
            vals = tuple(row[c] for c in group)
            if any(v is None for v in vals):
                continue
            first = seen.setdefault(vals, pd)
            if first is pd:
                continue
            loser = pd if any(c in pd.sets for c in group) else first
            unit = _expand(p, name, [c for c in group if c in loser.sets])
            other = first if loser is pd else pd
            why = f"row {fmt_key(other.key)} would end with the same {', '.join(group)}"
            _refuse_cells(loser, unit, (UNIQUE, why), {c: loser.sets.pop(c) for c in unit if c in loser.sets})
            refused = True
    return refused


def _record_taken(p, name: str, pending: list[_Pending]) -> None:
    """UNIQUE values the replayed updates give rows, which lost inserts must not take as well."""
    taken = p.taken[name] = {}
    for pd in pending:
        if not pd.sets:
            continue
        row = {**pd.cur, **pd.sets}
        for group in p.tables[name].uniques:
            if any(c in pd.sets for c in group):
                vals = tuple(row[c] for c in group)
                if not any(v is None for v in vals):
                    taken[(group, vals)] = (pd.key, row)


def _order(p, name: str, pending: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """Updates freeing a UNIQUE value before the ones taking it (Kahn); and those caught in a cycle."""
    info = p.tables[name]
    by_key = {pd.key: pd for pd in pending}
    after: dict[tuple, set] = {pd.key: set() for pd in pending}  # key -> keys that must run first
    for pd in pending:
        for group in info.uniques:
            if not any(c in pd.sets for c in group):
                continue
            vals = tuple({**pd.cur, **pd.sets}[c] for c in group)
            if any(v is None for v in vals):
                continue
            for other in p.rows_where(name, group, vals):
                okey = tuple(other[c] for c in info.pk)
                if okey != pd.key and okey in by_key and by_key[okey].sets:
                    after[pd.key].add(okey)
    if not any(after.values()):
        return list(pending), []  # the common case: no value moves between rows
    waiting = {k: len(v) for k, v in after.items()}
    unblocks: dict[tuple, list] = {}
    for k, firsts in after.items():
        for f in firsts:
            unblocks.setdefault(f, []).append(k)
    ready = deque(pd.key for pd in pending if not waiting[pd.key])
    ordered = []
    while ready:
        k = ready.popleft()
        ordered.append(by_key[k])
        for nxt in unblocks.get(k, ()):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    done = {pd.key for pd in ordered}
    return ordered, [pd for pd in pending if pd.key not in done]


def _emit(p, name: str, pd: _Pending) -> None:
    if pd.cells:
        kinds = {v["kind"] for v in pd.cells.values()}
        kind = CELL if kinds == {CELL} else sorted(kinds - {CELL})[0]
        p.conflict(
            name, kind, pd.key, "; ".join(pd.reasons),
            columns={c: {k: v for k, v in d.items() if k != "kind"} for c, d in pd.cells.items()},
            rows={"base": pd.base, "lost": pd.lost, "current": pd.cur},
        )
    if pd.sets:
        p.updates[name].append(Write(name, "update", pd.key, pd.sets, old=pd.cur))
    if pd.cells:
        p.outcome(name, "update", pd.key, CONFLICT, pd.key, "other columns replayed" if pd.sets else "")
    elif pd.sets:
        p.outcome(name, "update", pd.key, MERGED if pd.current_changed_other else REPLAYED, pd.key)
    else:
        p.outcome(name, "update", pd.key, PRESENT, pd.key, "CURRENT already has LOST's values")
