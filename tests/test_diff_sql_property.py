"""Property: running the --format sql output of diff(A, B) on A gives B."""

from __future__ import annotations

import math
import shutil

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffkit import build, content, our_changes, run, sqldiff_changes
from mulligan.ops.diff import diff
from mulligan.report.diff import diff_sql

SCHEMA = """
CREATE TABLE k(id INTEGER PRIMARY KEY, a, b TEXT, c REAL);
CREATE TABLE c2(x TEXT, y INTEGER, v, PRIMARY KEY(x, y));
CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE bag(p, q);
CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT, v);
CREATE INDEX k_a ON k(a);
CREATE TABLE audit(what);
CREATE TRIGGER k_audit AFTER DELETE ON k BEGIN INSERT INTO audit VALUES ('deleted ' || OLD.id); END;
"""

values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=12),
                   st.binary(max_size=12), st.sampled_from(["1", "1.0", "", "a'b", "ünï\x00code"]))
small = st.integers(0, 30)

row_ops = st.lists(st.one_of(
    st.tuples(st.just("INSERT OR REPLACE INTO k VALUES (?, ?, ?, ?)"), st.tuples(small, values, values, values)),
    st.tuples(st.just("DELETE FROM k WHERE id = ?"), st.tuples(small)),
    st.tuples(st.just("UPDATE k SET a = ?, c = ? WHERE id = ?"), st.tuples(values, values, small)),
    st.tuples(st.just("INSERT OR REPLACE INTO c2 VALUES (?, ?, ?)"), st.tuples(st.sampled_from("xyz"), small, values)),
    st.tuples(st.just("DELETE FROM c2 WHERE y = ?"), st.tuples(small)),
    st.tuples(st.just("INSERT OR REPLACE INTO w VALUES (?, ?)"), st.tuples(st.sampled_from(["p", "q", "r", "s"]), values)),
    st.tuples(st.just("DELETE FROM w WHERE k = ?"), st.tuples(st.sampled_from(["p", "q"]))),
    st.tuples(st.just("INSERT INTO bag VALUES (?, ?)"), st.tuples(values, st.sampled_from([1, 2]))),
    st.tuples(st.just("DELETE FROM bag WHERE rowid = ?"), st.tuples(small)),
    st.tuples(st.just("INSERT INTO seq(v) VALUES (?)"), st.tuples(values)),
    st.tuples(st.just("DELETE FROM seq WHERE id = ?"), st.tuples(small)),
), max_size=25)

schema_ops = st.lists(st.sampled_from([
    "ALTER TABLE k ADD COLUMN extra DEFAULT 7",
    "DROP TABLE w",
    "CREATE TABLE fresh(id INTEGER PRIMARY KEY, v); INSERT INTO fresh VALUES (1, 'one'), (2, x'02')",
    "DROP INDEX k_a",
    "CREATE INDEX c2_v ON c2(v)",
    "CREATE VIEW kv AS SELECT id, a FROM k",
    "DROP TRIGGER k_audit",
    "ALTER TABLE bag DROP COLUMN q",
]), max_size=2, unique=True)


def apply(path: str, ops) -> None:
    """Run row operations; those the schema no longer allows (a dropped table or column) are passed over."""
    conn = apsw.Connection(path)
    with conn:
        for sql, args in ops:
            try:
                conn.execute(sql, args)
            except apsw.SQLError:
                pass
    conn.close()


def two_states(d, before, after) -> tuple[str, str]:
    """A (the schema after BEFORE's row operations) and B (a copy of A after AFTER's)."""
    a = build(d / "a.db", SCHEMA)
    apply(a, before)
    b = str(d / "b.db")
    shutil.copyfile(a, b)
    apply(b, after)
    return a, b


def sequences(path: str) -> list:
    conn = apsw.Connection(path)
    try:
        return conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall()
    finally:
        conn.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=row_ops, after=row_ops, changes=schema_ops, late=row_ops)
def test_the_sql_script_turns_from_into_to(tmp_path_factory, before, after, changes, late):
    d = tmp_path_factory.mktemp("sql")
    a, b = two_states(d, before, after)
    conn = apsw.Connection(b)
    for change in changes:
        run(conn, change)
    conn.close()
    apply(b, late)
    script = diff_sql(diff(None, None, a, b, rebuild=True))
    replay = str(d / "replay.db")
    shutil.copyfile(a, replay)
    conn = apsw.Connection(replay)
    run(conn, script)
    conn.close()
    assert content(replay) == content(b)
    assert sequences(replay) == sequences(b)
    assert diff(None, None, replay, b).has_differences is False


def finite(ops):
    """sqldiff writes an infinite real as the bare word Inf, which its own SQL cannot read back."""
    return [(sql, args) for sql, args in ops if not any(isinstance(v, float) and math.isinf(v) for v in args)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=row_ops, after=row_ops)
def test_the_changes_found_are_the_ones_sqldiff_finds(tmp_path_factory, before, after):
    before, after = finite(before), finite(after)
    d = tmp_path_factory.mktemp("agree")
    a, b = two_states(d, before, after)
    keyed = ["k", "c2", "w"]  # sqldiff pairs keyless tables by rowid, so only keyed tables are compared
    ours = {c for c in our_changes(diff(None, None, a, b).diff) if c[0] in keyed}
    theirs = sqldiff_changes(a, b, d, tables=keyed)
    assert ours == theirs
