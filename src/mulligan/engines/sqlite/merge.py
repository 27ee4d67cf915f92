"""Three-way recovery merge of SQLite databases, with key remapping.

BASE is the old state that was restored by mistake, LOST the last good state
before the mistake, CURRENT the live database. What LOST changed since BASE
(:mod:`.merge_diff`) is replayed into CURRENT; what CURRENT changed is kept.

Only the keys LOST touched are looked up in CURRENT, so planning costs what
was lost, not what exists: CURRENT's own changes matter only where they meet a
lost change, and that is exactly where we look.

The plan, in order:

1. LOST's deletes (:mod:`.merge_deletes`): replayed where CURRENT left the
   row as BASE had it; a conflict where CURRENT changed it; not replayed, only
   reported, where the row still has children in CURRENT that the replay
   neither deletes nor points elsewhere (children written after the mistake).
2. Tables in foreign-key order, parents first; tables in a cycle (including a
   self-reference) are planned together and again until their key maps stop
   changing. For each table:
   - LOST's updates, cell by cell (:mod:`.merge_updates`); a keyless table
     is merged as a multiset of rows instead (:mod:`.merge_keyless`).
   - LOST's inserts. Foreign keys are rewritten through the parents' key maps
     first, so a child of a remapped parent follows it; a child of a parent
     that is not replayed is a conflict. A surrogate key (rowid alias) taken
     in CURRENT by a different row gets a new key, allocated above every key
     and counter of every state and every key already handed out. A natural
     key (compared after remapping) taken by a different row is a conflict, as
     is a UNIQUE column value (an email, a username) that CURRENT already has.
3. Deletes that counted on an update which turned out to be a conflict are
   dropped, and step 2 runs again until nothing changes.
4. Counters (``sqlite_sequence``) end above every key either state used and
   every key allocated.

All keys are allocated before anything is written, so self-references and
cycles are written already mapped. Writes run deletes first (children before
parents), then updates, then inserts (parents before children).
"""

from __future__ import annotations

import apsw

from .merge_deletes import emit_deletes, keep_parents_of_new_children, plan_deletes, value_provided
from .merge_diff import LostChanges
from .merge_keyless import plan_keyless
from .merge_updates import plan_updates
from .merge_model import (
    CONFLICT, DELETE_UPDATED, MISSING_PARENT, NATURAL_KEY, PARENT_CONFLICT, PRESENT, REMAPPED,
    REPLAYED, SKIPPED, UNIQUE, Allocator, Conflict, MergePlan, Outcome, TablePlan, Write,
    fmt_key, same, same_row, sort_key,
)
from .merge_schema import ForeignKey, Schema, TableInfo, q, read_schema

__all__ = ["plan_merge", "MergePlan", "TablePlan", "Conflict", "Outcome", "Write"]


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
        self.moved: dict[str, dict[tuple, dict]] = {n: {} for n in self.tables}  # key -> values its update sets
        self.taken: dict[str, dict] = {n: {} for n in self.tables}  # (UNIQUE group, values) -> (key, row) after updates
        self.units_of: dict[str, list[tuple[str, ...]]] = {}  # columns merged together, per table
        self.delete_skips: dict[tuple[str, tuple], str] = {}  # (table, key) -> why LOST's delete is not replayed
        self.updates_planned = False
        # Referenced values LOST moved to another row: (table, key, fk, value) taken on trust, checked after;
        # rows whose value must stay because the row meant to take it over is not replayed.
        self.value_deps: list[tuple] = []
        self.keep_values: set[tuple[str, tuple]] = set()
        self.conflicts: dict[str, list[Conflict]] = {n: [] for n in self.tables}
        self.outcomes: dict[str, list[Outcome]] = {n: [] for n in self.tables}
        self.seq = self._sequences()
        floors = {}
        for n, info in self.tables.items():
            if info.surrogate:
                tc = lost.tables[n]
                floors[n] = max(tc.max_key, tc.counter, self._max_key(n), self.seq.get(n, 0))
        self.alloc = Allocator(floors)
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
            plan_deletes(self, name)
        keep_parents_of_new_children(self)
        start = self.alloc.snapshot()
        while True:
            self.alloc.restore(start)
            self.value_deps = []
            for component in self.schema.order():
                comp = [n for n in component if n in self.tables]
                if comp:
                    self._plan_component(comp)
            self.updates_planned = True
            # A delete that counted on an update moving its children away, which turned out to
            # be a conflict, is dropped; the rest is planned again against the deletes that stand.
            dropped = keep_parents_of_new_children(self)
            if not self._unprovided_values() and not dropped:
                break
        emit_deletes(self)
        return self._finish()

    def _unprovided_values(self) -> bool:
        """Updates that moved a referenced value away, counting on a row that is not replayed to take it."""
        found = False
        for name, key, fk, old in self.value_deps:
            sets = self.moved[name].get(key, {})
            if any(c in sets for c in fk.parent_columns) and not value_provided(
                self, fk, dict(zip(fk.parent_columns, old)), trust_lost=False
            ):
                self.keep_values.add((name, key))
                found = True
        return found

    def _plan_component(self, comp: list[str]) -> None:
        cyclic = len(comp) > 1 or any(fk.parent == comp[0] for fk in self.tables[comp[0]].fks)
        start = self.alloc.snapshot()
        for _ in range(50):
            before = ({n: dict(self.key_map[n]) for n in comp}, {n: set(self.blocked[n]) for n in comp})
            self.alloc.restore(start)
            for n in comp:
                self.inserts[n], self.updates[n], self.moved[n], self.taken[n] = [], [], {}, {}
                self.outcomes[n] = [o for o in self.outcomes[n] if o.change == "delete"]
                self.conflicts[n] = [c for c in self.conflicts[n] if c.kind == DELETE_UPDATED]
            # Updates first: they run first, and may free a UNIQUE value a lost insert takes.
            for n in comp:
                if self.tables[n].keyless:
                    self.deletes[n] = []
                    plan_keyless(self, n)
                else:
                    plan_updates(self, n)
            for n in comp:
                if self.tables[n].keyless:
                    continue
                new_map: dict[tuple, tuple] = {}
                new_blocked: set[tuple] = set()
                self._plan_inserts(n, new_map, new_blocked)
                self.key_map[n], self.blocked[n] = new_map, new_blocked
            after = ({n: self.key_map[n] for n in comp}, {n: self.blocked[n] for n in comp})
            if not cyclic or after == before:
                return
        raise RuntimeError(f"key maps of {comp} did not settle")  # pragma: no cover - maps only grow

    # -- foreign keys ----------------------------------------------------

    def fks(self, table: str, columns) -> list[ForeignKey]:
        have = set(columns)
        return [fk for fk in self.tables[table].fks if all(c in have for c in fk.columns)]

    def _parent_key(self, fk: ForeignKey, values: tuple) -> tuple:
        key = [None] * len(values)
        for i, pos in enumerate(fk.key_order):
            key[pos] = values[i]
        return tuple(key)

    def map_refs(self, table: str, row: dict) -> tuple[dict, list[str], list[str]]:
        """Rewrite ``row``'s foreign keys through the key maps.

        Returns the mapped row, the references to lost rows that are not
        replayed, and the references to rows that do not exist in CURRENT.
        """
        out = dict(row)
        blocked, missing = [], []
        for fk in self.fks(table, row):
            vals = tuple(row[c] for c in fk.columns)
            if any(v is None for v in vals) or fk.parent not in self.tables:
                continue
            label = f"{fk.parent}({', '.join(fk.parent_columns)}) = {fmt_key(vals)}"
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
            else:  # a reference by natural columns (REFERENCES users(username)): values never change
                lost_parent = self.lost_inserts_by(fk.parent, fk.parent_columns).get(vals)
                if lost_parent is not None and lost_parent in self.blocked[fk.parent]:
                    blocked.append(label)  # never let it fall onto CURRENT's row with the same name
                elif lost_parent is None and not self.will_have(fk.parent, fk.parent_columns, vals):
                    missing.append(label)
        return out, blocked, missing

    def will_have(self, table: str, columns: tuple[str, ...], vals: tuple) -> bool:
        """After the replay a row has these values: a replayed update gives them, or a row of CURRENT
        has them and the replay neither deletes it nor changes them."""
        info = self.tables[table]
        for sets in self.moved[table].values():
            if all(c in sets for c in columns) and all(same(sets[c], v) for c, v in zip(columns, vals)):
                return True
        for row in self.rows_where(table, columns, vals):
            key = tuple(row[c] for c in info.pk)
            sets = self.moved[table].get(key, {})
            if key not in self.planned_deletes[table] and all(same(sets.get(c, row[c]), row[c]) for c in columns):
                return True
        return False

    def lost_inserts_by(self, table: str, columns: tuple[str, ...]) -> dict[tuple, tuple]:
        """LOST's inserted rows of ``table`` by the values of ``columns`` -> their lost key."""
        ck = ("by", table, columns)
        if ck not in self._stmt_cache:
            self._stmt_cache[ck] = {
                tuple(r.get(c) for c in columns): k for k, r in self.lost.tables[table].inserts.items()
            }
        return self._stmt_cache[ck]

    # -- inserts ---------------------------------------------------------

    def _plan_inserts(self, name: str, new_map: dict, new_blocked: set) -> None:
        info = self.tables[name]
        tc = self.lost.tables[name]
        cols = [c for c in info.columns if c in tc.lost_columns]
        for lost_key, lost_row in tc.inserts.items():
            row = {c: lost_row[c] for c in cols}
            mapped, blocked, missing = self.map_refs(name, row)
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
            if cur is not None and same_row(cur, mapped, cols):
                self.outcome(name, "insert", lost_key, PRESENT, key, "CURRENT already has the same row")
                if key != lost_key:
                    new_map[lost_key] = key
                continue
            if cur is not None and not info.surrogate:
                self._refuse(
                    name, lost_key, NATURAL_KEY,
                    f"CURRENT has a different row with the key {fmt_key(key)}; CURRENT's row stays",
                    mapped, cur, new_blocked,
                )
                continue
            clash = self.unique_clash(name, mapped, key if cur is None else None)
            if clash is not None:
                cols_, other = clash
                self._refuse(
                    name, lost_key, UNIQUE,
                    f"CURRENT already has {', '.join(cols_)} = {fmt_key(tuple(mapped[c] for c in cols_))} "
                    f"(row {fmt_key(tuple(other[c] for c in info.pk))}); it may be the same person or thing "
                    "written again: a human decides",
                    mapped, other, new_blocked,
                )
                continue
            if cur is not None:  # a surrogate key CURRENT gave to another row
                key = (self.alloc.take(name),)
                mapped[info.pk[0]] = key[0]
                self.outcome(name, "insert", lost_key, REMAPPED, key, f"key {fmt_key(lost_key)} was taken in CURRENT")
            elif key != lost_key:  # a natural key made of remapped keys
                self.outcome(name, "insert", lost_key, REMAPPED, key, "its key refers to rows that got new keys")
            else:
                self.outcome(name, "insert", lost_key, REPLAYED, key)
            if key != lost_key:
                new_map[lost_key] = key
            self.inserts[name].append(Write(name, "insert", key, mapped))

    def _refuse(self, name, lost_key, kind, why, lost_row, current_row, new_blocked) -> None:
        new_blocked.add(lost_key)
        self.conflict(name, kind, lost_key, why, rows={"lost": lost_row, "current": current_row})
        self.outcome(name, "insert", lost_key, CONFLICT, None, why)

    def unique_clash(self, name: str, row: dict, own_key: tuple | None, touched=None) -> tuple | None:
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
                if info.keyless and any(all(same(other[c], v) for c, v in w.values.items()) for w in self.deletes[name]):
                    continue  # a copy LOST removed, deleted before anything is inserted
                moved = self.moved[name].get(okey)  # an update planned (so run) before this write
                if moved is not None and tuple(moved.get(c, other[c]) for c in group) != vals:
                    continue
                return group, other
            taken = self.taken[name].get((group, vals))  # a value a replayed update gives another row
            if taken is not None and taken[0] != own_key:
                return group, taken[1]
        return None

    # -- bookkeeping -----------------------------------------------------

    def conflict(self, table, kind, key, reason, columns=None, rows=None) -> None:
        self.conflicts[table].append(Conflict(table, kind, key, reason, columns or {}, rows or {}))

    def outcome(self, table, change, lost_key, status, key, detail="") -> None:
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
        outcomes = [o for n in order for o in sorted(self.outcomes[n], key=lambda o: (o.change, sort_key(o.lost_key)))]
        conflicts = [c for n in order for c in sorted(self.conflicts[n], key=lambda c: sort_key(c.key))]
        return MergePlan(
            tables=plans,
            writes=writes,
            key_map={n: self.key_map[n] for n in order if self.key_map[n]},
            conflicts=conflicts,
            outcomes=outcomes,
            counters=counters,
            skipped_tables=self.skipped_tables,
            triggers=triggers,
            pk={n: list(self.tables[n].pk) for n in order},
            trigger_sql=dict(self.schema.trigger_sql),
            no_counter=[n for n in order if self.tables[n].surrogate and not self.tables[n].autoincrement
                        and self.lost.tables[n].changed],
        )
