"""The watch, status and incidents commands' surface (in-process, fast)."""

from __future__ import annotations

from mulligan.ops import incidents as inc_mod
from test_watch_kit import make_app_db


def test_watch_refuses_an_unknown_target(project):
    r = project.call("watch", "nope")
    assert r.code == 1 and "no target named 'nope'" in r.err


def test_status_of_a_target_never_watched_says_so(project):
    project.protect(make_app_db(project.dir / "app.db"))
    r = project.call("status", "--json")
    assert r.code == 0
    t = r.json["targets"][0]
    assert t["stale"] and not t["watch"]["running"] and t["coverage"]["from"] is None
    assert "no watch has ever captured this target" in t["problems"]
    text = project.call("status")
    assert text.code == 0 and "not running" in text.out


def test_incidents_lists_each_incident_with_its_last_good_point_and_rollback_target(project):
    res = project.protect(make_app_db(project.dir / "app.db"))
    assert project.call("incidents", "--json").json == {"incidents": []}
    inc_mod.open_incident(project.ws.vault, res.target, kind="rollback", title="went back",
                          last_good={"time": "2026-11-21T10:00:00.000Z", "point": "0123456789abcdef.3.4"},
                          rolled_back_to={"snapshot_id": "fedcba9876543210", "time": "2026-11-20T17:00:00.000Z",
                                          "age_seconds": 61200.0})
    rows = project.call("incidents", "app", "--json").json["incidents"]
    assert len(rows) == 1
    r = rows[0]
    assert (r["target"], r["kind"], r["status"]) == ("app", "rollback", "open")
    assert r["last_good_time"] == "2026-11-21T10:00:00.000Z" and r["rolled_back_to_snapshot"] == "fedcba9876543210"
    assert r["opened_at"] and r["id"].startswith("inc-")
    text = project.call("incidents", "--open")
    assert text.code == 0 and r["id"] in text.out and "fedcba9876543210" in text.out


def test_a_commit_point_id_is_recognised():
    from mulligan.ops.capture_store import commit_id, is_commit_id

    assert is_commit_id(commit_id("0123456789abcdef", 12, 3))
    assert not is_commit_id("0123456789abcdef") and not is_commit_id("app.db")


def test_a_generation_rise_written_by_the_watcher_is_not_taken_for_an_in_place_restore():
    from mulligan.engines.sqlite.capture import Observation
    from mulligan.ops.detect import compare

    lkg = Observation("t-1", 5, {"posts": 10}, {"posts": 10}, {"posts"})
    cur = Observation("t-1", 6, {"posts": 3}, {"posts": 3}, {"posts"})
    assert compare(lkg, cur).generation_up
    sig = compare(lkg, cur, own_generation=6)
    assert not sig.generation_up and sig.strong


def test_watch_closes_its_metrics_socket_when_it_stops(project):
    """Watcher.run used from Python (a test, a supervisor thread) must not leave the metrics port
    bound after it returns: shutdown() stops serving, server_close() frees the socket."""
    import io
    import socket
    import threading
    import time

    from mulligan.ops.alerts import Alerter, Log
    from mulligan.ops.capture import CaptureOptions
    from mulligan.ops.capture_watch import Watcher

    from conftest import make_db

    db = make_db(project.dir / "app.db")
    project.protect(db)
    ws = project.ws
    log = Log(io.StringIO())
    w = Watcher(ws, [ws.target("app")], CaptureOptions(), Alerter({}, log), log)
    port = w.serve_metrics(0)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    time.sleep(0.5)
    w.stop()
    th.join(10)
    assert not th.is_alive()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))  # fails with EADDRINUSE while the old listening socket is open
    finally:
        s.close()


def test_a_lease_counts_a_heartbeat_that_lands_after_a_long_gap(monkeypatch):
    import os
    import time

    from mulligan.errors import StorageError
    from mulligan.storage.memory import MemoryStorage
    from mulligan.vault import locks

    monkeypatch.setattr(locks, "HEARTBEAT", 0.02)
    monkeypatch.setattr(locks, "LAPSE_AFTER", 0.15)
    down = {"on": False}

    class Flaky(MemoryStorage):
        def put(self, key, data, *, overwrite=False):
            if down["on"]:
                raise StorageError("vault unreachable")
            super().put(key, data, overwrite=overwrite)

    lease = locks.Lease(Flaky(os.urandom(6).hex()), "writer", "watch t").acquire()
    try:
        time.sleep(0.1)
        assert lease.lapses == 0 and not lease.lapsed()
        down["on"] = True
        time.sleep(0.3)
        assert lease.lapsed()
        down["on"] = False
        time.sleep(0.15)
        assert lease.lapses == 1 and not lease.lapsed()
    finally:
        lease.release()


def test_after_its_lease_lapsed_watch_does_not_dedup_against_data_a_prune_removed(project):
    """The watcher's lease lapsed (vault unreachable, process paused) and a prune ran meanwhile:
    chunks the watcher's cached index names may be gone. A page that goes back to such content
    must be stored again, or the captured commit names a deleted chunk and cannot be restored."""
    import time
    from datetime import timedelta

    import apsw

    from mulligan.ops.prune import prune
    from mulligan.ops.restore import restore_new
    from mulligan.ops.capture_store import latest_point
    from test_watch_kit import make_app_db, watcher_in_thread

    db = make_app_db(project.dir / "app.db")
    project.protect(db)

    def note(text):
        c = apsw.Connection(db)
        c.set_busy_timeout(5000)
        with c:
            c.execute("INSERT OR REPLACE INTO notes(id, body) VALUES (1, ?)", (text,))
        c.close()

    note("B" * 300)
    project.call("snapshot", "app")
    note("A" * 300)
    project.call("snapshot", "app")  # its pack holds only the pages that changed: the one with A...
    note("B" * 300)  # ...which no later state holds
    ws = project.ws
    target = ws.target("app")
    w, th = watcher_in_thread(ws, target, flush_interval=0.1)
    try:
        time.sleep(0.3)
        # The lease goes overdue: capture pauses; others take the lease for dead; prune removes S0's data.
        w.lease.lapsed = lambda: True
        time.sleep(0.3)
        ws.vault.storage.delete(w.lease.key)
        pws = project.ws
        res = prune(pws, pws.target("app"), keep_within=timedelta(seconds=0))
        assert res.data_removal == "done" and res.packs_removed >= 1
        # The heartbeat lands again; then the page goes back to S0's content.
        del w.lease.lapsed
        w.lease.lapses += 1
        time.sleep(0.5)
        note("A" * 300)
        time.sleep(1.0)
    finally:
        w.stop()
        th.join(15)
    point = latest_point(ws.vault, target)
    restore_new(project.ws, point, str(project.dir / "restored.db"))
    c = apsw.Connection(str(project.dir / "restored.db"))
    assert c.execute("SELECT body FROM notes WHERE id = 1").fetchone()[0] == "A" * 300
    c.close()


def test_a_failure_repeated_at_every_flush_is_one_kind_of_failure():
    """An unreachable store fails each flush naming another object after another wait: the
    watcher logs it once, not twice a second; a different failure is logged again."""
    from mulligan.ops.capture_watch import _gist

    a = "cannot write packs/0f/0fde2f647a290f6000bc5fe1dc1a9bfc in the vault at s3://b/v: PUT in 1.038454698s, after 5 retries"
    b = "cannot write packs/44/44f72297755b4bf92334468209d8366e in the vault at s3://b/v: PUT in 803.07ms, after 5 retries"
    assert _gist(a) == _gist(b)
    c = "cannot write index/7772d67fa8813d8bc47b1d6260a41c58 in the vault at s3://b/v: PUT http://127.0.0.1:5/b/v/index/7772d67fa8813d8bc47b1d6260a41c58 in 1.1s"
    d = "cannot write packs/e0/e0ed62642cd567f815db438656f62d10 in the vault at s3://b/v: PUT http://127.0.0.1:5/b/v/packs/e0/e0ed62642cd567f815db438656f62d10 in 902.3ms"
    assert _gist(c) == _gist(d)
    assert _gist(a) != _gist("the disk holding the vault is full (No space left on device) while writing packs/0f/0fde2f647a290f60")


def test_a_metrics_port_in_use_is_one_line_naming_the_port_and_nothing_starts(project):
    import socket

    project.protect(make_app_db(project.dir / "app.db"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = project.run("watch", "app", "--metrics-port", str(port))
    assert r.code == 2, r.err
    line = r.err.strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in line and "in use" in line and "another --metrics-port" in line
    assert "Traceback" not in r.err
    assert project.run("--json", "status", "app").json["targets"][0]["watch"]["running"] is False


def test_while_the_vault_fails_no_heartbeat_is_tried(project):
    """A step that fails writes the watcher's heartbeat, so that status says it runs and why it
    captures nothing; but not when the vault is what fails: each try would hold the loop for an
    object store's timeouts (10 s), delaying the polls and the flush retries."""
    import threading
    import time

    import apsw

    from mulligan.ops.capture_store import status_key
    from mulligan.storage.faulty import FaultyStorage
    from test_watch_kit import watcher_in_thread

    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    ws = project.ws
    target = ws.target("app")
    w, th = watcher_in_thread(ws, target, flush_interval=0.1)
    tried, broken, lock = [], [True], threading.Lock()

    def fail(key):
        with lock:
            # Once the watcher knows the vault fails (one status write may come first, before the
            # first flush has failed: their order within the first tenth of a second is chance).
            if key == status_key(target.id) and w.slots[0].vault_failing:
                tried.append(key)
        return broken[0]

    try:
        w.options.status_interval = 0.1
        inner = ws.vault.storage
        ws.vault.storage = FaultyStorage(inner, fail_put=fail)
        app = apsw.Connection(db)
        for i in range(10):
            app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'during the outage')")
            time.sleep(0.1)
        assert w.slots[0].error is not None and w.slots[0].vault_failing
        assert tried == [], f"{len(tried)} heartbeats tried on a failing vault"
        broken[0] = False
        time.sleep(1.0)
        assert w.slots[0].error is None
    finally:
        w.stop()
        th.join(15)


def test_a_poll_interval_that_cannot_work_is_a_usage_error(project):
    """--poll 0 made the loop spin (a core at 100 %); a negative one was taken as well."""
    project.protect(make_app_db(project.dir / "app.db"))
    for args in (("--poll", "0"), ("--poll", "-1"), ("--poll", "2m"), ("--flush", "-1")):
        r = project.call("watch", "app", *args)
        assert r.code == 2 and "cannot be used" in r.err, (args, r.err)


def test_two_targets_naming_one_database_file_are_refused(project):
    """Two sections of mulligan.toml for one file (one through a link): one watch would capture
    it twice. Refused before anything starts."""
    import os

    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    os.symlink(db, project.dir / "link.db")
    cfg = project.dir / "mulligan.toml"
    cfg.write_text(cfg.read_text() + f'\n[targets.again]\npath = "{project.dir / "link.db"}"\nenv = "production"\n')
    r = project.call("watch")
    assert r.code != 0 and "name the same database file" in r.err, r.err
