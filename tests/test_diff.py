"""The engine-level diff: pairing by key, multisets, schema changes, agreement with sqldiff."""

from __future__ import annotations

import random

import pytest

from diffkit import build, derive, our_changes, sqldiff_changes
from mulligan.engines.sqlite.diff import diff_files
from mulligan.ops.diff import diff_states

SCHEMA = """
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB, note);
CREATE TABLE pairs(a TEXT, b INTEGER, v NUMERIC, PRIMARY KEY(a, b));
CREATE TABLE words(k TEXT PRIMARY KEY, n INTEGER, t TEXT) WITHOUT ROWID;
CREATE TABLE grid(x INTEGER, y TEXT, z, PRIMARY KEY(y, x)) WITHOUT ROWID;
"""

VALUES = [None, 0, 1, -7, 1.0, 2.5, -0.0, 1e300, "", "1", "1.0", "text", "ünïcode ✓", "a'quote", b"", b"\x00\x01",
          b"blob", "x" * 5000, b"\xff" * 6000, 9223372036854775807, -9223372036854775808]


def fill(rng: random.Random) -> str:
    stmts = []
    for i in range(1, 300):
        stmts.append(("INSERT INTO items VALUES(?,?,?,?,?)", (i, f"n{i}", rng.choice([None, i * 1.5, i]),
                                                             rng.choice([None, b"b%d" % i]), rng.choice(VALUES))))
        stmts.append(("INSERT INTO pairs VALUES(?,?,?)", (f"k{i % 17}", i, rng.choice(VALUES))))
        stmts.append(("INSERT INTO words VALUES(?,?,?)", (f"w{i:04d}", i, rng.choice([None, "t", "long" * 300]))))
        stmts.append(("INSERT INTO grid VALUES(?,?,?)", (i % 13, f"y{i % 7}-{i}", rng.choice(VALUES))))
    return stmts


def apply(path: str, stmts) -> None:
    import apsw

    conn = apsw.Connection(path)
    with conn:
        for sql, args in stmts:
            conn.execute(sql, args)
    conn.close()


def mutate(rng: random.Random):
    out = []
    for _ in range(120):
        op = rng.randrange(9)
        i = rng.randrange(1, 400)
        v = rng.choice(VALUES)
        out += [
            ("UPDATE items SET note=? WHERE id=?", (v, i)),
            ("UPDATE items SET price=?, data=? WHERE id=?", (rng.choice(VALUES), rng.choice(VALUES), i)),
            ("DELETE FROM items WHERE id=?", (i,)),
            ("INSERT OR REPLACE INTO items VALUES(?,?,?,?,?)", (i + 300, "new", v, v, v)),
            ("UPDATE pairs SET v=? WHERE a=? AND b=?", (v, f"k{i % 17}", i)),
            ("DELETE FROM pairs WHERE a=? AND b=?", (f"k{i % 17}", i)),
            ("INSERT OR REPLACE INTO words VALUES(?,?,?)", (f"w{i:04d}", i + 1, v if not isinstance(v, bytes) else None)),
            ("DELETE FROM grid WHERE y=? AND x=?", (f"y{i % 7}-{i}", i % 13)),
            ("INSERT OR REPLACE INTO grid VALUES(?,?,?)", (i % 13, f"y{i % 7}-{i}", v)),
        ][op : op + 1]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_diff_agrees_with_sqldiff_on_generated_pairs(tmp_path, seed):
    rng = random.Random(seed)
    a = build(tmp_path / "a.db", SCHEMA)
    apply(a, fill(rng))
    b = derive(a, tmp_path / "b.db", "")
    apply(b, mutate(rng))
    ours = diff_files(a, b)
    expected = sqldiff_changes(a, b, tmp_path)
    assert expected, "the generated pair should differ"
    assert our_changes(ours) == expected
    assert our_changes(diff_files(a, b, compare_pages=False)) == expected


def test_an_update_reports_the_changed_columns_with_before_and_after(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, x, y); INSERT INTO t VALUES (1, 'a', 2)")
    b = derive(a, tmp_path / "b.db", "UPDATE t SET y = 3")
    [t] = diff_states(a, b).tables
    [r] = t.rows
    assert (r.kind, r.key, r.changed, r.before, r.after) == ("update", (1,), ("y",), (1, "a", 2), (1, "a", 3))


def test_values_equal_under_sqlite_comparison_are_not_reported(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, x); INSERT INTO t VALUES (1, 1), (2, '1'), (3, NULL)")
    b = derive(a, tmp_path / "b.db", "UPDATE t SET x = 1.0 WHERE id = 1; UPDATE t SET x = 1 WHERE id = 2")
    [t] = diff_states(a, b).tables
    assert [(r.key, r.changed) for r in t.rows] == [((2,), ("x",))]


def test_a_table_without_a_key_is_compared_as_a_multiset_and_flagged(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE log(msg, n); INSERT INTO log VALUES ('x', 1), ('x', 1), ('y', 2), ('z', NULL)")
    b = derive(a, tmp_path / "b.db", "DELETE FROM log WHERE rowid = 1; INSERT INTO log VALUES ('y', 2), ('y', 2); VACUUM")
    [t] = diff_states(a, b).tables
    assert t.keyless and t.key == []
    assert [(r.kind, r.before or r.after, r.count) for r in t.rows] == [("delete", ("x", 1), 1), ("insert", ("y", 2), 2)]
    assert (t.inserted, t.deleted) == (2, 1)


def test_rows_are_paired_by_declared_key_not_by_rowid(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(code TEXT PRIMARY KEY, v); INSERT INTO t VALUES ('a', 1), ('b', 2), ('c', 3)")
    b = derive(a, tmp_path / "b.db", "DELETE FROM t WHERE code = 'a'; INSERT INTO t VALUES ('a', 1); VACUUM")
    assert diff_states(a, b).changed_tables == []


def test_schema_changes_are_reported_and_rows_compared_on_common_columns(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, x, gone); INSERT INTO t VALUES (1, 'a', 0), (2, 'b', 0);"
                                 "CREATE TABLE old(id INTEGER PRIMARY KEY); INSERT INTO old VALUES (1);"
                                 "CREATE INDEX t_x ON t(x)")
    b = derive(a, tmp_path / "b.db", "ALTER TABLE t DROP COLUMN gone; ALTER TABLE t ADD COLUMN extra DEFAULT 5;"
                                     "UPDATE t SET x = 'B' WHERE id = 2; DROP TABLE old; CREATE TABLE fresh(k PRIMARY KEY);"
                                     "INSERT INTO fresh VALUES ('n'); DROP INDEX t_x")
    d = diff_states(a, b)
    kinds = {(s.kind, s.type, s.name) for s in d.schema}
    assert kinds == {("changed", "table", "t"), ("removed", "table", "old"), ("added", "table", "fresh"), ("removed", "index", "t_x")}
    t = next(s for s in d.schema if s.name == "t")
    assert (t.columns_added, t.columns_removed) == (["extra"], ["gone"])
    by = {td.name: td for td in d.tables}
    assert by["t"].columns == ["id", "x"] and by["t"].schema_changed
    assert [(r.key, r.changed) for r in by["t"].rows] == [((2,), ("x",))]
    assert (by["old"].status, by["old"].deleted) == ("removed", 1)
    assert (by["fresh"].status, by["fresh"].inserted) == ("added", 1)


def test_mulligan_own_tables_never_take_part(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE _mulligan_identity(id INTEGER PRIMARY KEY, env); INSERT INTO _mulligan_identity VALUES (1, 'production');"
                                 "CREATE TABLE _mulligan_other(x); CREATE TABLE t(id INTEGER PRIMARY KEY)")
    b = derive(a, tmp_path / "b.db", "UPDATE _mulligan_identity SET env = 'restored'; DROP TABLE _mulligan_other;"
                                     "CREATE TABLE _mulligan_new(y); CREATE INDEX _mulligan_ix ON t(id)")
    d = diff_states(a, b)
    assert [t.name for t in d.tables] == ["t"]
    assert d.schema == [] and d.changed_tables == []


def test_the_limit_caps_rows_kept_but_never_the_counts(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    b = derive(a, tmp_path / "b.db", "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50) INSERT INTO t SELECT i FROM c")
    [t] = diff_states(a, b, limit=5).tables
    assert (t.inserted, len(t.rows), t.truncated) == (50, 5, True)


def test_only_the_tables_asked_for_are_compared(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY); CREATE TABLE u(id INTEGER PRIMARY KEY)")
    b = derive(a, tmp_path / "b.db", "INSERT INTO t VALUES (1); INSERT INTO u VALUES (1)")
    assert [t.name for t in diff_states(a, b, tables=["u"]).changed_tables] == ["u"]


def test_a_file_that_is_not_a_database_is_refused_with_a_clear_error(tmp_path):
    from mulligan.errors import NotADatabase

    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 300)
    with pytest.raises(NotADatabase):
        diff_states(a, str(junk))
