"""The rollback detector's observation reads again only the tables whose largest key may have
moved (engines/sqlite/capture.py, Tailer.observe): whatever the writes, it must equal reading
every table."""

from __future__ import annotations

import os
import tempfile

import apsw
from hypothesis import given, settings
from hypothesis import strategies as st

from mulligan.engines.sqlite import capture as capture_mod
from mulligan.engines.sqlite.capture import Tailer

TABLES = 6

# (table, what, n): what the application does between two polls
OP = st.tuples(st.integers(0, TABLES - 1),
               st.sampled_from(["insert", "insert_many", "insert_far", "delete_last", "delete_all", "delete_some",
                                "update", "checkpoint", "truncate", "create_drop", "vacuum",
                                "incremental_vacuum", "own_checkpoint"]),
               st.integers(1, 400))


def _apply(app: apsw.Connection, table: int, what: str, n: int) -> None:
    t = f"t{table}"
    if what == "insert":
        app.execute(f"INSERT INTO {t}(v) VALUES (randomblob(?))", (n,))
    elif what == "insert_many":  # leaves split, new interior pages
        app.execute(f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) "
                    f"INSERT INTO {t}(v) SELECT randomblob(200) FROM k", (n,))
    elif what == "insert_far":
        app.execute(f"INSERT INTO {t}(id, v) VALUES ((SELECT coalesce(max(id), 0) + ? FROM {t}), x'00')", (n * 1000,))
    elif what == "delete_last":
        app.execute(f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id DESC LIMIT ?)", (n,))
    elif what == "delete_all":
        app.execute(f"DELETE FROM {t}")
    elif what == "delete_some":
        app.execute(f"DELETE FROM {t} WHERE id % ? = 0", (n % 7 + 2,))
    elif what == "update":
        app.execute(f"UPDATE {t} SET v = randomblob(?) WHERE id % 5 = 0", (n,))
    elif what == "checkpoint":
        app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    elif what == "truncate":
        app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    elif what == "create_drop":
        app.execute(f"DROP TABLE IF EXISTS x{table}")
        app.execute(f"CREATE TABLE x{table}(id INTEGER PRIMARY KEY, v)")
        app.execute(f"INSERT INTO x{table}(v) VALUES (1)")
    elif what == "vacuum" and n < 40:  # rarely: every page moves
        app.execute("VACUUM")
    elif what == "incremental_vacuum":  # with auto_vacuum=INCREMENTAL: pages at the end move into freed ones
        app.execute(f"PRAGMA incremental_vacuum({n})").fetchall()


def tables_db(path: str, n: int, fill: str | None = None) -> apsw.Connection:
    """A WAL database of tables t0..t{n-1} (each given a row by ``fill``, formatted with i), and
    the application's connection to it."""
    app = apsw.Connection(path)
    app.execute("PRAGMA journal_mode=WAL").fetchall()
    with app:
        for i in range(n):
            app.execute(f"CREATE TABLE t{i}(id INTEGER PRIMARY KEY AUTOINCREMENT, v BLOB)")
            if fill:
                app.execute(fill.format(i=i))
    return app


def _truth(path: str) -> dict[str, int]:
    c = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        names = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
        return {n: int(c.execute(f'SELECT max(rowid) FROM "{n}"').fetchone()[0] or 0) for n in names}
    finally:
        c.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(OP, min_size=1, max_size=4), min_size=1, max_size=25), st.booleans(),
       st.sampled_from(["NONE", "FULL", "INCREMENTAL"]))
def test_the_observation_equals_reading_every_table(rounds, small_pages, auto_vacuum):
    """auto_vacuum FULL and INCREMENTAL move b-tree pages (the last pages into freed ones,
    their parents rewritten) at commits that touch no row of the table moved."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "app.db")
        app = apsw.Connection(path)
        app.execute(f"PRAGMA page_size={512 if small_pages else 4096}")
        app.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
        app.execute("PRAGMA journal_mode=WAL").fetchall()
        app.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        for i in range(TABLES):
            app.execute(f"CREATE TABLE t{i}(id INTEGER PRIMARY KEY AUTOINCREMENT, v BLOB)")
            app.execute(f"INSERT INTO t{i}(v) VALUES (randomblob(?))", (50 + 400 * i,))
        t = Tailer(path)
        t.open()
        try:
            t.full_state(lambda pages: None, lambda: None)
            assert t.observe().maxrow == _truth(path)
            for ops in rounds:
                for table, what, n in ops:
                    if what == "own_checkpoint":  # the watcher's: its read taken again under the write lock
                        while t.poll().more:
                            pass
                        t.checkpoint()
                    else:
                        _apply(app, table, what, n)
                while t.poll().more:
                    pass
                got = t.observe().maxrow
                assert got == _truth(path), (ops, got)
        finally:
            t.close()
            app.close()


def test_a_commit_into_one_table_reads_that_table_alone(tmp_path, monkeypatch):
    """With 300 tables, a commit into one: its largest key is read again, not all 300 (each read
    is the table's rightmost leaf, fetched again after every commit)."""
    path = str(tmp_path / "many.db")
    app = tables_db(path, 300, "INSERT INTO t{i}(v) VALUES (randomblob(3000))")
    asked: list[list[str]] = []
    real = Tailer._largest_keys
    monkeypatch.setattr(Tailer, "_largest_keys", staticmethod(lambda c, tables: asked.append(list(tables)) or real(c, tables)))
    t = Tailer(path)
    t.open()
    try:
        t.full_state(lambda pages: None, lambda: None)
        t.observe()
        app.execute("INSERT INTO t299(v) VALUES (x'00')")
        t.poll()
        t.observe()  # the first time at a captured commit: every table, and the path to each one's end
        assert len(asked[-1]) == 300
        for k in range(1, 6):
            app.execute(f"INSERT INTO t{k * 7}(v) VALUES (randomblob(3000))")
            t.poll()
            assert t.observe().maxrow[f"t{k * 7}"] == 2
            assert asked[-1] == [f"t{k * 7}"], asked[-1]
        # A checkpoint of the watcher's own takes its read again, at the last captured commit:
        # still only the table a commit moved (it was every table after each one)
        app.execute("INSERT INTO t100(v) VALUES (x'00')")
        t.poll()
        t.checkpoint()
        assert t.observe().maxrow["t100"] == 2 and asked[-1] == ["t100"], asked[-1]
        monkeypatch.setattr(capture_mod, "OBSERVE_ALL_EVERY", 0.0)  # and every table now and then
        app.execute("INSERT INTO t1(v) VALUES (x'00')")
        t.poll()
        t.observe()
        assert len(asked[-1]) == 300
    finally:
        t.close()
        app.close()



WRITER = r"""
import apsw, random, sys, time
c = apsw.Connection(sys.argv[1])
c.set_busy_timeout(5000)
end = time.time() + float(sys.argv[2])
n = 0
while time.time() < end:
    t = f"t{random.randrange(20)}"
    with c:
        if random.random() < 0.2:
            c.execute(f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id DESC LIMIT ?)", (random.randint(1, 30),))
        else:
            c.execute(f"WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) "
                      f"INSERT INTO {t}(v) SELECT randomblob(300) FROM k", (random.randint(1, 40),))
    n += 1
    if n % 50 == 0:
        c.execute("PRAGMA wal_checkpoint(" + random.choice(["PASSIVE", "TRUNCATE"]) + ")").fetchall()
"""


def test_under_a_writer_process_every_observation_is_what_its_read_sees(tmp_path):
    """A real writer process commits into 20 tables (and checkpoints, and restarts the WAL)
    while the tailer polls: each observation equals every table's largest key as read at the
    tailer's held read, whichever tables it read again."""
    import subprocess
    import sys

    path = str(tmp_path / "app.db")
    tables_db(path, 20).close()
    t = Tailer(path)
    t.open()
    w = subprocess.Popen([sys.executable, "-c", WRITER, path, "4"])
    checked = 0
    try:
        t.full_state(lambda pages: None, lambda: None)
        while w.poll() is None:
            while t.poll().more:
                pass
            obs = t.observe()
            names = [f"t{i}" for i in range(20)]
            assert obs.maxrow == Tailer._largest_keys(t.reader, names)
            checked += 1
    finally:
        w.wait()
        t.close()
    assert checked > 20 and w.returncode == 0
