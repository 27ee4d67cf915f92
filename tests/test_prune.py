"""Retention: what prune keeps, what it removes, and that it is safe next to a running snapshot."""

from datetime import datetime, timedelta, timezone

from conftest import make_db

from mulligan.ops.prune import choose
from mulligan.vault import Manifest
from mulligan.vault.locks import Lease


def m(i, hours_ago, kind="snapshot"):
    t = datetime(2026, 11, 21, 12, tzinfo=timezone.utc) - timedelta(hours=hours_ago)
    return Manifest(id=f"s{i}", target_id="t", target_name="t", time=t.strftime("%Y-%m-%dT%H:%M:%S.000Z"), kind=kind)


NOW = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)


def test_keep_last_keeps_the_newest_points():
    ms = [m(i, i) for i in range(5)]
    assert set(choose(ms, keep_last=2, now=NOW)) == {"s0", "s1"}


def test_keep_within_keeps_every_point_of_the_window():
    ms = [m(i, i * 0.5) for i in range(10)]
    assert set(choose(ms, keep_within=timedelta(hours=2), now=NOW)) == {"s0", "s1", "s2", "s3", "s4"}


def test_keep_daily_keeps_the_newest_point_of_each_day():
    ms = [m(i, i * 6) for i in range(12)]  # 3 days
    kept = choose(ms, keep_daily=2, now=NOW)
    assert set(kept) == {"s0", "s3"}  # s3 is 18:00 the day before


def test_undo_points_and_incident_points_are_never_pruned():
    ms = [m(0, 0), m(1, 50, kind="undo"), m(2, 100)]
    kept = choose(ms, keep_last=1, pins={"s2": "open incident"}, now=NOW)
    assert kept == {"s0": "last", "s1": "undo point", "s2": "open incident"}


def test_prune_without_rules_is_a_usage_error(project):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    assert project.run("prune", "app").code == 2


def three_snapshots_of_rewritten_rows(project) -> str:
    """Target 'app' and three snapshots, every post rewritten before each: the older two hold
    data the newest does not need. Returns the database's path."""
    import apsw

    db = make_db(project.dir / "app.db", rows=500)
    project.protect(db)
    for _ in range(3):
        c = apsw.Connection(db)
        with c:
            c.execute("UPDATE posts SET body = hex(randomblob(40))")
        c.close()
        assert project.call("snapshot", "app").code == 0
    return db


def test_prune_removes_old_points_and_their_data_and_dry_run_changes_nothing(project):
    three_snapshots_of_rewritten_rows(project)
    dry = project.run("--json", "prune", "app", "--keep-last", "1", "--dry-run").json
    assert len(dry["removed"]) == 2
    assert len(project.run("--json", "snapshots", "app").json["snapshots"]) == 3
    res = project.run("--json", "prune", "app", "--keep-last", "1").json
    assert len(res["removed"]) == 2 and res["data_removal"] == "done"
    assert project.run("verify", "--restore-test").code == 0


def test_a_damaged_index_object_stops_prune_before_any_pack_goes_and_verify_says_why(project):
    """Readers and writers pass over a damaged index object; prune must not: the packs it names
    would look unindexed, hence garbage. verify says those packs may be named there."""
    import apsw

    db = make_db(project.dir / "app.db", rows=500)
    project.protect(db)
    assert project.run("snapshot", "app").code == 0
    st = project.ws.vault.storage
    (first,) = [k for k, _ in st.list("index/")]
    c = apsw.Connection(db)
    with c:
        c.execute("UPDATE posts SET body = hex(randomblob(40))")
    c.close()
    assert project.run("snapshot", "app").code == 0
    st.put(first, b"XXXX" + st.get(first)[4:], overwrite=True)
    packs = sorted(k for k, _ in st.list("packs/"))
    r = project.run("prune", "app", "--keep-last", "1")
    assert r.code == 4 and "is not a Mulligan index object" in r.err, r.err
    assert sorted(k for k, _ in st.list("packs/")) == packs
    v = project.run("verify")
    assert v.code == 4
    assert "damaged and may name it" in v.err + v.out and "prune removes it" not in v.err + v.out
    r = project.run("restore", "app", "--latest", "--to", str(project.dir / "r.db"))  # pages it shares with the first
    assert r.code == 4 and f"the vault's {first} is not a Mulligan index object: it may name it" in r.err, r.err
    assert not (project.dir / "r.db").exists()


def test_prune_defers_data_removal_while_a_snapshot_is_running(project):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.run("snapshot", "app")
    project.run("snapshot", "app")
    lease = Lease(project.ws.vault.storage, "writer", "a snapshot in another process").acquire()
    try:
        res = project.run("--json", "prune", "app", "--keep-last", "1").json
    finally:
        lease.release()
    assert res["data_removal"] == "deferred"
    assert project.run("verify").code == 0


def test_a_released_lease_is_not_brought_back_by_a_heartbeat_in_flight(monkeypatch):
    """release() while the heartbeat thread is in the middle of re-writing the lease: the lease
    must be gone afterwards (a resurrected writer lease looks live for two minutes and makes
    every prune meanwhile defer its data removal), and the heartbeat thread must end."""
    import os
    import threading

    from mulligan.storage.memory import MemoryStorage
    from mulligan.vault import locks

    monkeypatch.setattr(locks, "HEARTBEAT", 0.01)
    entered, go = threading.Event(), threading.Event()
    main = threading.current_thread()

    class Slow(MemoryStorage):
        def put(self, key, data, *, overwrite=False):
            if threading.current_thread() is not main and not go.is_set():
                entered.set()
                go.wait(5)
            super().put(key, data, overwrite=overwrite)

    st = Slow(os.urandom(6).hex())
    lease = Lease(st, "writer", "test").acquire()
    assert entered.wait(5)
    releaser = threading.Thread(target=lease.release)
    releaser.start()
    releaser.join(0.2)
    go.set()
    releaser.join(5)
    lease._thread.join(5)
    assert not lease._thread.is_alive()
    assert st.stat(lease.key) is None
    assert locks.live_leases(st, "writer") == []


def test_watch_waits_for_a_running_prune_before_it_loads_the_index(project):
    """watch is a writer like snapshot: when a prune is removing data, it must wait for it before
    loading the chunk index, or it could deduplicate against a pack being deleted."""
    import io
    import threading
    import time

    from mulligan.ops.alerts import Alerter, Log
    from mulligan.ops.capture import CaptureOptions
    from mulligan.ops.capture_watch import Watcher

    db = make_db(project.dir / "app.db")
    project.protect(db)
    ws = project.ws
    prune_lease = Lease(ws.vault.storage, "prune", "prune app (another process)").acquire()
    log = Log(io.StringIO())
    w = Watcher(ws, [ws.target("app")], CaptureOptions(), Alerter({}, log), log)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        time.sleep(1.0)
        assert all(s.capture is None for s in w.slots), "capture started while a prune was removing data"
        prune_lease.release()
        deadline = time.time() + 10
        while time.time() < deadline and not any(s.capture is not None for s in w.slots):
            time.sleep(0.05)
        assert any(s.capture is not None for s in w.slots)
    finally:
        prune_lease.release()
        w.stop()
        th.join(10)
    assert not th.is_alive()


def test_a_writer_lease_used_as_a_context_manager_runs_one_heartbeat():
    """save_pages does ``with writer_lease(...)``: writer_lease has acquired the lease already,
    and entering it must not acquire it again (a second heartbeat thread, never joined)."""
    import os
    import threading

    from mulligan.storage.memory import MemoryStorage
    from mulligan.vault.locks import writer_lease

    st = MemoryStorage(os.urandom(6).hex())
    before = threading.active_count()
    with writer_lease(st, "test") as lease:
        assert threading.active_count() == before + 1
        assert len(list(st.list("locks/"))) == 1
    assert not lease._thread.is_alive()
    assert threading.active_count() == before


def test_only_the_leases_of_dead_processes_are_removed():
    import json as _json
    import time as _time

    from mulligan.storage.memory import MemoryStorage
    from mulligan.vault.locks import Lease, live_leases, remove_dead_leases

    st = MemoryStorage()
    live = Lease(st, "writer", "snapshot of app").acquire()
    try:
        st.put("locks/writer-dead", _json.dumps({"kind": "writer", "heartbeat": _time.time() - 900}).encode())
        st.put("locks/writer-stale", _json.dumps({"kind": "writer", "heartbeat": _time.time() - 300}).encode())
        st.put("locks/writer-garbled", b"{not json")
        assert remove_dead_leases(st) == 1
        keys = {k for k, _ in st.list("locks/")}
        assert keys == {live.key, "locks/writer-stale", "locks/writer-garbled"}
        assert [w["key"] for w in live_leases(st, "writer")] == [live.key]
    finally:
        live.release()


def test_prune_holds_no_index_whole_and_rewrites_an_index_object_naming_live_and_dead_packs(project, monkeypatch,
                                                                                            whole_index_loads):
    """Prune looks the trees' nodes up an index object at a time (memory: the referenced ids, not
    the whole index as well) and holds only which packs each index object names: an object
    naming packs that stay and packs that go is read again and rewritten with the first alone."""
    from conftest import dump

    from mulligan.vault import vault as vault_mod

    monkeypatch.setattr(vault_mod, "INDEX_OBJECTS_MAX", 1)  # every snapshot's index merged into one
    db = three_snapshots_of_rewritten_rows(project)
    index = project.dir / ".mulligan" / "vault" / "index"
    assert len(list(index.iterdir())) == 1
    packs_before = len([p for p in (project.dir / ".mulligan" / "vault" / "packs").rglob("*") if p.is_file()])
    whole_index_loads.clear()
    r = project.call("--json", "prune", "app", "--keep-last", "1")
    assert r.code == 0, r.err
    assert r.json["data_removal"] == "done" and r.json["packs_removed"] > 0
    assert whole_index_loads == []
    assert len(list(index.iterdir())) == 1  # rewritten, naming the packs that stay
    packs_after = len([p for p in (project.dir / ".mulligan" / "vault" / "packs").rglob("*") if p.is_file()])
    assert packs_after == packs_before - r.json["packs_removed"] > 0
    assert project.call("verify").code == 0
    assert project.call("restore", "app", "--latest", "--to", "copy.db").code == 0
    assert dump(str(project.dir / "copy.db")) == dump(db)
