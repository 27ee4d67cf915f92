"""Page-level skipping: identical pages are never read as rows, and skipping never hides a difference."""

from __future__ import annotations

import os

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffkit import build, derive, run
from mulligan.engines.sqlite.diff import StatePair, diff_files, diff_pair

BIG = """CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT, blob BLOB);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
INSERT INTO big SELECT i, printf('row %d %s', i, hex(randomblob(20))), CASE WHEN i % 500 = 0 THEN randomblob(9000) END FROM c;"""


def rows(d) -> set:
    return {(t.name, r.kind, r.key, r.before, r.after, r.changed, r.count) for t in d.tables for r in t.rows}


def same_with_and_without_pages(a: str, b: str):
    fast, slow = diff_files(a, b), diff_files(a, b, compare_pages=False)
    assert fast.pages_compared
    assert rows(fast) == rows(slow)
    return fast


def test_tables_whose_pages_are_identical_are_skipped_unread(tmp_path):
    script = "".join(
        f"CREATE TABLE t{i}(id INTEGER PRIMARY KEY, v);"
        f"WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000) INSERT INTO t{i} SELECT n, n FROM c;"
        for i in range(10))
    a = build(tmp_path / "a.db", script)
    b = derive(a, tmp_path / "b.db", "UPDATE t3 SET v = 'changed' WHERE id = 250")
    d = same_with_and_without_pages(a, b)
    methods = {t.name: t.method for t in d.tables}
    assert d.pages_compared
    assert methods.pop("t3") == "ranges"
    assert set(methods.values()) == {"skipped"}
    assert [(t.name, t.updated) for t in d.changed_tables] == [("t3", 1)]


def test_only_the_key_ranges_of_differing_leaves_are_compared(tmp_path):
    a = build(tmp_path / "a.db", BIG)
    b = derive(a, tmp_path / "b.db", "UPDATE big SET body = 'x' WHERE id IN (10, 2000); DELETE FROM big WHERE id = 1500;"
                                     "INSERT INTO big VALUES (5000, 'new', NULL)")
    d = same_with_and_without_pages(a, b)
    [t] = d.tables
    assert t.method == "ranges"
    assert (t.inserted, t.updated, t.deleted) == (1, 2, 1)


def test_rows_on_freed_leaf_pages_are_still_reported_deleted(tmp_path):
    a = build(tmp_path / "a.db", BIG)
    b = derive(a, tmp_path / "b.db", "PRAGMA secure_delete = OFF; DELETE FROM big WHERE id BETWEEN 700 AND 1900")
    d = same_with_and_without_pages(a, b)
    assert d.tables[0].deleted == 1201


def test_a_change_only_in_an_overflow_page_is_found(tmp_path):
    a = build(tmp_path / "a.db", BIG)
    # One byte deep in the overflow chain, set to a value it does not already have (the blob is random).
    b = derive(a, tmp_path / "b.db", "UPDATE big SET blob = CAST(substr(blob, 1, 8000) || CASE WHEN substr(blob, 8001, 1) = x'00' "
                                     "THEN x'01' ELSE x'00' END || substr(blob, 8002) AS BLOB) WHERE id = 1000")
    d = same_with_and_without_pages(a, b)
    assert [(r.key, r.changed) for r in d.tables[0].rows] == [((1000,), ("blob",))]


def wal_writer(path: str) -> apsw.Connection:
    """A connection that keeps its commits in the WAL (no checkpoint) while it stays open."""
    conn = apsw.Connection(path)
    run(conn, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0")
    return conn


def test_the_frames_of_a_write_ahead_log_are_read_as_part_of_the_state(tmp_path):
    a = build(tmp_path / "a.db", BIG)
    b = derive(a, tmp_path / "b.db", "")
    conn = wal_writer(b)
    try:
        run(conn, "UPDATE big SET body = 'in the wal' WHERE id = 7; DELETE FROM big WHERE id BETWEEN 2000 AND 2100;"
                  "INSERT INTO big SELECT id + 10000, body, blob FROM big WHERE id <= 1500")
        assert os.path.getsize(b + "-wal") > 0
        d = same_with_and_without_pages(a, b)
        assert d.pages_compared
        assert (d.tables[0].inserted, d.tables[0].updated, d.tables[0].deleted) == (1500, 1, 101)
    finally:
        conn.close()


def test_pages_read_before_a_commit_are_not_trusted_and_rows_are_compared_instead(tmp_path):
    a = build(tmp_path / "a.db", BIG)
    b = derive(a, tmp_path / "b.db", "")
    conn = wal_writer(b)
    try:
        run(conn, "UPDATE big SET body = 'first' WHERE id = 7")
        with StatePair(a, b) as pair:  # pages read and the read transaction begun
            run(conn, "UPDATE big SET body = 'second' WHERE id = 8")
            assert not pair.images[1].current()
            d = diff_pair(pair)
        assert not d.pages_compared
        assert [(r.key, r.after[1]) for r in d.tables[0].rows] == [((7,), "first")]
    finally:
        conn.close()


def test_a_without_rowid_table_is_skipped_when_unchanged_and_compared_whole_otherwise(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID; CREATE TABLE s(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
                                 "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 2000)"
                                 " INSERT INTO w SELECT printf('k%05d', n), n FROM c;"
                                 "INSERT INTO s VALUES ('only', 1)")
    b = derive(a, tmp_path / "b.db", "UPDATE w SET v = -1 WHERE k = 'k01000'")
    d = same_with_and_without_pages(a, b)
    assert {t.name: t.method for t in d.tables} == {"s": "skipped", "w": "full"}


ops = st.lists(st.tuples(st.sampled_from(["update", "delete", "insert", "grow", "delete-range"]),
                         st.integers(1, 3200), st.integers(0, 400)), min_size=1, max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, in_wal=st.booleans(), checkpoint_at=st.integers(0, 25))
def test_skipping_pages_never_changes_the_answer(tmp_path_factory, ops, in_wal, checkpoint_at):
    d = tmp_path_factory.mktemp("pages")
    a = build(d / "a.db", BIG)
    b = derive(a, d / "b.db", "")
    conn = wal_writer(b) if in_wal else apsw.Connection(b)
    try:
        for k, (op, i, n) in enumerate(ops):
            if in_wal and k == checkpoint_at:
                run(conn, "PRAGMA wal_checkpoint(PASSIVE)")  # some changes in the main file, later ones in the WAL
            if op == "update":
                conn.execute("UPDATE big SET body = ? WHERE id = ?", (f"u{n}", i))
            elif op == "delete":
                conn.execute("DELETE FROM big WHERE id = ?", (i,))
            elif op == "insert":
                conn.execute("INSERT OR REPLACE INTO big VALUES (?, ?, NULL)", (i + n, "ins"))
            elif op == "grow":
                conn.execute("UPDATE big SET blob = randomblob(?) WHERE id = ?", (n * 30, i))
            else:
                conn.execute("DELETE FROM big WHERE id BETWEEN ? AND ?", (i, i + n))
        same_with_and_without_pages(a, b)
        same_with_and_without_pages(b, a)
    finally:
        conn.close()


def test_files_with_different_page_sizes_are_compared_row_by_row(tmp_path):
    a = build(tmp_path / "a.db", BIG)
    b = derive(a, tmp_path / "b.db", "PRAGMA page_size = 8192; VACUUM; DELETE FROM big WHERE id = 5")
    d = diff_files(a, b)
    assert not d.pages_compared
    assert [(r.kind, r.key) for r in d.tables[0].rows] == [("delete", (5,))]


def test_an_auto_vacuum_database_whose_pages_moved_gives_the_same_answer(tmp_path):
    a = build(tmp_path / "a.db", "PRAGMA auto_vacuum = FULL;" + BIG + "CREATE TABLE side(id INTEGER PRIMARY KEY, v);"
                                 "INSERT INTO side SELECT id, body FROM big WHERE id <= 2000")
    b = derive(a, tmp_path / "b.db", "DELETE FROM big WHERE id BETWEEN 100 AND 1400; UPDATE side SET v = 'moved' WHERE id = 1999")
    d = same_with_and_without_pages(a, b)
    assert {t.name: (t.updated, t.deleted) for t in d.changed_tables} == {"big": (0, 1301), "side": (1, 0)}
