"""The first step of a recovery plan: LOST's deletes.

A row CURRENT left as BASE had it is deleted; a row CURRENT changed is a
conflict (CURRENT's row stays); a row CURRENT already deleted needs nothing.
A delete whose row still has children in CURRENT that the replay neither
deletes nor points elsewhere (children written after the mistake) is not
replayed but reported, and that is repeated until nothing changes, since a
kept child keeps its own parent too. Nothing cascades: the apply runs with
foreign-key enforcement off.

``p`` is the planner (:class:`mulligan.engines.sqlite.merge._Planner`).
"""

from __future__ import annotations

from .merge_model import CONFLICT, DELETE_UPDATED, PRESENT, REPLAYED, SKIPPED, Write, fmt_key, same, sort_key
from .merge_schema import ForeignKey, q


def plan_deletes(p, name: str) -> None:
    tc = p.lost.tables[name]
    cols = [c for c in tc.compare_columns if c in p.tables[name].columns]
    for key, base_row in tc.deletes.items():
        cur = p.current_row(name, key)
        if cur is None:
            p.outcome(name, "delete", key, PRESENT, None, "CURRENT had already deleted it")
            continue
        changed = [c for c in cols if not same(cur[c], base_row[c])]
        if changed:
            p.conflict(
                name, DELETE_UPDATED, key,
                "LOST deleted this row, CURRENT updated it; CURRENT's row stays",
                columns={c: {"base": base_row[c], "lost": None, "current": cur[c]} for c in changed},
                rows={"base": base_row, "current": cur},
            )
            p.outcome(name, "delete", key, CONFLICT, key, "deleted in LOST, updated in CURRENT")
            continue
        p.planned_deletes[name].add(key)


def keep_parents_of_new_children(p) -> bool:
    """A lost delete of a row that still has children in CURRENT is not replayed.

    Run once before the inserts and updates are planned (trusting that LOST's
    updates moving a child elsewhere will be replayed), and again after (when
    it is known which were); returns whether any delete was dropped.
    """
    reasons = p.delete_skips
    dropped = False
    changed = True
    while changed:
        changed = False
        for parent, keys in p.planned_deletes.items():
            if not keys:
                continue
            for fk in p.schema.children_of(parent):
                if fk.child not in p.tables:
                    continue
                for pkey, child_key in _children(p, fk, keys):
                    if pkey not in keys or _child_moves_away(p, fk, child_key, pkey):
                        continue
                    if not fk.through_key and value_provided(p, fk, p.lost.tables[parent].deletes[pkey]):
                        continue  # referred to by value, and the replay gives that value to another row
                    keys.discard(pkey)
                    reasons[(parent, pkey)] = (
                        f"not replayed: {fk.child} row {fmt_key(child_key)} still refers to it in CURRENT"
                    )
                    changed = dropped = True
    return dropped


def emit_deletes(p) -> None:
    """The writes and outcomes of the deletes that stand."""
    reasons = p.delete_skips
    for (table, key), why in sorted(reasons.items(), key=lambda kv: (kv[0][0], repr(kv[0][1]))):
        p.outcome(table, "delete", key, SKIPPED, key, why)
    for table, keys in p.planned_deletes.items():
        for key in sorted(keys, key=sort_key):
            p.deletes[table].append(Write(table, "delete", key, old=p.lost.tables[table].deletes[key]))
            p.outcome(table, "delete", key, REPLAYED, None)


def _children(p, fk: ForeignKey, keys: set[tuple]):
    """(parent key, child key) for every CURRENT row of fk.child referring to one of ``keys``."""
    base = p.lost.tables[fk.parent].deletes
    by_value: dict[tuple, tuple] = {}
    for key in keys:
        row = base[key]
        if all(c in row for c in fk.parent_columns):
            by_value[tuple(row[c] for c in fk.parent_columns)] = key
    if not by_value:
        return []
    n = len(fk.columns)
    cols = ", ".join(f"v{i}" for i in range(n))
    p.conn.execute(f"DROP TABLE IF EXISTS temp._mulligan_keys; CREATE TEMP TABLE _mulligan_keys({cols})")
    p.conn.executemany(f"INSERT INTO temp._mulligan_keys VALUES ({', '.join('?' * n)})", list(by_value))
    child = p.tables[fk.child]
    on = " AND ".join(f"c.{q(col)} = k.v{i}" for i, col in enumerate(fk.columns))
    sel = ", ".join(f"c.{q(col)}" for col in fk.columns)
    ck = ", ".join(f"c.{q(col)}" for col in (child.pk or child.columns))  # a keyless row is its content
    out = []
    for r in p.conn.execute(f"SELECT {sel}, {ck} FROM main.{q(fk.child)} c JOIN temp._mulligan_keys k ON {on}"):
        out.append((by_value[tuple(r[:n])], tuple(r[n:])))
    p.conn.execute("DROP TABLE temp._mulligan_keys")
    return out


def value_provided(p, fk: ForeignKey, row: dict, *, trust_lost: bool | None = None) -> bool:
    """After the replay another row of fk.parent has the values ``row`` has in fk.parent_columns.

    Trusting LOST (before the plan is known) a lost insert or a lost update giving the
    values is enough; otherwise only a replayed insert or update counts.
    """
    cols = fk.parent_columns
    vals = tuple(row.get(c) for c in cols)
    tc = p.lost.tables[fk.parent]
    if not (not p.updates_planned if trust_lost is None else trust_lost):
        if any(all(same(w.values.get(c), v) for c, v in zip(cols, vals)) for w in p.inserts[fk.parent]):
            return True
        return any(all(c in sets and same(sets[c], v) for c, v in zip(cols, vals)) for sets in p.moved[fk.parent].values())
    if vals in p.lost_inserts_by(fk.parent, cols):
        return True
    return any(all(same(lost_row.get(c), v) for c, v in zip(cols, vals)) for _, lost_row in tc.updates.values())


def _child_moves_away(p, fk: ForeignKey, child_key: tuple, pkey: tuple) -> bool:
    """True when the replay itself deletes this child or points it elsewhere."""
    if child_key in p.planned_deletes.get(fk.child, ()):
        return True
    child = p.tables[fk.child]
    if child.keyless:  # LOST removed this very row
        removed = p.lost.tables[fk.child].removed
        row = dict(zip(child.columns, child_key))
        return any(all(r.get(c, row[c]) == row[c] for c in row) for r, _, _ in removed)
    upd = p.lost.tables[fk.child].updates.get(child_key) if fk.child in p.lost.tables else None
    if upd is None:
        return False
    base_row, lost_row = upd
    if not all(c in lost_row for c in fk.columns):
        return False
    if p.updates_planned:  # now known: is the update of those columns replayed?
        sets = p.moved.get(fk.child, {}).get(child_key, {})
        return all(c in sets for c in fk.columns)
    cur = p.current_row(fk.child, child_key)
    return (
        cur is not None
        and all(same(cur[c], base_row[c]) for c in fk.columns)  # CURRENT did not re-point it
        and any(not same(lost_row[c], base_row[c]) for c in fk.columns)  # LOST did
    )
