"""Helpers for the recovery tests: building the three states, and the invariants every merge must keep.

The invariants are stated on plain dumps of the databases, not on the merge's
internals: the only thing taken from the plan is its claim (key map, outcomes,
conflicts), which is then checked against the files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = OFF")  # test fixtures need no durability; keeps examples fast
    return conn


def run(path, sql: str, *params) -> None:
    conn = connect(path)
    with conn:
        conn.execute(sql, params) if params else conn.execute(sql)
    conn.close()


def copy_db(src, dst) -> str:
    """A consistent copy through SQLite's backup API (a WAL database's file alone may be stale)."""
    source = apsw.Connection(str(src))
    target = apsw.Connection(str(dst))
    with target.backup("main", source, "main") as b:
        b.step()
    target.close()
    source.close()
    return str(dst)


def file_digest(path) -> str:
    h = hashlib.sha256(Path(path).read_bytes())
    for extra in ("-wal", "-journal"):
        p = Path(str(path) + extra)
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


class Db:
    """A read view of one SQLite file: tables, keys, foreign keys, rows by key."""

    def __init__(self, path):
        self.path = str(path)
        conn = apsw.Connection(self.path, flags=apsw.SQLITE_OPEN_READONLY)
        self.tables = {}
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE '\\_mulligan%' ESCAPE '\\' ORDER BY name")]
        self.fks = {}
        self.pk = {}
        self.cols = {}
        for t in names:
            info = conn.execute(f"PRAGMA table_info({q(t)})").fetchall()
            self.cols[t] = [r[1] for r in info]
            self.pk[t] = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            groups = {}
            for fid, seq, parent, frm, to, *_ in conn.execute(f"PRAGMA foreign_key_list({q(t)})"):
                groups.setdefault(fid, []).append((seq, frm, to, parent))
            self.fks[t] = [  # (columns, parent, referenced columns or None for the parent's key)
                (tuple(f for _, f, _, _ in sorted(g)), g[0][3], tuple(to for _, _, to, _ in sorted(g)))
                for _, g in sorted(groups.items())
            ]
            rows = {}
            for r in conn.execute(f"SELECT * FROM {q(t)}"):
                if not self.pk[t]:  # keyless: a multiset, whole row -> copies
                    rows[tuple(r)] = rows.get(tuple(r), 0) + 1
                    continue
                row = dict(zip(self.cols[t], r))
                rows[tuple(row[c] for c in self.pk[t])] = row
            self.tables[t] = rows
        has_seq = conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone()
        self.seq = dict(conn.execute("SELECT name, seq FROM sqlite_sequence")) if has_seq else {}
        self.fk_violations = conn.execute("PRAGMA foreign_key_check").fetchall()
        conn.close()


def map_row(db: Db, table: str, row: dict, key_map: dict) -> dict:
    """LOST's row with every foreign key that points at a remapped row rewritten."""
    out = dict(row)
    for cols, parent, to in db.fks[table]:
        pk = db.pk.get(parent)
        if not pk or len(pk) != len(cols) or not (all(x is None for x in to) or list(to) == pk):
            continue  # references natural columns: their values never change
        old = tuple(row[c] for c in cols)
        new = key_map.get(parent, {}).get(old)
        if new is not None:
            out.update(zip(cols, new))
    return out


def check_invariants(base_path, lost_path, before_path, after_path, result) -> None:
    """What must hold after any applied recovery.

    - every LOST insert is in CURRENT with the same content (foreign keys
      rewritten through the key map) at the key the result names, or is a
      listed conflict;
    - every LOST update's LOST-changed columns hold LOST's values, or are
      listed as conflicts; every LOST delete is gone, or listed (conflict,
      skipped);
    - every CURRENT row is unchanged except cells the merge says it replayed
      and rows it deleted;
    - no foreign-key violation; counters above every key.
    """
    base, lost, before, after = Db(base_path), Db(lost_path), Db(before_path), Db(after_path)
    plan = result.plan
    key_map = {t: dict(m) for t, m in plan.key_map.items()}
    conflicted = {(c.table, c.key) for c in plan.conflicts}
    conflict_cells = {}
    for c in plan.conflicts:
        conflict_cells.setdefault((c.table, c.key), set()).update(c.columns)
    by_key = {(r.table, r.change, r.lost_key): r for r in plan.rows}
    touched = {}  # (table, key in CURRENT) -> columns the merge may have changed; None: deleted

    for t, lrows in lost.tables.items():
        brows = base.tables.get(t, {})
        if t not in after.tables:
            continue
        if not lost.pk[t]:
            _check_keyless(t, base, lost, before, after, by_key, conflicted, key_map)
            continue
        arows = after.tables[t]
        for k, lrow in lrows.items():
            if k not in brows:
                r = by_key.get((t, "insert", k))
                assert r is not None, f"{t} {k}: a LOST insert has no outcome"
                if r.status == "conflict":
                    assert (t, k) in conflicted, f"{t} {k}: conflict outcome without a listed conflict"
                    continue
                assert r.status in ("replayed", "remapped", "present"), r
                now = arows.get(tuple(r.key))
                assert now is not None, f"{t} {k}: said to be at {r.key} but is not there"
                want = map_row(lost, t, lrow, key_map)
                want.update(zip(lost.pk[t], r.key))
                common = [c for c in lost.cols[t] if c in after.cols[t]]
                assert {c: now[c] for c in common} == {c: want[c] for c in common}, (t, k, now, want)
                if r.status == "remapped":
                    assert tuple(r.key) != k and key_map[t][k] == tuple(r.key)
                touched[(t, tuple(r.key))] = set(common)
            elif lrows[k] != brows[k]:
                r = by_key.get((t, "update", k))
                assert r is not None, f"{t} {k}: a LOST update has no outcome"
                now = arows.get(k)
                changed = [c for c in lost.cols[t] if c in brows[k] and lrow[c] != brows[k][c] and c in after.cols[t]]
                if now is None:
                    assert (t, k) in conflicted, f"{t} {k}: LOST updated it, it is gone, no conflict listed"
                    continue
                want = map_row(lost, t, lrow, key_map)
                for c in changed:
                    if c in conflict_cells.get((t, k), ()):
                        continue
                    assert now[c] == want[c], (t, k, c, now[c], want[c])
                touched[(t, k)] = set(changed)
        for k in brows:
            if k in lrows:
                continue
            r = by_key.get((t, "delete", k))
            assert r is not None, f"{t} {k}: a LOST delete has no outcome"
            if r.status in ("replayed", "present"):
                assert k not in arows, f"{t} {k}: LOST deleted it, said replayed, still there"
                touched[(t, k)] = None
            else:
                assert r.status in ("conflict", "skipped"), r
                if r.status == "conflict":
                    assert (t, k) in conflicted

    for t, brows in before.tables.items():
        if not before.pk[t]:
            continue
        arows = after.tables.get(t, {})
        for k, brow in brows.items():
            cols = touched.get((t, k), set())
            if cols is None:
                continue
            now = arows.get(k)
            assert now is not None, f"{t} {k}: a CURRENT row disappeared"
            for c, v in brow.items():
                if c not in cols:
                    assert now[c] == v, f"{t} {k}.{c}: CURRENT's value {v!r} became {now[c]!r}"
    assert after.fk_violations == [], after.fk_violations
    for t, rows in after.tables.items():
        if t in after.seq or t in lost.seq:
            top = max([k[0] for k in rows if isinstance(k[0], int)] + [0])
            assert after.seq.get(t, 0) >= top, f"{t}: counter {after.seq.get(t)} below key {top}"
            assert after.seq.get(t, 0) >= lost.seq.get(t, 0)


def _check_keyless(t, base, lost, before, after, by_key, conflicted, key_map) -> None:
    """A keyless table: LOST's extra copies are there (or listed), CURRENT lost only what LOST removed."""
    lms, bms, ams = lost.tables[t], base.tables.get(t, {}), after.tables[t]
    for vals, n in lms.items():
        if n <= bms.get(vals, 0):
            continue
        r = by_key.get((t, "insert", vals))
        assert r is not None, f"{t} {vals}: a row LOST added has no outcome"
        if r.status == "conflict":
            assert (t, vals) in conflicted
            continue
        want = map_row(lost, t, dict(zip(lost.cols[t], vals)), key_map)
        assert ams.get(tuple(want[c] for c in after.cols[t]), 0) >= 1, f"{t} {want}: missing"
    for vals, n in before.tables[t].items():
        removed = max(0, bms.get(vals, 0) - lms.get(vals, 0))
        assert ams.get(vals, 0) >= n - removed, f"{t} {vals}: CURRENT lost copies LOST did not remove"
