"""Three-way recovery merge of SQLite databases, with key remapping.

BASE is the old state that was restored by mistake, LOST the last good state
before the mistake, CURRENT the live database. What LOST changed since BASE
(:mod:`.merge_diff`) is replayed into CURRENT; what CURRENT changed is kept.

Only the keys LOST touched are looked up in CURRENT, so planning costs what
was lost, not what exists: CURRENT's own changes matter only where they meet a
lost change, and that is exactly where we look.

The plan, in order:

1. LOST deletes. A row CURRENT left as BASE had it is deleted; a row CURRENT
   changed is a conflict; a row CURRENT already deleted needs nothing. A delete
   whose row still has children in CURRENT that the replay does not delete or
   move away (children written after the mistake) is not replayed, only
   reported; that is repeated until nothing changes, since a kept child keeps
   its parent too.
2. Tables in foreign-key order, parents first; tables in a cycle (including a
   self-reference) are planned together and again until their key maps stop
   changing. For each table:
   - LOST inserts. Foreign keys are rewritten through the parents' key maps
     first, so a child of a remapped parent follows it; a child of a parent
     that is not replayed is a conflict. A surrogate key (rowid alias) taken
     in CURRENT by a different row gets a new key, allocated above every key
     and counter of every state and every key already handed out. A natural
     key (compared after remapping) taken by a different row is a conflict, as
     is a UNIQUE column value (an email, a username) that CURRENT already has.
   - LOST updates, cell by cell: a column (or a whole composite foreign key)
     only LOST changed is replayed; the same one changed differently by both is
     a conflict and CURRENT's value stays. An update of a row CURRENT deleted
     is a conflict.
3. Counters (``sqlite_sequence``) end above every key either state used and
   every key allocated.

All keys are allocated before anything is written, so self-references and
cycles are written already mapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apsw

from .merge_diff import LostChanges, TableChanges
from .merge_schema import ForeignKey, Schema, TableInfo, q, read_schema

# Conflict kinds
CELL = "cell"  # the same cell changed differently on both sides
UPDATE_DELETED = "update-deleted"  # LOST updated a row CURRENT deleted
DELETE_UPDATED = "delete-updated"  # LOST deleted a row CURRENT updated
NATURAL_KEY = "natural-key"  # the same natural key inserted on both sides with different content
UNIQUE = "unique"  # a UNIQUE value of a LOST row already exists in CURRENT
PARENT_CONFLICT = "parent-conflict"  # the row refers to a lost row that is not replayed
MISSING_PARENT = "missing-parent"  # the row refers to a row CURRENT deleted

# Row outcomes
REPLAYED = "replayed"  # written at its own key
REMAPPED = "remapped"  # written at a new key
MERGED = "merged"  # an update merged with CURRENT's changes to other columns of the row
PRESENT = "present"  # CURRENT already has it exactly (or already deleted it)
CONFLICT = "conflict"
SKIPPED = "skipped"  # a delete of a parent whose children were written after the mistake


@dataclass
class Conflict:
    table: str
    kind: str
    key: tuple  # the row's key in LOST
    reason: str
    columns: dict[str, dict] = field(default_factory=dict)  # column -> {base, lost, current}
    rows: dict[str, dict | None] = field(default_factory=dict)  # lost / current / base rows


@dataclass
class Outcome:
    """Where one lost change ended up."""

    table: str
    change: str  # insert | update | delete (what LOST did)
    lost_key: tuple
    status: str
    key: tuple | None  # the row's key in CURRENT after the merge (None: not there)
    detail: str = ""


@dataclass
class Write:
    table: str
    op: str  # insert | update | delete
    key: tuple  # key in CURRENT
    values: dict = field(default_factory=dict)  # insert: every column; update: the changed ones


@dataclass
class TablePlan:
    name: str
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    remapped: int = 0
    conflicts: int = 0
    skipped: int = 0
    present: int = 0


@dataclass
class MergePlan:
    tables: dict[str, TablePlan]
    writes: list[Write]  # in the order they run: deletes (children first), updates, inserts (parents first)
    key_map: dict[str, dict[tuple, tuple]]  # table -> lost key -> new key (only keys that changed)
    conflicts: list[Conflict]
    outcomes: list[Outcome]
    counters: dict[str, int]  # table -> sqlite_sequence value to end with (only raised ones)
    skipped_tables: dict[str, str]
    triggers: dict[str, list[str]]  # triggers on tables the merge writes to
    pk: dict[str, list[str]]  # key columns of every merged table
    trigger_sql: dict[str, str] = field(default_factory=dict)  # every trigger of CURRENT: name -> SQL
    warnings: list[str] = field(default_factory=list)


class _Allocator:
    """Hands out new surrogate keys above everything any state used."""

    def __init__(self, floor: dict[str, int]):
        self.floor = dict(floor)
        self.next = {t: v + 1 for t, v in floor.items()}

    def take(self, table: str) -> int:
        k = self.next[table]
        self.next[table] = k + 1
        return k

    def snapshot(self) -> dict[str, int]:
        return dict(self.next)

    def restore(self, state: dict[str, int]) -> None:
        self.next = dict(state)


def plan_merge(conn: apsw.Connection, lost: LostChanges) -> MergePlan:
    """Plan the replay of ``lost`` into the database ``conn`` (its ``main``), inside the caller's transaction."""
    return _Planner(conn, lost).run()


class _Planner:
    def __init__(self, conn: apsw.Connection, lost: LostChanges):
        self.conn = conn
        self.lost = lost
        self.schema: Schema = read_schema(conn, "main")
        self.skipped_tables = dict(lost.skipped)
        self.tables: dict[str, TableInfo] = {}
        for name, tc in lost.tables.items():
            info = self.schema.tables.get(name)
            if info is None:
                self.skipped_tables[name] = "table does not exist in CURRENT"
            elif info.pk != tc.pk:
                self.skipped_tables[name] = "primary key differs between LOST and CURRENT"
            else:
                self.tables[name] = info
        self.key_map: dict[str, dict[tuple, tuple]] = {n: {} for n in self.tables}
        self.blocked: dict[str, set[tuple]] = {n: set() for n in self.tables}  # lost inserts not replayed
        self.planned_deletes: dict[str, set[tuple]] = {n: set() for n in self.tables}
        self.deletes: dict[str, list[Write]] = {n: [] for n in self.tables}
        self.updates: dict[str, list[Write]] = {n: [] for n in self.tables}
        self.inserts: dict[str, list[Write]] = {n: [] for n in self.tables}
        self.conflicts: dict[str, list[Conflict]] = {n: [] for n in self.tables}
        self.outcomes: dict[str, list[Outcome]] = {n: [] for n in self.tables}
        self.seq = self._sequences()
        floors = {}
        for n, info in self.tables.items():
            if info.surrogate:
                tc = lost.tables[n]
                floors[n] = max(tc.max_key, tc.counter, self._max_key(n), self.seq.get(n, 0))
        self.alloc = _Allocator(floors)
        self._stmt_cache: dict = {}

    # -- reading CURRENT -------------------------------------------------

    def _sequences(self) -> dict[str, int]:
        has = self.conn.execute("SELECT 1 FROM main.sqlite_master WHERE name='sqlite_sequence'").fetchone()
        if not has:
            return {}
        return {n: int(s or 0) for n, s in self.conn.execute("SELECT name, seq FROM main.sqlite_sequence")}

    def _max_key(self, table: str) -> int:
        info = self.tables[table]
        v = self.conn.execute(f"SELECT max({q(info.pk[0])}) FROM main.{q(table)}").fetchone()[0]
        return v if isinstance(v, int) else 0

    def current_row(self, table: str, key: tuple) -> dict | None:
        info = self.tables[table]
        sql = self._stmt_cache.get(("row", table))
        if sql is None:
            where = " AND ".join(f"{q(c)} = ?" for c in info.pk)
            sql = f"SELECT {', '.join(q(c) for c in info.columns)} FROM main.{q(table)} WHERE {where}"
            self._stmt_cache[("row", table)] = sql
        r = self.conn.execute(sql, key).fetchone()
        return None if r is None else dict(zip(info.columns, r))

    def rows_where(self, table: str, columns: tuple[str, ...], values: tuple) -> list[dict]:
        info = self.schema.tables[table]
        sql = self._stmt_cache.get(("where", table, columns))
        if sql is None:
            where = " AND ".join(f"{q(c)} = ?" for c in columns)
            sql = f"SELECT {', '.join(q(c) for c in info.columns)} FROM main.{q(table)} WHERE {where}"
            self._stmt_cache[("where", table, columns)] = sql
        return [dict(zip(info.columns, r)) for r in self.conn.execute(sql, values)]

    # -- the plan --------------------------------------------------------

    def run(self) -> MergePlan:
        for name in self.tables:
            self._plan_deletes(name)
        self._keep_parents_of_new_children()
        for component in self.schema.order():
            comp = [n for n in component if n in self.tables]
            if comp:
                self._plan_component(comp)
        return self._finish()

    def _plan_component(self, comp: list[str]) -> None:
        cyclic = len(comp) > 1 or any(fk.parent == comp[0] for fk in self.tables[comp[0]].fks)
        start = self.alloc.snapshot()
        for _ in range(50):
            before = ({n: dict(self.key_map[n]) for n in comp}, {n: set(self.blocked[n]) for n in comp})
            self.alloc.restore(start)
            for n in comp:
                self.inserts[n], self.updates[n] = [], []
                self.outcomes[n] = [o for o in self.outcomes[n] if o.change == "delete"]
                self.conflicts[n] = [c for c in self.conflicts[n] if c.kind == DELETE_UPDATED]
                new_map: dict[tuple, tuple] = {}
                new_blocked: set[tuple] = set()
                self._plan_inserts(n, new_map, new_blocked)
                self.key_map[n], self.blocked[n] = new_map, new_blocked
            for n in comp:
                self._plan_updates(n)
            after = ({n: self.key_map[n] for n in comp}, {n: self.blocked[n] for n in comp})
            if not cyclic or after == before:
                return
        raise RuntimeError(f"key maps of {comp} did not settle")  # pragma: no cover - maps only grow

    # -- foreign keys ----------------------------------------------------

    def _fks(self, table: str, columns) -> list[ForeignKey]:
        have = set(columns)
        return [fk for fk in self.tables[table].fks if all(c in have for c in fk.columns)]

    def _parent_key(self, fk: ForeignKey, values: tuple) -> tuple:
        key = [None] * len(values)
        for i, pos in enumerate(fk.key_order):
            key[pos] = values[i]
        return tuple(key)

    def _map_refs(self, table: str, row: dict) -> tuple[dict, list[str], list[str]]:
        """Rewrite ``row``'s foreign keys through the key maps.

        Returns the mapped row, the references to lost rows that are not
        replayed, and the references to rows that do not exist in CURRENT.
        """
        out = dict(row)
        blocked, missing = [], []
        for fk in self._fks(table, row):
            vals = tuple(row[c] for c in fk.columns)
            if any(v is None for v in vals) or fk.parent not in self.tables:
                continue
            label = f"{fk.parent}({', '.join(fk.parent_columns)}) = {_fmt(vals)}"
            if fk.through_key:
                pkey = self._parent_key(fk, vals)
                if pkey in self.blocked[fk.parent]:
                    blocked.append(label)
                    continue
                new = self.key_map[fk.parent].get(pkey)
                if new is not None:
                    for i, pos in enumerate(fk.key_order):
                        out[fk.columns[i]] = new[pos]
                    continue
                if pkey in self.lost.tables[fk.parent].inserts:
                    continue  # a replayed lost row at its own key
                if pkey in self.planned_deletes[fk.parent] or self.current_row(fk.parent, pkey) is None:
                    missing.append(label)
            elif not self.rows_where(fk.parent, fk.parent_columns, vals):
                if not any(
                    tuple(r.get(c) for c in fk.parent_columns) == vals
                    for r in self.lost.tables[fk.parent].inserts.values()
                ):
                    missing.append(label)
        return out, blocked, missing

    # -- deletes ---------------------------------------------------------

    def _plan_deletes(self, name: str) -> None:
        tc = self.lost.tables[name]
        cols = [c for c in tc.compare_columns if c in self.tables[name].columns]
        for key, base_row in tc.deletes.items():
            cur = self.current_row(name, key)
            if cur is None:
                self._outcome(name, "delete", key, PRESENT, None, "CURRENT had already deleted it")
                continue
            changed = [c for c in cols if not _same(cur[c], base_row[c])]
            if changed:
                self._conflict(
                    name, DELETE_UPDATED, key,
                    "LOST deleted this row, CURRENT updated it; CURRENT's row stays",
                    columns={c: {"base": base_row[c], "lost": None, "current": cur[c]} for c in changed},
                    rows={"base": base_row, "current": cur},
                )
                self._outcome(name, "delete", key, CONFLICT, key, "deleted in LOST, updated in CURRENT")
                continue
            self.planned_deletes[name].add(key)

    def _keep_parents_of_new_children(self) -> None:
        """A lost delete of a row that still has children in CURRENT is not replayed."""
        reasons: dict[tuple[str, tuple], str] = {}
        changed = True
        while changed:
            changed = False
            for parent, keys in self.planned_deletes.items():
                if not keys:
                    continue
                for fk in self.schema.children_of(parent):
                    if fk.child not in self.tables:
                        continue
                    for pkey, child_key in self._children(fk, keys):
                        if pkey not in keys or self._child_moves_away(fk, child_key, pkey):
                            continue
                        keys.discard(pkey)
                        reasons[(parent, pkey)] = (
                            f"not replayed: {fk.child} row {_fmt(child_key)} still refers to it in CURRENT"
                        )
                        changed = True
        for (table, key), why in sorted(reasons.items(), key=lambda kv: (kv[0][0], repr(kv[0][1]))):
            self._outcome(table, "delete", key, SKIPPED, key, why)
        for table, keys in self.planned_deletes.items():
            for key in sorted(keys, key=_sort_key):
                self.deletes[table].append(Write(table, "delete", key))
                self._outcome(table, "delete", key, REPLAYED, None)

    def _children(self, fk: ForeignKey, keys: set[tuple]):
        """(parent key, child key) for every CURRENT row of fk.child referring to one of ``keys``."""
        parent = self.tables[fk.parent]
        base = self.lost.tables[fk.parent].deletes
        by_value: dict[tuple, tuple] = {}
        for key in keys:
            row = base[key]
            if all(c in row for c in fk.parent_columns):
                by_value[tuple(row[c] for c in fk.parent_columns)] = key
        if not by_value:
            return []
        n = len(fk.columns)
        cols = ", ".join(f"v{i}" for i in range(n))
        self.conn.execute(f"DROP TABLE IF EXISTS temp._mulligan_keys; CREATE TEMP TABLE _mulligan_keys({cols})")
        self.conn.executemany(f"INSERT INTO temp._mulligan_keys VALUES ({', '.join('?' * n)})", list(by_value))
        child = self.tables[fk.child]
        on = " AND ".join(f"c.{q(col)} = k.v{i}" for i, col in enumerate(fk.columns))
        sel = ", ".join(f"c.{q(col)}" for col in fk.columns)
        ck = ", ".join(f"c.{q(col)}" for col in child.pk)
        out = []
        for r in self.conn.execute(f"SELECT {sel}, {ck} FROM main.{q(fk.child)} c JOIN temp._mulligan_keys k ON {on}"):
            out.append((by_value[tuple(r[:n])], tuple(r[n:])))
        self.conn.execute("DROP TABLE temp._mulligan_keys")
        del parent
        return out

    def _child_moves_away(self, fk: ForeignKey, child_key: tuple, pkey: tuple) -> bool:
        """True when the replay itself deletes this child or points it elsewhere."""
        if child_key in self.planned_deletes.get(fk.child, ()):
            return True
        upd = self.lost.tables[fk.child].updates.get(child_key) if fk.child in self.lost.tables else None
        if upd is None:
            return False
        base_row, lost_row = upd
        if not all(c in lost_row for c in fk.columns):
            return False
        cur = self.current_row(fk.child, child_key)
        return (
            cur is not None
            and all(_same(cur[c], base_row[c]) for c in fk.columns)  # CURRENT did not re-point it
            and any(not _same(lost_row[c], base_row[c]) for c in fk.columns)  # LOST did
        )

    # -- inserts ---------------------------------------------------------

    def _plan_inserts(self, name: str, new_map: dict, new_blocked: set) -> None:
        info = self.tables[name]
        tc = self.lost.tables[name]
        cols = [c for c in info.columns if c in tc.lost_columns]
        for lost_key, lost_row in tc.inserts.items():
            row = {c: lost_row[c] for c in cols}
            mapped, blocked, missing = self._map_refs(name, row)
            if blocked or missing:
                kind = PARENT_CONFLICT if blocked else MISSING_PARENT
                why = (
                    f"refers to a lost row that is not replayed: {'; '.join(blocked)}" if blocked
                    else f"refers to a row CURRENT no longer has: {'; '.join(missing)}"
                )
                self._refuse(name, lost_key, kind, why, mapped, None, new_blocked)
                continue
            key = tuple(mapped[c] for c in info.pk)
            cur = self.current_row(name, key)
            if cur is not None and _same_row(cur, mapped, cols):
                self._outcome(name, "insert", lost_key, PRESENT, key, "CURRENT already has the same row")
                if key != lost_key:
                    new_map[lost_key] = key
                continue
            if cur is not None and not info.surrogate:
                self._refuse(
                    name, lost_key, NATURAL_KEY,
                    f"CURRENT has a different row with the key {_fmt(key)}; CURRENT's row stays",
                    mapped, cur, new_blocked,
                )
                continue
            clash = self._unique_clash(name, mapped, key if cur is None else None)
            if clash is not None:
                cols_, other = clash
                self._refuse(
                    name, lost_key, UNIQUE,
                    f"CURRENT already has {', '.join(cols_)} = {_fmt(tuple(mapped[c] for c in cols_))} "
                    f"(row {_fmt(tuple(other[c] for c in info.pk))}); it may be the same person or thing "
                    "written again: a human decides",
                    mapped, other, new_blocked,
                )
                continue
            if cur is not None:  # a surrogate key CURRENT gave to another row
                key = (self.alloc.take(name),)
                mapped[info.pk[0]] = key[0]
                self._outcome(name, "insert", lost_key, REMAPPED, key, f"key {_fmt(lost_key)} was taken in CURRENT")
            else:
                self._outcome(name, "insert", lost_key, REPLAYED, key)
            if key != lost_key:
                new_map[lost_key] = key
            self.inserts[name].append(Write(name, "insert", key, mapped))

    def _refuse(self, name, lost_key, kind, why, lost_row, current_row, new_blocked) -> None:
        new_blocked.add(lost_key)
        self._conflict(name, kind, lost_key, why, rows={"lost": lost_row, "current": current_row})
        self._outcome(name, "insert", lost_key, CONFLICT, None, why)

    def _unique_clash(self, name: str, row: dict, own_key: tuple | None, touched=None) -> tuple | None:
        info = self.tables[name]
        for group in info.uniques:
            if touched is not None and not any(c in touched for c in group):
                continue
            if not all(c in row for c in group):
                continue
            vals = tuple(row[c] for c in group)
            if any(v is None for v in vals):
                continue  # NULLs never collide
            for other in self.rows_where(name, group, vals):
                okey = tuple(other[c] for c in info.pk)
                if okey == own_key or okey in self.planned_deletes[name]:
                    continue
                return group, other
        return None

    # -- updates ---------------------------------------------------------

    def _units(self, name: str, cols: list[str]) -> list[tuple[str, ...]]:
        """Columns merged together: each composite foreign key is one unit."""
        units: list[set[str]] = [{c} for c in cols]
        for fk in self._fks(name, cols):
            group = set(fk.columns)
            merged = set(group)
            rest = []
            for u in units:
                if u & group:
                    merged |= u
                else:
                    rest.append(u)
            units = rest + [merged]
        order = {c: i for i, c in enumerate(cols)}
        return sorted((tuple(sorted(u, key=order.get)) for u in units), key=lambda u: order[u[0]])

    def _plan_updates(self, name: str) -> None:
        info = self.tables[name]
        tc = self.lost.tables[name]
        cols = [c for c in tc.compare_columns if c in info.columns and c not in info.pk]
        units = self._units(name, cols)
        for key, (base_row, lost_row) in tc.updates.items():
            cur = self.current_row(name, key)
            if cur is None:
                self._conflict(
                    name, UPDATE_DELETED, key, "LOST updated this row, CURRENT deleted it; it stays deleted",
                    columns={c: {"base": base_row[c], "lost": lost_row[c], "current": None}
                             for c in cols if not _same(lost_row[c], base_row[c])},
                    rows={"base": base_row, "lost": lost_row, "current": None},
                )
                self._outcome(name, "update", key, CONFLICT, None, "updated in LOST, deleted in CURRENT")
                continue
            mapped, _, _ = self._map_refs(name, {c: lost_row[c] for c in cols})
            sets: dict = {}
            cell_conflicts: dict[str, dict] = {}
            reasons: list[str] = []
            current_changed_other = False
            for unit in units:
                lost_changed = any(not _same(lost_row[c], base_row[c]) for c in unit)
                cur_changed = any(not _same(cur[c], base_row[c]) for c in unit)
                if not lost_changed:
                    current_changed_other |= cur_changed
                    continue
                if all(_same(cur[c], mapped[c]) for c in unit):
                    continue
                refusal = self._unit_refusal(name, unit, lost_row)
                if refusal is None and cur_changed:
                    refusal = (CELL, "changed differently in LOST and CURRENT; CURRENT's value stays")
                if refusal is not None:
                    reasons.append(f"{', '.join(unit)}: {refusal[1]}")
                    for c in unit:
                        cell_conflicts[c] = {"base": base_row[c], "lost": mapped[c], "current": cur[c], "kind": refusal[0]}
                    continue
                for c in unit:
                    sets[c] = mapped[c]
            if sets:
                clash = self._unique_clash(name, {**cur, **sets}, key, touched=sets)
                if clash is not None:
                    group, other = clash
                    for c in group:
                        if c in sets:
                            cell_conflicts[c] = {"base": base_row[c], "lost": sets.pop(c), "current": cur[c], "kind": UNIQUE}
                    reasons.append(
                        f"{', '.join(group)}: CURRENT's row {_fmt(tuple(other[c] for c in info.pk))} already has that value"
                    )
            if cell_conflicts:
                kinds = {v["kind"] for v in cell_conflicts.values()}
                kind = CELL if kinds == {CELL} else sorted(kinds - {CELL})[0]
                self._conflict(
                    name, kind, key, "; ".join(reasons),
                    columns={c: {k: v for k, v in d.items() if k != "kind"} for c, d in cell_conflicts.items()},
                    rows={"base": base_row, "lost": lost_row, "current": cur},
                )
            if sets:
                self.updates[name].append(Write(name, "update", key, sets))
            if cell_conflicts:
                detail = "other columns replayed" if sets else ""
                self._outcome(name, "update", key, CONFLICT, key, detail)
            elif sets:
                self._outcome(name, "update", key, MERGED if current_changed_other else REPLAYED, key)
            else:
                self._outcome(name, "update", key, PRESENT, key, "CURRENT already has LOST's values")

    def _unit_refusal(self, name: str, unit: tuple[str, ...], lost_row: dict) -> tuple[str, str] | None:
        row = {c: lost_row[c] for c in unit}  # LOST's own values: _map_refs resolves them
        _, blocked, missing = self._map_refs(name, row)
        if blocked:
            return PARENT_CONFLICT, f"refers to a lost row that is not replayed: {'; '.join(blocked)}"
        if missing:
            return MISSING_PARENT, f"refers to a row CURRENT no longer has: {'; '.join(missing)}"
        return None

    # -- bookkeeping -----------------------------------------------------

    def _conflict(self, table, kind, key, reason, columns=None, rows=None) -> None:
        self.conflicts[table].append(Conflict(table, kind, key, reason, columns or {}, rows or {}))

    def _outcome(self, table, change, lost_key, status, key, detail="") -> None:
        self.outcomes[table].append(Outcome(table, change, lost_key, status, key, detail))

    def _finish(self) -> MergePlan:
        order = [n for comp in self.schema.order() for n in comp if n in self.tables]
        writes: list[Write] = []
        for n in reversed(order):
            writes.extend(self.deletes[n])
        for n in order:
            writes.extend(self.updates[n])
        for n in order:
            writes.extend(self.inserts[n])
        counters = {}
        for n in order:
            info = self.tables[n]
            if not info.autoincrement:
                continue
            tc = self.lost.tables[n]
            top = max([tc.counter, tc.max_key] + [w.key[0] for w in self.inserts[n] if isinstance(w.key[0], int)])
            if top > self.seq.get(n, 0):
                counters[n] = top
        touched = {w.table for w in writes}
        triggers = {t: names for t, names in self.schema.triggers.items() if t in touched}
        plans = {}
        for n in order:
            p = plans[n] = TablePlan(n)
            p.deletes, p.updates, p.inserts = len(self.deletes[n]), len(self.updates[n]), len(self.inserts[n])
            p.conflicts = len(self.conflicts[n])
            for o in self.outcomes[n]:
                p.remapped += o.status == REMAPPED
                p.skipped += o.status == SKIPPED
                p.present += o.status == PRESENT
        outcomes = [o for n in order for o in sorted(self.outcomes[n], key=lambda o: (o.change, _sort_key(o.lost_key)))]
        conflicts = [c for n in order for c in sorted(self.conflicts[n], key=lambda c: _sort_key(c.key))]
        return MergePlan(
            tables=plans,
            writes=writes,
            key_map={n: m for n, m in self.key_map.items() if m},
            conflicts=conflicts,
            outcomes=outcomes,
            counters=counters,
            skipped_tables=self.skipped_tables,
            triggers=triggers,
            pk={n: list(self.tables[n].pk) for n in order},
            trigger_sql=dict(self.schema.trigger_sql),
        )


def _same(a, b) -> bool:
    if type(a) is not type(b) and (a is None or b is None):
        return False
    return a == b


def _same_row(a: dict, b: dict, cols) -> bool:
    return all(_same(a[c], b[c]) for c in cols)


def _fmt(key: tuple) -> str:
    return ", ".join(repr(v) for v in key) if len(key) != 1 else repr(key[0])


def _sort_key(key: tuple):
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in key)
