"""Random schemas, random interleavings of lost and live writes: the merge keeps its invariants.

Each example builds a schema (surrogate keys with and without AUTOINCREMENT,
natural text keys, link tables with composite keys, composite foreign keys,
self-references, UNIQUE columns, cascades), a BASE, then LOST and CURRENT as
two independent random histories from BASE written with foreign keys
enforced. The plan must change nothing; the apply must keep every invariant of
:func:`test_recover_support.check_invariants`.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import apsw
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mulligan.ops.recover import apply_recovery, plan_recovery
from mulligan.report.recover import recovery_sql
from test_recover_support import Db, check_invariants, connect, copy_db, file_digest

NAMES = [f"k{i}" for i in range(8)]
UNIQUES = [f"u{i}" for i in range(6)]


class Table:
    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind  # auto | plain | natural | link
        self.fks: list[tuple[tuple[str, ...], "Table", bool, tuple[str, ...]]] = []  # columns, parent, nullable, refs
        self.unique = False
        self.self_ref = False
        self.on_delete = "CASCADE"
        self.without_rowid = False
        self.unique_pair = False  # UNIQUE (v1, v2): a composite natural key, NULLs never equal
        self.on_update_cascade = False  # a parent's referenced value changing carries its children along

    @property
    def pk(self) -> list[str]:
        return {"link": ["a", "b"], "bag": []}.get(self.kind, ["id"])

    @property
    def locator(self) -> list[str]:
        """Columns that find one row: the key, or the rowid of a keyless table."""
        return self.pk or ["rowid"]

    def ddl(self) -> str:
        cols = []
        if self.kind == "auto":
            cols.append("id INTEGER PRIMARY KEY AUTOINCREMENT")
        elif self.kind == "plain":
            cols.append("id INTEGER PRIMARY KEY")
        elif self.kind == "natural":
            cols.append("id TEXT PRIMARY KEY")
        elif self.kind == "link":
            cols += ["a NOT NULL", "b NOT NULL"]
        for c, parent, nullable, _ in self.fks:
            if self.kind == "link" and c[0] in ("a", "b"):
                continue
            cols += [f"{x}{'' if nullable else ' NOT NULL'}" for x in c]
        if self.self_ref:
            cols.append("parent_id INTEGER")
        if self.unique:
            cols.append("handle TEXT UNIQUE")
        cols += ["v1 INTEGER", "v2 TEXT"]
        cons = []
        if self.kind == "link":
            cons.append("PRIMARY KEY (a, b)")
        if self.unique_pair:
            cons.append("UNIQUE (v1, v2)")
        for c, parent, _, ref in self.fks:
            cons.append(
                f"FOREIGN KEY ({', '.join(c)}) REFERENCES {parent.name}({', '.join(ref)}) ON DELETE {self.on_delete}"
                + (" ON UPDATE CASCADE" if self.on_update_cascade else "")
            )
        if self.self_ref:
            cons.append(f"FOREIGN KEY (parent_id) REFERENCES {self.name}(id) ON DELETE CASCADE")
        tail = " WITHOUT ROWID" if self.without_rowid else ""
        return f"CREATE TABLE {self.name}({', '.join(cols + cons)}){tail};"


@st.composite
def schemas(draw):
    n = draw(st.integers(2, 4))
    tables: list[Table] = []
    for i in range(n):
        keyed = [t for t in tables if t.kind not in ("link", "bag")]
        parents = [t for t in tables if t.kind != "bag"]
        kinds = ["auto", "plain", "natural"] + (["link", "bag"] if len(keyed) >= 1 and i >= 1 else [])
        t = Table(f"t{i}", draw(st.sampled_from(kinds)))
        if t.kind == "link":
            pa = draw(st.sampled_from(keyed))
            pb = draw(st.sampled_from(keyed))
            t.fks.append((("a",), pa, False, tuple(pa.pk)))
            t.fks.append((("b",), pb, False, tuple(pb.pk)))
        else:
            for j in range(draw(st.integers(0, 2))):
                if not parents:
                    break
                parent = draw(st.sampled_from(parents))
                if parent.unique and draw(st.booleans()):  # by a natural column: REFERENCES parent(handle)
                    t.fks.append(((f"f{j}h",), parent, draw(st.booleans()), ("handle",)))
                else:
                    cols = tuple(f"f{j}{x}" for x in parent.pk)
                    t.fks.append((cols, parent, draw(st.booleans()), tuple(parent.pk)))
            t.self_ref = t.kind in ("auto", "plain") and draw(st.booleans())
        t.unique = draw(st.booleans())
        t.without_rowid = t.kind in ("natural", "link") and draw(st.booleans())
        t.unique_pair = draw(st.integers(0, 3)) == 0
        t.on_update_cascade = draw(st.booleans())
        t.on_delete = draw(st.sampled_from(["CASCADE", "SET NULL", "NO ACTION"]))
        if t.on_delete == "SET NULL" and any(not nullable for _, _, nullable, _ in t.fks):
            t.on_delete = "CASCADE"
        tables.append(t)
    return tables


def keys_of(conn, t: Table) -> list[tuple]:
    return conn.execute(f"SELECT {', '.join(t.locator)} FROM {t.name} ORDER BY {', '.join(t.locator)}").fetchall()


def random_ops(path: str, tables: list[Table], rnd: random.Random, n: int) -> None:
    conn = connect(path)
    for _ in range(n):
        t = rnd.choice(tables)
        what = rnd.choices(["insert", "update", "delete"], [5, 3, 2])[0]
        try:
            with conn:
                if what == "insert":
                    _insert(conn, t, rnd)
                elif what == "update":
                    _update(conn, t, rnd)
                else:
                    keys = keys_of(conn, t)
                    if keys:
                        k = rnd.choice(keys)
                        conn.execute(f"DELETE FROM {t.name} WHERE {' AND '.join(f'{c} = ?' for c in t.locator)}", k)
        except apsw.ConstraintError:
            pass
    conn.close()


def _ref(conn, parent: Table, rnd, nullable: bool, ref: tuple[str, ...]):
    if ref == tuple(parent.pk):
        keys = keys_of(conn, parent)
    else:
        keys = conn.execute(f"SELECT {', '.join(ref)} FROM {parent.name} WHERE handle IS NOT NULL ORDER BY 1").fetchall()
    if not keys or (nullable and rnd.random() < 0.2):
        if nullable:
            return (None,) * len(ref)
        raise apsw.ConstraintError("no parent")
    return rnd.choice(keys)


def _values(conn, t: Table, rnd) -> dict:
    vals = {}
    for cols, parent, nullable, ref in t.fks:
        vals.update(zip(cols, _ref(conn, parent, rnd, nullable, ref)))
    if t.self_ref:
        keys = keys_of(conn, t)
        vals["parent_id"] = rnd.choice(keys)[0] if keys and rnd.random() < 0.5 else None
    if t.unique:
        vals["handle"] = rnd.choice(UNIQUES + [None])
    vals["v1"] = rnd.randint(0, 3)
    vals["v2"] = rnd.choice(["x", "y", None])
    return vals


def _insert(conn, t: Table, rnd) -> None:
    vals = _values(conn, t, rnd)
    if t.kind == "natural":
        vals["id"] = rnd.choice(NAMES)
    elif t.kind == "plain" and rnd.random() < 0.2:
        vals["id"] = rnd.randint(1, 12)  # an explicit key now and then
    cols = list(vals)
    conn.execute(f"INSERT INTO {t.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", [vals[c] for c in cols])


def _update(conn, t: Table, rnd) -> None:
    keys = keys_of(conn, t)
    if not keys:
        return
    k = rnd.choice(keys)
    vals = _values(conn, t, rnd)
    pick = [c for c in vals if c not in t.pk]
    chosen = rnd.sample(pick, rnd.randint(1, min(2, len(pick))))
    # a composite foreign key moves as a whole
    for cols, *_ in t.fks:
        if any(c in chosen for c in cols):
            chosen = list(dict.fromkeys(chosen + list(cols)))
    chosen = [c for c in chosen if c not in t.pk]
    if not chosen:
        return
    sets = ", ".join(f"{c} = ?" for c in chosen)
    conn.execute(f"UPDATE {t.name} SET {sets} WHERE {' AND '.join(f'{c} = ?' for c in t.locator)}",
                 [vals[c] for c in chosen] + list(k))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Where examples write their databases: memory-backed when the machine has it (no fsync cost)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = tempfile.mkdtemp(prefix="mulligan-recover-prop-", dir="/dev/shm")
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield str(tmp_path_factory.mktemp("prop"))


def example_dir(root: str) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tables=schemas(), seed=st.integers(0, 2**32 - 1), sizes=st.tuples(st.integers(0, 25), st.integers(0, 25), st.integers(0, 25)))
def test_random_histories_merge_without_losing_or_breaking_anything(scratch, tables, seed, sizes):
    tmp = example_dir(scratch)
    rnd = random.Random(seed)
    base = str(tmp / "base.db")
    conn = connect(base)
    ddl = "".join(t.ddl() for t in tables)
    note(ddl)
    conn.execute(ddl)
    conn.close()
    random_ops(base, tables, rnd, sizes[0])
    lost = copy_db(base, tmp / "lost.db")
    current = copy_db(base, tmp / "current.db")
    random_ops(lost, tables, rnd, sizes[1])
    random_ops(current, tables, rnd, sizes[2])
    before = copy_db(current, tmp / "before.db")

    digest = file_digest(current)
    plan = plan_recovery(base, lost, current)
    assert file_digest(current) == digest, "the plan wrote to CURRENT"

    result = apply_recovery(base, lost, current)
    check_invariants(base, lost, before, current, result)

    # The reviewable SQL script of the plan does exactly what the apply did.
    rehearsal = copy_db(before, tmp / "rehearsal.db")
    conn = apsw.Connection(rehearsal)
    conn.execute(recovery_sql(plan))
    conn.close()
    assert Db(rehearsal).tables == Db(current).tables


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tables=schemas(), seed=st.integers(0, 2**32 - 1), sizes=st.tuples(st.integers(0, 25), st.integers(0, 30)))
def test_when_nobody_wrote_after_the_mistake_the_merge_gives_back_lost_exactly(scratch, tables, seed, sizes):
    tmp = example_dir(scratch)
    rnd = random.Random(seed)
    base = str(tmp / "base.db")
    conn = connect(base)
    ddl = "".join(t.ddl() for t in tables)
    note(ddl)
    conn.execute(ddl)
    conn.close()
    random_ops(base, tables, rnd, sizes[0])
    lost = copy_db(base, tmp / "lost.db")
    current = copy_db(base, tmp / "current.db")
    random_ops(lost, tables, rnd, sizes[1])

    result = apply_recovery(base, lost, current)
    # By rule a UNIQUE value swapped between rows is a conflict, a human deciding the order
    # (tests/test_recover_rules.py): when LOST's history holds such a cycle, those cells are
    # reported and keep CURRENT's values; every other change of LOST is replayed.
    swaps = [c for c in result.plan.conflicts if c.kind == "unique" and "swapped between rows" in c.reason]
    assert result.plan.conflicts == swaps
    assert result.plan.key_map == {}
    after, want = Db(current), Db(lost)
    held = {(c.table, tuple(c.key)): set(c.columns) for c in swaps}
    assert after.tables.keys() == want.tables.keys()
    for t, rows in want.tables.items():
        assert after.tables[t].keys() == rows.keys()
        for k, row in rows.items():
            if not isinstance(row, dict):  # a keyless table: a multiset of whole rows
                assert after.tables[t][k] == row
                continue
            refused = held.get((t, k), set())
            assert {c: v for c, v in after.tables[t][k].items() if c not in refused} == \
                   {c: v for c, v in row.items() if c not in refused}
    assert all(after.seq.get(t, 0) >= s for t, s in want.seq.items())
