"""Rollback detection: each way production goes back in time alerts within 2 s, names the
snapshot it went back to and the last good commit, and raises the id counters."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import apsw
import pytest

from test_watch_kit import App, Hook, Watch, configure, ids_in, make_app_db, seq_of

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def scene(project):
    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    hook = Hook().start()
    configure(project, hook)
    yield project, db, hook
    hook.stop()


def old_copy(env, db, app: App) -> tuple[str, str, int]:
    """With the app paused: a Mulligan snapshot and a byte copy of the same state."""
    app.pause()
    time.sleep(0.3)
    r = env.run("snapshot", "app", "--json")
    assert r.code == 0, r.err
    old = str(env.dir / "old.db")
    conn = apsw.Connection(old)
    with conn.backup("main", apsw.Connection(db), "main") as b:
        b.step(-1)
    conn.close()
    high = max(ids_in(old))
    app.resume()
    return r.json["id"], old, high


def check_incident(env, hook_body, snap_id: str, lost_after: int, t_event: float):
    inc = hook_body["incident"]
    assert inc["rolled_back_to"]["snapshot_id"] == snap_id
    lg = inc["last_good"]
    assert lg["point"] and lg["time"]
    # the last good point holds what the app wrote before the rollback
    out = env.dir / f"lkg-{time.time_ns()}.db"
    r = env.run("restore", "app", "--snapshot", lg["point"], "--to", str(out))
    assert r.code == 0, r.err
    got = ids_in(str(out))
    assert got == list(range(1, len(got) + 1)) and max(got) >= lost_after
    listed = env.run("incidents", "--json").json["incidents"]
    row = next(i for i in listed if i["id"] == inc["id"])
    for k in ("id", "target", "kind", "opened_at", "last_good_time", "rolled_back_to"):
        assert row[k], k
    assert row["kind"] == "rollback" and row["rolled_back_to"]["snapshot_id"] == snap_id
    return row


def test_sqlite_restore_of_an_old_copy_while_the_app_runs(scene):
    env, db, hook = scene
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    snap, old, _ = old_copy(env, db, app)
    time.sleep(1.0)
    lost_max = max(i for i, _ in app.log())
    t0 = time.time()
    subprocess.run(["sqlite3", db, f".restore {old}"], check=True, timeout=20)
    got = hook.wait("rollback", 6)
    assert got is not None, w.text()
    assert got[0] - t0 < 2.0, f"alert after {got[0] - t0:.2f} s"
    time.sleep(0.5)
    assert w.term() == 0
    app.stop()
    row = check_incident(env, got[1], snap, lost_max - 2, t0)
    assert "posts" in row["counters"]["raised"] and seq_of(db, "posts") >= lost_max
    assert "notes" in row["counters"]["no_counter"]
    assert any("counters went down" in s or "match" in s or "keys fell" in s for s in row["signals"])


def wait_checkpointed(db: str, timeout: float = 10.0) -> None:
    """Wait until the watcher has checkpointed the idle WAL (what the stopped-app scenarios
    start from): every frame in the -wal backfilled into the main file."""
    from mulligan.engines.sqlite.wal import read_index_header

    fd = os.open(db + "-shm", os.O_RDONLY)
    try:
        end = time.time() + timeout
        while time.time() < end:
            h = read_index_header(fd)
            if h is not None and h.n_backfill >= h.mx_frame:
                return
            time.sleep(0.05)
    finally:
        os.close(fd)
    raise AssertionError(f"the WAL of {db} was not checkpointed within {timeout:.0f} s")


def stopped_after_an_old_copy(env, db) -> tuple[Watch, str, str, int]:
    """The app writing under watch; an old copy (old_copy); more writes; the app stopped and its
    idle WAL checkpointed by the watcher (later when the machine is busy): (the watch, the
    snapshot id and the byte copy of the old state, the last id the app wrote)."""
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    snap, old, _ = old_copy(env, db, app)
    time.sleep(0.8)
    app.stop()
    lost_max = max(i for i, _ in app.log())
    time.sleep(1.3)
    wait_checkpointed(db)
    return w, snap, old, lost_max


def test_copy_over_the_file_while_the_app_is_stopped(scene):
    env, db, hook = scene
    w, snap, old, lost_max = stopped_after_an_old_copy(env, db)
    assert os.path.exists(db + "-wal") and os.path.exists(db + "-shm")  # stale ones stay beside it
    t0 = time.time()
    shutil.copyfile(old, db)
    app = App(db, env.dir / "app2.log", rate=50)
    got = hook.wait("rollback", 6)
    assert got is not None, w.text()
    assert got[0] - t0 < 2.0, f"alert after {got[0] - t0:.2f} s"
    time.sleep(0.3)
    assert w.term() == 0
    app.stop()
    check_incident(env, got[1], snap, lost_max, t0)


def test_copy_over_the_file_and_removed_wal_and_shm_while_the_app_is_stopped(scene):
    env, db, hook = scene
    w, snap, old, lost_max = stopped_after_an_old_copy(env, db)
    t0 = time.time()
    os.unlink(db + "-wal")
    os.unlink(db + "-shm")
    shutil.copyfile(old, db)
    got = hook.wait("rollback", 6)
    assert got is not None, w.text()
    assert got[0] - t0 < 2.0, f"alert after {got[0] - t0:.2f} s"
    assert w.term() == 0
    check_incident(env, got[1], snap, lost_max, t0)
    assert seq_of(db, "posts") >= lost_max


def test_a_database_deleted_then_replaced_by_an_old_copy_is_one_incident(scene):
    """``rm app.db*`` while the application is stopped, then ``cp old.db app.db``: one loss, seen
    twice (the file goes, then capture starts on the file that came). It was two incidents with
    the same last good commit; the first said the application still wrote into a file nobody
    held, and named no state rolled back to (``recover --incident`` had no BASE)."""
    env, db, hook = scene
    w, snap, old, lost_max = stopped_after_an_old_copy(env, db)
    for f in (db, db + "-wal", db + "-shm"):
        os.unlink(f)
    deleted = hook.wait("rollback", 6)
    assert deleted is not None, w.text()
    assert "no process holds it open" in deleted[1]["text"] and "still writes" not in deleted[1]["text"]
    assert w.wait_for("no database at")
    time.sleep(0.5)  # past the first retry: the next came 2 s later, and the alert with it
    t0 = time.time()
    shutil.copyfile(old, db)
    end = time.time() + 6
    while len([b for _, b in hook.received if b.get("kind") == "rollback"]) < 2 and time.time() < end:
        time.sleep(0.02)
    again = [(t, b) for t, b in hook.received if b.get("kind") == "rollback"][1:]
    assert again, w.text()
    assert again[0][0] - t0 < 1.2, f"alert after {again[0][0] - t0:.2f} s"
    assert w.term() == 0
    assert "the same last good commit" in again[0][1]["text"]
    incs = env.run("incidents", "--json").json["incidents"]
    assert len(incs) == 1, incs
    assert again[0][1]["incident"]["id"] == deleted[1]["incident"]["id"] == incs[0]["id"]
    check_incident(env, again[0][1], snap, lost_max, t0)
    assert seq_of(db, "posts") >= lost_max
    plan = env.run("recover", "app", "--incident", incs[0]["id"], "--json")  # BASE and LOST from the record
    assert plan.code == 0, plan.err


def test_copy_while_watch_and_app_were_both_stopped_is_found_at_start(scene):
    env, db, hook = scene
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    snap, old, _ = old_copy(env, db, app)
    time.sleep(0.8)
    app.stop()
    lost_max = max(i for i, _ in app.log())
    assert w.term() == 0
    conn = apsw.Connection(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()
    shutil.copyfile(old, db)
    t0 = time.time()
    w = Watch(env, "app")
    got = hook.wait("rollback", 6)
    assert got is not None, w.text()
    assert got[0] - t0 < 3.0
    assert w.term() == 0
    check_incident(env, got[1], snap, lost_max, t0)


def test_moving_an_old_copy_over_the_path_while_the_app_holds_the_file(scene):
    env, db, hook = scene
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    snap, old, _ = old_copy(env, db, app)
    time.sleep(0.8)
    t0 = time.time()
    os.replace(old, db)
    got = hook.wait("rollback", 6)
    assert got is not None, w.text()
    assert got[0] - t0 < 2.0, f"alert after {got[0] - t0:.2f} s"
    assert got[1]["incident"]["rolled_back_to"]["snapshot_id"] == snap
    # the app still writes into the file it holds: those commits are captured
    time.sleep(0.5)
    app.pause()
    time.sleep(0.4)
    last = max(i for i, _ in app.log())
    out = env.dir / "latest.db"
    r = env.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    assert max(ids_in(str(out))) == last
    app.stop()
    assert w.wait_for("capturing the file now at", 5), w.text()
    time.sleep(0.3)
    assert w.term() == 0
    assert seq_of(db, "posts") >= last  # counters raised in the file the app will open next
    inc = env.run("incidents", "--json").json["incidents"][0]
    assert "posts" in inc["counters"]["raised"]


def test_an_in_place_restore_through_mulligan_is_recorded_not_alarmed(scene):
    env, db, hook = scene
    w = Watch(env, "app")
    r = env.run("snapshot", "app", "--json")
    conn = apsw.Connection(db)
    with conn:
        for _ in range(30):
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'later')")
    conn.close()
    time.sleep(0.5)
    r = env.run("restore", "app", "--snapshot", r.json["id"], "--in-place", "--confirm", "app", "--force-live")
    assert r.code == 0, r.err
    time.sleep(2.0)
    assert w.term() == 0
    assert hook.wait("rollback", 0.2) is None
    assert env.run("incidents", "--json").json["incidents"] == []
    entries = env.run("audit", "--json").json
    entries = entries.get("entries", entries) if isinstance(entries, dict) else entries
    assert any(e.get("outcome") == "in-place restore observed" for e in entries), entries


def test_a_mass_delete_by_the_app_is_not_a_rollback(scene):
    env, db, hook = scene
    w = Watch(env, "app")
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    with conn:
        conn.execute("DELETE FROM posts WHERE id > 5")
    conn.execute("VACUUM")
    conn.close()
    time.sleep(1.2)
    assert w.term() == 0
    assert hook.wait("rollback", 0.2) is None
    assert env.run("incidents", "--json").json["incidents"] == []


def _compacted_copy(db: str) -> str:
    """The application's own compaction: VACUUM INTO a new file (same rows, pages moved)."""
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    with conn:
        for _ in range(200):
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'row')")
    conn.execute("DELETE FROM posts WHERE id % 2 = 0")
    new = db + ".compact"
    conn.execute("VACUUM INTO ?", (new,))
    conn.close()
    copy = apsw.Connection(new)
    copy.execute("PRAGMA journal_mode=WAL").fetchall()  # as the original (VACUUM INTO leaves it in rollback mode)
    copy.close()
    return new


def test_a_compacted_copy_renamed_over_the_path_is_not_a_rollback(scene):
    """VACUUM INTO, then a rename over the database: the file at the path changed, but it holds
    the same rows. No incident, no alert; capture follows the new file."""
    env, db, hook = scene
    w = Watch(env, "app")
    new = _compacted_copy(db)
    time.sleep(0.5)
    assert ids_in(new) == ids_in(db)
    os.replace(new, db)
    assert w.wait_for("holding the same rows as the captured state", 5), w.text()
    assert w.wait_for("capturing the file now at", 5), w.text()
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    with conn:
        for _ in range(10):
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after the compaction')")
    conn.close()
    time.sleep(0.5)
    assert w.term() == 0
    assert "capture failed" not in w.text()
    assert hook.wait("rollback", 0.2) is None, w.text()
    assert env.run("incidents", "--json").json["incidents"] == []
    out = env.dir / "latest.db"
    r = env.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    assert ids_in(str(out)) == ids_in(db)


def test_a_commit_into_the_old_file_after_a_same_rows_copy_is_an_alert(scene):
    """The same compaction, but a connection still holding the old file commits after the
    rename: that commit is not in the file at the path, so it is an incident (and captured)."""
    env, db, hook = scene
    holder = apsw.Connection(db)
    holder.set_busy_timeout(5000)
    holder.execute("SELECT 1").fetchall()
    w = Watch(env, "app")
    new = _compacted_copy(db)
    time.sleep(0.5)
    os.replace(new, db)
    assert w.wait_for("holding the same rows as the captured state", 5), w.text()
    assert hook.wait("rollback", 0.3) is None
    t0 = time.time()
    holder.execute("INSERT INTO posts(user_id, body) VALUES (1, 'into the old file')")
    lost = holder.execute("SELECT max(id) FROM posts").fetchone()[0]
    got = hook.wait("rollback", 6)
    assert got is not None, w.text()
    assert got[0] - t0 < 2.0, f"alert after {got[0] - t0:.2f} s"
    holder.close()
    assert w.wait_for("capturing the file now at", 5), w.text()
    time.sleep(0.3)
    assert w.term() == 0
    inc = env.run("incidents", "--json").json["incidents"]
    assert len(inc) == 1
    out = env.dir / "lkg.db"
    r = env.run("restore", "app", "--snapshot", inc[0]["last_good"]["point"], "--to", str(out))
    assert r.code == 0, r.err
    assert lost in ids_in(str(out)) and lost not in ids_in(db)
    assert seq_of(db, "posts") >= lost, w.text()  # the counter raised in the file at the path


def test_the_snapshot_matcher_keeps_page_lists_only_of_the_points_it_still_compares():
    """watch makes a base every ten minutes and compares states with the newest restore points at
    each suspicious change: the cached page id lists (16 bytes a page) of points that fell out of
    that window must go, or a daemon's memory grows with its history."""
    from types import SimpleNamespace

    from mulligan.ops.detect import SnapshotMatcher

    class FakeVault:
        def __init__(self):
            self.ms = []

        def manifests(self, tid):
            return list(self.ms)

        def page_ids_many(self, ms):
            return {m.id: [b"x" * 16] * 10 for m in ms}

    v = FakeVault()
    matcher = SnapshotMatcher(v, limit=3)
    for i in range(10):
        v.ms.append(SimpleNamespace(id=f"m{i:02d}", time=f"2026-01-01T00:{i:02d}:00.000Z", kind="snapshot",
                                    page_count=10))
        matcher.best([b"x" * 16] * 10, ["t-1"])
    assert set(matcher._ids) <= {"m07", "m08", "m09"}


def test_a_file_moved_over_the_path_opens_an_incident_even_when_older_points_cannot_be_compared(project, monkeypatch):
    """Finding which snapshot the file at the path matches is a nicety: a damaged or unreadable
    restore point must not keep the rollback incident from being opened (it used to raise out
    of the poll, and every later poll tried again and failed the same way)."""

    from mulligan.errors import IntegrityError
    from mulligan.ops import incidents as inc_mod
    from test_watch_kit import capture_in_process

    cap, db, _ = capture_in_process(project, start=False)
    ws, target = cap.ws, cap.target
    old = str(project.dir / "old.db")
    shutil.copy(db, old)
    app = apsw.Connection(db)  # the application holds the file it has open
    cap.start()
    try:
        app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'not in the copy')")
        cap.step(time.monotonic())

        def broken(*a, **k):
            raise IntegrityError("manifest snapshots/x is damaged")

        monkeypatch.setattr(cap.det.matcher, "best", broken)
        os.replace(old, db)
        cap.step(time.monotonic())
        incs = inc_mod.list_incidents(ws.vault, target.id)
        assert len(incs) == 1 and incs[0]["kind"] == "rollback"
    finally:
        cap.stop()
        app.close()


def test_a_database_deleted_from_its_path_is_said_to_be_deleted_not_rolled_back(project):
    """``rm app.db`` while the application holds it open: an incident opens and the alert goes
    out (production's file is gone from where everyone looks for it), saying the file was
    deleted, not that the database went back in time; what the application still writes into
    the file it holds open is captured."""

    from mulligan.ops import incidents as inc_mod
    from test_watch_kit import capture_in_process

    cap, db, out = capture_in_process(project)
    ws, target = cap.ws, cap.target
    app = App(db, project.dir / "app.log", rate=50)  # another process, holding the file open
    try:
        time.sleep(0.5)
        cap.step(time.monotonic())
        os.unlink(db)
        cap.step(time.monotonic())
        incs = inc_mod.list_incidents(ws.vault, target.id)
        assert len(incs) == 1
        assert "was deleted from its path" in incs[0]["title"] and "back in time" not in incs[0]["title"]
        assert "was deleted" in out.getvalue() and "cannot read" not in out.getvalue(), out.getvalue()
        after = cap.stats.commits
        time.sleep(0.5)
        cap.step(time.monotonic())
        assert cap.stats.commits > after  # the application's writes into the deleted file, captured
    finally:
        app.stop()
        cap.stop()


def captured_past_an_old_copy(project):
    """An in-process capture (capture_in_process), a byte copy of the state it started from
    (the WAL checkpointed at creation), then 20 more rows it has not polled yet: (capture,
    database, log, the old copy, the last id written)."""
    from test_watch_kit import capture_in_process

    cap, db, out = capture_in_process(project)
    old = str(project.dir / "old.db")
    shutil.copy(db, old)
    conn = apsw.Connection(db)
    with conn:
        for _ in range(20):
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'lost')")
    lost_max = conn.execute("SELECT max(id) FROM posts").fetchone()[0]
    conn.close()
    return cap, db, out, old, lost_max


def one_rollback_to_the_start(cap, out, lost_max: int) -> dict:
    """The target's one incident: rolled back to the base the capture started from (the
    old copy's state), the counters raised past every id the lost rows used."""
    from mulligan.ops import capture_store as cs
    from mulligan.ops import incidents as inc_mod

    incs = inc_mod.list_incidents(cap.ws.vault, cap.target.id)
    assert len(incs) == 1, ([i["title"] for i in incs], out.getvalue())
    first_base = cs.capture_bases(cap.vault, cap.target.id)[0].id  # the watcher's start
    assert (incs[0]["rolled_back_to"] or {}).get("snapshot_id") == first_base, out.getvalue()
    assert incs[0]["counters"]["raised"].get("posts", 0) >= lost_max
    return incs[0]


def test_a_file_put_at_the_path_just_after_the_database_was_deleted_is_compared(project):
    """``rm app.db && cp old.db app.db``, the copy landing between the watcher seeing the file gone
    and moving on to the path: the file there was captured as a new base and never compared
    (no rollback found, no counters raised, the incident naming no state rolled back to)."""

    cap, db, out, old, lost_max = captured_past_an_old_copy(project)
    try:
        cap.step(time.monotonic())
        seen = cap._on_swap

        def and_then_the_copy():
            seen()
            shutil.copy(old, db)  # before capture moves to the path

        cap._on_swap = and_then_the_copy
        for f in (db, db + "-wal", db + "-shm"):
            os.unlink(f)
        cap.step(time.monotonic())
        inc = one_rollback_to_the_start(cap, out, lost_max)
        assert "was deleted from its path, and no process holds it open" in inc["title"]
        assert any(e["event"].startswith("rollback detected again") for e in inc["timeline"])
    finally:
        cap.stop()
    assert seq_of(db, "posts") >= lost_max


def test_a_file_moved_over_the_path_and_replaced_again_before_capture_moves_is_compared(project):
    """A copy of the current state moved over the path (no rollback: same rows), then an old
    copy moved over that before capture moved to the path: the old copy was captured as a new
    base, never compared (a silent rollback: no incident, no counters raised)."""

    cap, db, out, old, lost_max = captured_past_an_old_copy(project)
    same = str(project.dir / "same.db")
    try:
        cap.step(time.monotonic())
        copy = apsw.Connection(same)
        with copy.backup("main", apsw.Connection(db), "main") as b:  # the current state, as a copy
            b.step(-1)
        copy.close()
        seen = cap._on_swap

        def and_then_the_old_copy():
            seen()
            os.replace(old, db)  # before capture moves to the path

        cap._on_swap = and_then_the_old_copy
        os.replace(same, db)
        cap.step(time.monotonic())
        assert "holding the same rows" in out.getvalue(), out.getvalue()
        one_rollback_to_the_start(cap, out, lost_max)
    finally:
        cap.stop()
    assert seq_of(db, "posts") >= lost_max


@pytest.mark.parametrize("cache_ids", [0, 700, 10**9])
def test_the_snapshot_matcher_finds_the_same_point_whatever_page_lists_it_may_keep(monkeypatch, cache_ids):
    """The matcher compares a state with up to 40 recent points; it kept every one's page list,
    6 GB for a 10 GB database. It keeps at most CACHE_IDS ids and reads the rest each time."""
    from mulligan.ops.detect import SnapshotMatcher
    from mulligan.vault import Vault

    monkeypatch.setattr(SnapshotMatcher, "CACHE_IDS", cache_ids)
    vault = Vault.create(f"memory://{os.urandom(6).hex()}")
    ps = 512
    pages = [os.urandom(ps) for _ in range(300)]
    states = []
    for k in range(6):  # each point changes 40 more pages of the first
        state = [os.urandom(ps) if i < 40 * k else p for i, p in enumerate(pages)]
        states.append(vault.save_pages(target_id="t-1", target_name="t", page_size=ps, batches=[state],
                                       time=f"2026-01-01T00:00:0{k}.000Z"))
    ids = vault.page_ids(states[2])
    ids[0] = b"x" * 16  # the state at point 2, one page since rewritten
    matcher = SnapshotMatcher(vault)
    for _ in range(2):
        m, score = matcher.best(ids, ["t-1"])
        assert m.id == states[2].id and score == pytest.approx(299 / 300)
        assert sum(map(len, matcher._ids.values())) <= cache_ids
    assert len(matcher._ids) == min(6, cache_ids // 300)



@pytest.mark.parametrize("failing_before", [False, True])
def test_a_rollback_while_the_vault_refuses_writes_is_alerted_and_its_counters_raised(project, failing_before):
    """An old copy restored over the database while the vault cannot be written (its disk full,
    its store unreachable). The response first stored the last commits, and the refusal ended
    it there, poll after poll: no alert, no counters raised (new rows took the lost ids), no
    incident. The counters and the alert no longer wait for the vault; the incident is stored
    once the vault accepts writes."""
    from mulligan.errors import StorageError
    from mulligan.ops import incidents as inc_mod
    from mulligan.storage.faulty import FaultyStorage

    cap, db, out, old, lost_max = captured_past_an_old_copy(project)
    vault = cap.ws.vault
    try:
        cap.step(time.monotonic())  # the 20 rows, seen and stored
        cap.flush()
        refusing, restored, alerted_at_put, keys = [True], [False], [], []

        def refuse(key):
            if restored[0]:  # what the log held at each vault write after the old copy came
                alerted_at_put.append("ALERT rollback" in out.getvalue())
                keys.append(key)
            return refusing[0]

        vault.storage = FaultyStorage(vault.storage, fail_put=refuse)
        listed, list_all = [], vault.storage.list

        def listing(prefix=""):
            if restored[0]:
                listed.append(prefix)
            return list_all(prefix)

        vault.storage.list = listing
        if failing_before:  # a flush refused already: the alert says so
            conn = apsw.Connection(db)
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'seen, not stored')")
            conn.close()
            with pytest.raises(StorageError):
                cap.step(time.monotonic() + 10)
        conn = apsw.Connection(db)
        with conn.backup("main", apsw.Connection(old), "main") as b:  # what sqlite3's .restore does
            b.step(-1)
        conn.close()
        restored[0] = True
        for _ in range(3):
            try:
                cap.step(time.monotonic())
            except StorageError:
                pass  # the flush's own refusal, reported as capture failing
        assert "ALERT rollback" in out.getvalue(), out.getvalue()
        assert alerted_at_put and all(alerted_at_put)  # no wait on the vault (a store slow to answer) first
        assert keys[0].startswith("packs/"), keys  # then the commits only the watcher's memory holds
        if failing_before:  # a vault known to fail is not asked for the open incidents before the alert
            assert not [p for p in listed if p.startswith("incidents/")], listed
        assert "could not be stored in the vault" in out.getvalue()
        assert ("The vault refuses writes" in out.getvalue()) == failing_before
        assert seq_of(db, "posts") >= lost_max  # raised at once: the lost ids are not taken again
        assert inc_mod.list_incidents(vault, cap.target.id) == []
        assert out.getvalue().count("ALERT rollback") == 1
        refusing[0] = False
        cap.flush()
        incs = inc_mod.list_incidents(vault, cap.target.id)
        assert len(incs) == 1 and incs[0]["kind"] == "rollback"
        assert incs[0]["counters"]["raised"].get("posts", 0) >= lost_max
        assert incs[0]["last_good"]["point"]
        events = [e["event"] for e in incs[0]["timeline"]]
        assert "vault refused writes" in events and "incident stored" in events
    finally:
        cap.stop()


def test_a_rollback_while_the_vault_disk_is_read_only_alerts_within_2s_and_stores_the_incident_later(tmp_path):
    """The whole scene through the CLI: the app writing, the vault's disk made read-only (as a
    full one refuses), an old copy restored over the database with sqlite3's .restore. The
    webhook hears of it within 2 s, the counters are raised, the metrics count the incident;
    once the disk takes writes again the incident is stored and listed."""
    import urllib.request

    from test_bad_input import _vault_on_tmpfs
    from test_watch_kit import free_port

    small, proj, env = _vault_on_tmpfs(tmp_path, "64m")
    hook = Hook().start()
    app = None
    w = None
    try:
        db = make_app_db(proj / "app.db")
        assert env.run("protect", db, "--name", "app", "--env", "production").code == 0
        configure(env, hook, capture={"flush_interval": "0.5s"})
        port = free_port()
        w = Watch(env, "app", "--metrics-port", str(port))
        app = App(db, proj / "app.log", rate=50)
        time.sleep(1.0)
        app.pause()
        time.sleep(0.3)
        old = str(proj / "old.db")
        conn = apsw.Connection(old)
        with conn.backup("main", apsw.Connection(db), "main") as b:
            b.step(-1)
        conn.close()
        app.resume()
        time.sleep(1.5)  # rows the old copy lacks, captured and stored
        app.pause()
        time.sleep(0.3)
        lost_max = max(ids_in(db))
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
        conn = apsw.Connection(db)
        with conn.backup("main", apsw.Connection(old), "main") as b:
            b.step(-1)
        conn.close()
        t_event = time.time()
        app.resume()
        got = hook.wait("rollback", timeout=6.0)
        assert got is not None, w.text()
        assert got[0] - t_event < 2.0, got[0] - t_event
        time.sleep(0.5)
        assert seq_of(db, "posts") >= lost_max
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'mulligan_incidents_open{target="app"} 1' in body, body
        assert "could not be stored in the vault" in w.text()
        subprocess.run(["mount", "-o", "remount,rw", str(small)], check=True)
        assert w.wait_for("stored in the vault", timeout=20), w.text()
        app.stop()
        assert w.term() == 0, w.text()
        listed = env.run("incidents", "--json").json["incidents"]
        assert len(listed) == 1 and listed[0]["kind"] == "rollback"
        assert max(ids_in(db)) > lost_max  # rows written since the counters were raised: past every lost id
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small)], capture_output=True)
        if app is not None:
            app.stop()
        if w is not None and w.proc.poll() is None:
            w.kill()
        hook.stop()
        subprocess.run(["umount", str(small)], capture_output=True)


def test_a_rollback_during_a_vault_outage_longer_than_the_lease_is_still_alerted(project, monkeypatch):
    """The vault refuses writes long enough for the watcher's lease to go overdue (90 s;
    shortened here). Capture paused then, and the watch for a rollback with it: an old copy
    restored during a long outage of the vault (its disk filled by that very copy) went
    unnoticed. Both go on now, pages stored whole until the lease is renewed; then the
    incident is stored and the latest state restores exactly."""
    from mulligan.ops import incidents as inc_mod
    from mulligan.ops.capture_store import latest_point
    from mulligan.ops.restore import restore_new
    from mulligan.storage.faulty import FaultyStorage
    from conftest import dump
    from mulligan.vault import locks
    from test_watch_kit import watcher_in_thread

    monkeypatch.setattr(locks, "HEARTBEAT", 0.05)
    monkeypatch.setattr(locks, "LAPSE_AFTER", 0.4)
    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    old = str(project.dir / "old.db")
    shutil.copy(db, old)  # checkpointed at creation: the file is the whole state
    ws = project.ws
    refusing = [False]
    ws.vault.storage = FaultyStorage(ws.vault.storage, fail_put=lambda key: refusing[0])
    w, th = watcher_in_thread(ws, ws.target("app"), flush_interval=0.1)
    out = w.log.stream
    try:
        conn = apsw.Connection(db)
        conn.set_busy_timeout(5000)
        with conn:
            for _ in range(20):
                conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'lost')")
        lost_max = conn.execute("SELECT max(id) FROM posts").fetchone()[0]
        conn.close()
        time.sleep(0.6)  # captured and stored
        refusing[0] = True
        deadline = time.monotonic() + 10
        while not w._overdue and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w._overdue and "lease in the vault is overdue" in out.getvalue(), out.getvalue()
        time.sleep(0.3)
        conn = apsw.Connection(db)
        conn.set_busy_timeout(5000)
        with conn.backup("main", apsw.Connection(old), "main") as b:
            b.step(-1)
        conn.close()
        t0 = time.monotonic()
        while "ALERT rollback" not in out.getvalue() and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert "ALERT rollback" in out.getvalue(), out.getvalue()
        assert time.monotonic() - t0 < 2.0
        assert seq_of(db, "posts") >= lost_max
        conn = apsw.Connection(db)
        conn.set_busy_timeout(5000)
        with conn:
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after')")
        conn.close()
        refusing[0] = False  # the lease lands again: the database is read again, the incident stored
        deadline = time.monotonic() + 10
        while "incident stored" not in out.getvalue() and "stored in the vault" not in out.getvalue() \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while w._overdue and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not w._overdue, out.getvalue()
        time.sleep(0.5)
    finally:
        w.stop()
        th.join(30)
    incs = inc_mod.list_incidents(ws.vault, ws.target("app").id)
    assert len(incs) == 1 and incs[0]["kind"] == "rollback", out.getvalue()
    restore_new(project.ws, latest_point(project.ws.vault, project.ws.target("app")), str(project.dir / "r.db"))
    assert dump(str(project.dir / "r.db")) == dump(db)


def test_a_watch_started_while_the_vault_cannot_be_written_alerts_waits_and_then_finds_the_rollback(tmp_path):
    """The vault's disk is read-only (as a full one refuses) when watch starts: say so, alert, and
    wait for it, instead of exiting (a service manager restarting it in a loop gives up after a
    few tries, and the watcher is then down once the disk works again). An old copy restored
    while watch was down is found as soon as the vault takes writes."""
    from test_bad_input import _vault_on_tmpfs

    small, proj, env = _vault_on_tmpfs(tmp_path, "64m")
    hook = Hook().start()
    w = None
    try:
        db = make_app_db(proj / "app.db")
        old = str(proj / "old.db")
        shutil.copy(db, old)  # checkpointed at creation: the file is the whole state
        assert env.run("protect", db, "--name", "app", "--env", "production").code == 0
        configure(env, hook)
        w = Watch(env, "app")
        conn = apsw.Connection(db)
        conn.set_busy_timeout(5000)
        with conn:
            for _ in range(20):
                conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'lost')")
        conn.close()
        lost_max = max(ids_in(db))
        time.sleep(1.0)  # the rows captured and stored
        assert w.term() == 0, w.text()
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
        conn = apsw.Connection(db)
        with conn.backup("main", apsw.Connection(old), "main") as b:
            b.step(-1)
        conn.close()
        w = Watch(env, "app", ready="watch cannot start")
        got = hook.wait("stale-capture", timeout=6.0)
        assert got is not None and "cannot start" in got[1]["text"], (hook.received, w.text())
        time.sleep(1.0)
        assert w.proc.poll() is None, w.text()
        subprocess.run(["mount", "-o", "remount,rw", str(small)], check=True)
        assert w.wait_for("the vault takes writes again", 15), w.text()
        assert w.wait_for("ALERT rollback", 10), w.text()
        assert seq_of(db, "posts") >= lost_max
        assert w.term() == 0, w.text()
        assert w.text().count("ALERT stale-capture") == 1, w.text()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small)], capture_output=True)
        if w is not None and w.proc.poll() is None:
            w.kill()
        hook.stop()
        subprocess.run(["umount", str(small)], capture_output=True)
