"""A snapshot killed at any moment leaves whole restore points or none."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import apsw

from conftest import dump


def big_db(path: str, rows: int = 6000) -> str:
    c = apsw.Connection(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
    with c:
        c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                  "INSERT INTO t(b) SELECT randomblob(700) FROM n", (rows,))
    c.close()
    return path


def test_snapshots_killed_at_random_moments_leave_the_vault_verifiable_and_every_point_restorable(project):
    db = big_db(str(project.dir / "app.db"), rows=20000)
    project.protect(db)
    locks = project.dir / ".mulligan" / "vault" / "locks"
    rnd = random.Random(1234)
    killed = 0
    for i in range(8):
        c = apsw.Connection(db)
        with c:
            c.execute("UPDATE t SET b = randomblob(700) WHERE id % 7 = ?", (i % 7,))
        c.close()
        p = subprocess.Popen([sys.executable, "-m", "mulligan", "snapshot", "app", "-q"], cwd=project.dir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random moment of the work, not of the interpreter's start-up: once the
        # snapshot's writer lease is in the vault, it is reading, hashing and storing.
        deadline = time.time() + 30
        while p.poll() is None and not any(locks.glob("writer-*")) and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rnd.uniform(0.0, 0.15))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            killed += 1
        p.wait()
    assert killed >= 2, "the test must actually interrupt snapshots"
    v = project.run("--json", "verify")
    assert v.code == 0, v.out + v.err
    listing = project.run("--json", "snapshots", "app").json["snapshots"]
    for s in listing:
        out = project.dir / f"r-{s['id']}.db"
        r = project.run("restore", "app", "--snapshot", s["id"], "--to", str(out))
        assert r.code == 0, r.err
        conn = apsw.Connection(str(out))
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 20000
        conn.close()
    # A later snapshot and prune clean up what the killed ones left, once their leases have
    # gone stale (two minutes without a heartbeat; aged here) and their temporary files are old
    # enough that no write can still be using them.
    assert project.run("snapshot", "app").code == 0
    vault = project.dir / ".mulligan" / "vault"
    dead = list((vault / "locks").glob("writer-*"))
    for lock in dead:  # killed mid-snapshot: their leases stay behind
        lease = json.loads(lock.read_text())
        lease["heartbeat"] -= 900  # stale after 2 minutes, removed after 10
        lock.write_text(json.dumps(lease))
    tmp = vault / ".tmp"
    (tmp / "999-half-a-pack").write_bytes(os.urandom(5000))  # as a write killed mid-way leaves it
    left = list(tmp.iterdir())  # with whatever the killed snapshots left
    aged = time.time() - 3600
    for f in left:
        os.utime(f, (aged, aged))
    fresh = tmp / "123-in-progress"
    fresh.write_bytes(b"x" * 1000)  # a write still going on: never touched
    r = project.run("--json", "prune", "app", "--keep-last", "1")
    assert r.code == 0, r.err
    assert r.json["data_removal"] == "done", r.json
    assert r.json["temp_files_removed"] == len(left)
    assert r.json["temp_bytes_freed"] >= 5000
    assert list(tmp.iterdir()) == [fresh]
    assert r.json["dead_leases_removed"] == len(dead) and not list((vault / "locks").iterdir())
    assert project.run("verify").code == 0
    final = project.run("--json", "snapshots", "app").json["snapshots"][-1]
    out = project.dir / "final.db"
    assert project.run("restore", "app", "--snapshot", final["id"], "--to", str(out)).code == 0
    assert dump(str(out)) == dump(db)
