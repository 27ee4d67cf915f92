"""Recovery while the application keeps writing: live use is expected, not refused."""

from __future__ import annotations

import subprocess
import sys
import time

import apsw

from mulligan.ops.recover import apply_recovery
from test_recover_scenario import build_states
from test_recover_support import Db, check_invariants, copy_db

APP = r"""
import sys, apsw
path, log = sys.argv[1], sys.argv[2]
conn = apsw.Connection(path)
conn.set_busy_timeout(20000)
conn.execute("PRAGMA foreign_keys = ON")
out = open(log, "a", buffering=1)
print("ready", flush=True)
n = 0
while True:
    n += 1
    with conn:
        conn.execute("INSERT INTO users(username, email) VALUES (?, ?)", (f"signup{n}", f"s{n}@x"))
        uid = conn.last_insert_rowid()
        conn.execute("INSERT INTO posts(author_id, title, body) VALUES (?, 'hi', 'live')", (uid,))
        pid = conn.last_insert_rowid()
    out.write(f"{uid} {pid}\n")
"""


def test_apply_while_users_keep_signing_up_loses_none_of_their_rows_and_none_of_the_lost_ones(tmp_path):
    base, lost, current, tmp = build_states(tmp_path)
    conn = apsw.Connection(current)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.close()
    log = tmp / "app.log"
    app = subprocess.Popen([sys.executable, "-c", APP, current, str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        before = copy_db(current, tmp / "before.db")  # a point before the apply; the app writes on
        result = apply_recovery(base, lost, current)
        time.sleep(0.3)
    finally:
        app.kill()
        app.wait()
    lines = [line.split() for line in log.read_text().splitlines()]
    written = [(int(u), int(p)) for u, p in (f for f in lines if len(f) == 2)]  # the last line may be cut by the kill
    after = Db(current)
    assert written, "the application did not write"
    for uid, pid in written:
        assert after.tables["users"][(uid,)]["username"].startswith("signup")
        assert after.tables["posts"][(pid,)]["author_id"] == uid
    # Keys handed to lost rows never collide with the app's: they were allocated under the write lock.
    new_keys = set(result.plan.key_map.get("users", {}).values())
    assert not new_keys & {(uid,) for uid, _ in written}
    check_invariants(base, lost, before, current, result)


def test_apply_against_a_writer_that_never_lets_go_refuses_after_its_wait_and_writes_nothing(tmp_path):
    """The write lock held by another process for longer than the wait: a one-line refusal
    (DatabaseBusy, saying nothing was written) after about the wait, the file as it was."""
    from mulligan.errors import DatabaseBusy
    from mulligan.ops.recover import RecoveryOptions

    base, lost, current, tmp = build_states(tmp_path)
    conn = apsw.Connection(current)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, apsw\n"
        "c = apsw.Connection(sys.argv[1]); c.execute('BEGIN IMMEDIATE')\n"
        "print('ready', flush=True); time.sleep(30)\n"), current], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = copy_db(current, tmp / "before.db")
        t0 = time.monotonic()
        try:
            apply_recovery(base, lost, current, RecoveryOptions(busy_ms=400))
            raise AssertionError("the apply should have been refused")
        except DatabaseBusy as exc:
            assert "nothing was written" in exc.one_line()
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert 0.4 <= waited < 5, waited
    assert Db(current).tables == Db(before).tables
