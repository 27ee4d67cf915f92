"""In-place restore and undo while a real `mulligan watch` holds the database and writes its stamp."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import apsw
import pytest
from conftest import MULLIGAN, dump, make_db

from mulligan.ops import guards

pytestmark = pytest.mark.slow


def write_rows(path: str, n: int) -> None:
    """The app's writes: like any app beside a watcher, it waits for the watcher's short write locks."""
    conn = apsw.Connection(path)
    conn.set_busy_timeout(5000)
    with conn:
        for i in range(n):
            conn.execute("INSERT INTO users(username, email) VALUES (?, ?)", (f"late{i}-{os.urandom(3).hex()}", "l@example.com"))
            conn.execute("INSERT INTO posts(user_id, body, created_at) VALUES (last_insert_rowid(), 'late', datetime('now'))")
    conn.close()


@pytest.fixture
def watched(project):
    db = make_db(project.dir / "app.db", rows=10)
    project.protect(db, "app", "production")
    assert project.call("snapshot", "app").code == 0
    project.at_snapshot = dump(db)
    with open(project.config_path, "a") as fh:  # wait out a short live-use window instead of faking file times:
        fh.write("\n[guards]\nlive_window_seconds = 1\n")  # watch knows when it saw each commit
    env = {k: v for k, v in os.environ.items() if k != "MULLIGAN_CONFIG"}
    p = subprocess.Popen([*MULLIGAN, "watch", "app", "--poll", "0.05s"], cwd=project.dir, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        holders, _ = guards.open_holders(db, project.ws.vault)
        if any(h.pid == p.pid for h in holders):
            break
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.1)
    else:
        pytest.fail("watch did not open the database")
    time.sleep(1.0)  # its first base and generation bump
    project.db, project.watch = db, p
    yield project
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()


def test_a_running_watch_is_not_live_use_and_undo_right_after_works(watched):
    write_rows(watched.db, 3)  # the app's commits, captured by the watcher
    r = watched.run("restore", "app", "--latest", "--in-place", "--confirm", "app")
    assert r.code == 3 and "someone other than Mulligan committed" in r.err
    time.sleep(1.5)
    # the watcher captured those commits with the time it saw them: that, not file times, dates them
    seen = guards.recent_foreign_commit(watched.db, watched.ws.vault, watched.ws.target("app").id, window=30)
    assert seen is not None and seen["how"].startswith("watch saw the commit") and 1.0 < seen["age_seconds"] < 10
    before = dump(watched.db)
    r = watched.run("--json", "restore", "app", "--snapshot",
                    watched.ws.vault.manifests(watched.ws.target("app").id)[0].id, "--in-place", "--confirm", "app")
    assert r.code == 0, r.out + r.err
    holders = r.json["plan"]["live_use"]["holders"]
    assert [h["pid"] for h in holders] == [watched.watch.pid] and holders[0]["mulligan"]
    assert r.json["plan"]["commits_since"] == 1  # the app's one transaction, as the watcher captured it
    assert dump(watched.db) == watched.at_snapshot
    time.sleep(1.0)  # the watcher sees the restore and writes its own stamp
    r = watched.run("undo", "app", "--confirm", "app")
    assert r.code == 0, r.err
    assert dump(watched.db) == before
    assert watched.watch.poll() is None


def test_any_captured_second_can_be_put_back_in_place(watched):
    from datetime import datetime, timezone

    write_rows(watched.db, 2)
    time.sleep(1.0)  # captured
    between = datetime.now(timezone.utc).isoformat()
    at_between = dump(watched.db)
    time.sleep(0.5)
    write_rows(watched.db, 4)
    time.sleep(1.5)
    r = watched.run("--json", "restore", "app", "--at", between, "--in-place", "--confirm", "app")
    assert r.code == 0, r.out + r.err
    assert r.json["restored"]["id"].count(".") == 2  # a captured commit, not a snapshot
    assert r.json["plan"]["loss"]["totals"]["lost"] == 8  # the 4 users and 4 posts written after that second
    assert dump(watched.db) == at_between
