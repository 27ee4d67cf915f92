"""Continuous capture with a real application process and a real watcher process."""

from __future__ import annotations

import random
import time
import urllib.request

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mulligan.timeparse import iso
from test_watch_kit import App, Watch, configure, free_port, ids_in, make_app_db

pytestmark = pytest.mark.timeout(90)

# One commit of 4,000 rows of 4,000 random bytes (16 MB): thousands of pieces at a small poll_max.
BULK_16MB = ("INSERT INTO bulk(v) SELECT randomblob(4000) FROM "
             "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) SELECT i FROM n)")


@pytest.fixture
def app_env(project):
    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    return project, db


def _restored_ids(env, *args) -> list[int]:
    out = env.dir / f"r-{time.time_ns()}.db"
    r = env.run("restore", "app", *args, "--to", str(out))
    assert r.code == 0, r.err
    return ids_in(str(out))


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_after_sigterm_every_commit_made_before_it_is_restored(app_env, sig):
    """SIGTERM (a service stopped), or SIGHUP (the terminal watch ran in closed, or a service
    manager's reload): everything seen is stored, exit 0. SIGHUP used to end the process at once,
    losing the commits since the last flush."""
    import signal

    env, db = app_env
    app = App(db, env.dir / "app.log", rate=200)
    w = Watch(env, "app")
    time.sleep(1.5)
    t_term = time.time()
    w.proc.send_signal(getattr(signal, sig))
    assert w.proc.wait(20) == 0
    w.err.close()
    app.stop()
    before = [i for i, t in app.log() if t < t_term]
    got = set(_restored_ids(env, "--latest"))
    assert before and not [i for i in before if i not in got]
    assert "stored" in w.text()


def test_after_sigkill_at_a_random_moment_at_most_the_last_second_is_lost(app_env):
    env, db = app_env
    app = App(db, env.dir / "app.log", rate=200)
    w = Watch(env, "app")
    time.sleep(random.uniform(1.0, 2.5))
    t_kill = time.time()
    w.kill()
    app.stop()
    log = app.log()
    got = set(_restored_ids(env, "--latest"))
    lost = [(i, t) for i, t in log if t < t_kill and i not in got]
    assert all(t > t_kill - 1.0 for _, t in lost), f"lost commits older than a second: {lost[:5]}"
    # what was restored is a prefix of the application's history: no commit skipped
    assert sorted(got) == list(range(1, max(got) + 1))


def test_restore_at_a_random_past_time_is_the_database_as_it_was_then(app_env):
    env, db = app_env
    app = App(db, env.dir / "app.log", rate=150)
    w = Watch(env, "app")
    capturing = time.time()  # the first base exists: history starts here
    time.sleep(2.5)
    assert w.term() == 0
    app.stop()
    log = app.log()
    times = dict(log)
    for _ in range(3):
        when = random.uniform(max(capturing, log[10][1]), log[-10][1])
        got = _restored_ids(env, "--at", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1e6):06d}Z")
        assert got == list(range(1, len(got) + 1))  # a consistent prefix (50 seed posts first)
        app_ids = [i for i in got if i in times]
        must = [i for i, t in log if t <= when - 0.3]
        assert set(must) <= set(got), "a commit made well before TIME is missing"
        last = max(app_ids) if app_ids else 0
        if last in times and last - 1 in times:
            assert times[last - 1] <= when, "a commit made after TIME is present"
    # @TIME in STATE arguments (diff, impact, recover) resolves to the same captured commit
    from mulligan.ops.states import resolve_state
    from mulligan.timeparse import iso

    ref = resolve_state("@" + iso(when), env.ws.vault, env.ws.target("app"))
    assert ref.manifest.kind == "commit" and ref.manifest.time <= iso(when)


def test_an_application_truncate_checkpoint_is_handled_not_fought(app_env):
    env, db = app_env
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    time.sleep(0.8)
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    t0 = time.monotonic()
    busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
    took = time.monotonic() - t0
    conn.close()
    time.sleep(0.8)
    assert w.term() == 0
    app.stop()
    assert took < 1.0 and busy == 0, f"the app's checkpoint waited {took:.2f} s (busy={busy})"
    r = env.run("snapshots", "app", "--json")
    assert r.json["coverage"]["gaps"] == []
    assert set(_restored_ids(env, "--latest")) >= {i for i, _ in app.log()[:-50]}


def test_frames_missed_while_watch_was_down_start_a_new_base_and_show_as_a_gap(app_env):
    env, db = app_env
    w = Watch(env, "app")
    time.sleep(0.3)
    assert w.term() == 0
    conn = apsw.Connection(db)
    with conn:
        conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'while nobody watched')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()
    w = Watch(env, "app")
    time.sleep(0.3)
    assert w.term() == 0
    cov = env.run("snapshots", "app", "--json").json["coverage"]
    assert len(cov["gaps"]) == 1 and "not running" in cov["gaps"][0]["reason"]
    assert env.run("incidents", "--json").json["incidents"] == []
    assert 51 in _restored_ids(env, "--latest")
    # A time inside the gap: the last state captured before it, and a warning saying so.
    g = cov["gaps"][0]
    from mulligan.timeparse import from_iso, iso

    inside = iso((from_iso(g["from"]).timestamp() + from_iso(g["to"]).timestamp()) / 2)
    r = env.run("restore", "app", "--at", inside, "--to", str(env.dir / "in-gap.db"), "--json")
    assert r.code == 0, r.err
    assert any("falls in a gap of capture" in w for w in r.json["warnings"]), r.json
    assert "falls in a gap of capture" in r.err
    r = env.run("restore", "app", "--latest", "--to", str(env.dir / "no-gap.db"), "--json")
    assert not any("gap" in w for w in r.json["warnings"]), r.json


def test_status_and_metrics_report_capture(app_env):
    env, db = app_env
    app = App(db, env.dir / "app.log", rate=100)
    port = free_port()
    w = Watch(env, "app", "--metrics-port", str(port))
    time.sleep(1.2)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    st = env.run("status", "app", "--json").json["targets"][0]
    assert w.term() == 0
    app.stop()
    for name in ("mulligan_capture_lag_seconds", "mulligan_bytes_stored_total", "mulligan_commits_captured_total",
                 "mulligan_incidents_open"):
        assert f'{name}{{target="app"}}' in body
    commits = int(next(ln for ln in body.splitlines() if ln.startswith("mulligan_commits_captured_total")).split()[-1])
    assert commits > 20
    assert st["watch"]["running"] and st["last_capture_age_seconds"] < 2 and st["open_incidents"] == []
    assert st["coverage"]["from"] and st["coverage"]["to"]
    st = env.run("status", "app", "--json").json["targets"][0]
    assert not st["watch"]["running"] and st["stale"]


def test_a_non_wal_database_is_refused_with_a_hint(project):
    path = project.dir / "j.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    project.protect(str(path), name="j")
    from mulligan.engines.sqlite.capture import NotWal, Tailer

    with pytest.raises(NotWal) as e:
        Tailer(str(path)).open()
    assert "WAL" in e.value.hint


def test_status_says_a_running_watch_captures_nothing_and_why(project):
    """A watch whose target cannot be captured (here: not in WAL mode) keeps running and trying.
    status said "watch is not running" then, which sends an operator to start another one;
    it now says the watch runs, captures nothing, since when, and why; once watch stops, that
    it does not run."""
    path = project.dir / "j.db"
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    project.protect(str(path), name="j")
    configure(project, capture={"status_interval": "0.2s"})
    w = Watch(project, "j", ready="not in WAL mode")
    time.sleep(0.5)
    r = project.run("--json", "status", "j")
    t = r.json["targets"][0]
    assert t["watch"]["running"] and t["watch"]["capturing"] is False and t["stale"], t
    assert any("capturing nothing since" in p and "not in WAL mode" in p for p in t["problems"]), t["problems"]
    assert "capturing nothing" in project.run("status", "j").out
    assert w.term() == 0
    t = project.run("--json", "status", "j").json["targets"][0]
    assert not t["watch"]["running"] and t["stale"]


def test_configuration_sets_intervals(project):
    from mulligan.ops.capture import CaptureOptions

    configure(project, capture={"flush_interval": "2s", "poll_interval": 0.05, "idle_checkpoint": "250ms",
                                "repack_after": 2, "repack_min_mib": 16, "repack_interval": "90s"})
    o = CaptureOptions.from_config(project.ws.config.section("capture"), local_vault=True)
    assert o.flush_interval == 2.0 and o.poll_interval == 0.05 and o.idle_checkpoint == 0.25
    assert (o.repack_after, o.repack_min_mib, o.repack_interval) == (2.0, 16.0, 90.0)
    assert CaptureOptions.from_config({}, local_vault=False).flush_interval == 5.0


def test_prune_keeps_the_capture_chain_and_verify_checks_it(app_env):
    env, db = app_env
    configure(env, capture={"flush_interval": 0.005, "poll_interval": 0.005})  # > 64 flushes: indexes get merged
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    time.sleep(2.0)
    assert w.term() == 0
    app.stop()
    log = app.log()
    segments = list((env.dir / ".mulligan" / "vault" / "capture").rglob("0*"))
    indexes = list((env.dir / ".mulligan" / "vault" / "index").iterdir())
    assert len(segments) > 64 and len(indexes) < len(segments)
    assert env.run("snapshot", "app").code == 0
    r = env.run("prune", "app", "--keep-within", "1h", "--json")
    assert r.code == 0 and r.json["removed"] == []
    r = env.run("prune", "app", "--keep-last", "1", "--json")
    assert r.code == 0, r.err
    assert any(k["reason"] for k in r.json["kept"] if k["kind"] == "snapshot")
    # Said as what it is: no incident is open (it read "open incident").
    assert {k["reason"] for k in r.json["kept"]} <= {"last", "capture base: the newest commits grow from it"}, r.json
    assert any(k["reason"].startswith("capture base") for k in r.json["kept"]), r.json
    when = log[len(log) // 2][1]
    got = _restored_ids(env, "--at", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1e6):06d}Z")
    assert set(i for i, t in log if t <= when - 0.3) <= set(got)
    v = env.run("verify", "app", "--json")
    assert v.code == 0 and v.json["ok"], v.out


@pytest.mark.parametrize("how", ["damaged", "deleted"])
def test_verify_names_the_capture_segment_whose_pages_a_damaged_pack_held(app_env, how, whole_index_loads):
    """A flush's pack damaged or deleted: verify names the segment that needs its pages (it
    asked only whether an index named them, and passed a damaged one; a deleted one is not
    taken for one written since verify listed the packs), and holds no index object whole."""
    from mulligan.ops import capture_store as cs
    from mulligan.vault.packs import pack_key

    env, db = app_env
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    time.sleep(1.5)
    assert w.term() == 0
    app.stop()
    vault = env.ws.vault
    (keys,) = cs.all_segment_bases(vault).values()
    seg_key = keys[-1]
    cid = bytes.fromhex(cs.load_segment(vault, seg_key)["chunks"][0])
    entry = vault.index().get(cid)
    path = env.dir / ".mulligan" / "vault" / pack_key(entry.pack)
    if how == "deleted":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[entry.offset + entry.stored_len // 2] ^= 0x55  # inside the block holding that page
        path.write_bytes(bytes(data))
    whole_index_loads.clear()
    v = env.call("--json", "verify", "app")
    assert v.code == 4, v.out
    assert any(p["object"] == seg_key and "capture segment needs" in p["problem"] for p in v.json["problems"]), v.json
    assert whole_index_loads == []


def test_one_watch_captures_every_target(project):
    a = make_app_db(project.dir / "a.db")
    b = make_app_db(project.dir / "b.db")
    project.protect(a, name="a")
    project.protect(b, name="b", env="staging")
    w = Watch(project)  # no NAME: every target
    assert w.wait_for("capturing " + b, 10) and w.wait_for("capturing " + a, 10)
    for path, n in ((a, 3), (b, 5)):
        conn = apsw.Connection(path)
        conn.set_busy_timeout(5000)
        with conn:
            for _ in range(n):
                conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'x')")
        conn.close()
    time.sleep(0.4)
    assert w.term() == 0
    for name, n in (("a", 3), ("b", 5)):
        out = project.dir / f"{name}-r.db"
        r = project.run("restore", name, "--latest", "--to", str(out))
        assert r.code == 0, r.err
        assert len(ids_in(str(out))) == 50 + n


def test_a_large_commit_of_one_target_does_not_hold_the_others(project, monkeypatch):
    """One watch, two targets: while the first reads a commit of many pieces (a migration),
    the second's commits are still seen, and both end up whole in the vault."""
    import io
    import threading

    from mulligan.ops.alerts import Alerter, Log
    from mulligan.ops.capture import CaptureOptions, TargetCapture
    from mulligan.ops.capture_watch import Watcher

    monkeypatch.setattr(TargetCapture, "STEP_BUDGET", 0.05)
    a, b = make_app_db(project.dir / "a.db"), make_app_db(project.dir / "b.db")
    project.protect(a, name="a")
    project.protect(b, name="b")
    ws = project.ws
    log = Log(io.StringIO())
    w = Watcher(ws, [ws.target("a"), ws.target("b")], CaptureOptions(flush_interval=0.2), Alerter({}, log), log)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(s.capture and s.capture.base for s in w.slots):
        time.sleep(0.05)
    cap_a, cap_b = w.slots[0].capture, w.slots[1].capture
    assert cap_a and cap_a.base and cap_b and cap_b.base, "the watcher did not start capturing within 20 s"
    cap_a.tailer.poll_max = 8 << 10  # two pages a poll: the commit below takes a few thousand polls

    done = threading.Event()
    seen: list[tuple[bool, int]] = []  # (first target partway through its commit, second target's commits)

    def write_b():
        conn = apsw.Connection(b)
        conn.set_busy_timeout(5000)
        while not done.is_set():
            conn.execute("INSERT INTO posts(user_id, body) VALUES (2, 'beside the migration')")
            time.sleep(0.01)
        conn.close()

    lags: list[float] = []

    def sample():
        while not done.is_set():
            partway = bool(cap_a.tailer and cap_a.tailer._part_end)
            seen.append((partway, cap_b.stats.commits))
            if partway:
                lags.append(cap_a.lag())
            time.sleep(0.002)

    helpers = [threading.Thread(target=write_b), threading.Thread(target=sample)]
    for h in helpers:
        h.start()
    try:
        app = apsw.Connection(a)
        app.execute("CREATE TABLE bulk(id INTEGER PRIMARY KEY, v BLOB)")
        time.sleep(0.6)  # stored: the commit below is then the only one waiting
        app.execute(BULK_16MB)
        app.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (any(p for p, _ in seen) and not seen[-1][0]):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        done.set()
        for h in helpers:
            h.join()
        w.stop()
        th.join(60)
    during = [n for partway, n in seen if partway]
    assert during, "the first target's commit was never seen partway (read in one poll?)"
    assert max(during) - min(during) >= 3, f"the second target was not polled while the first read its commit: {during[:3]}...{during[-3:]}"
    assert max(lags) > 0.02, "status said no lag while a commit was read in pieces"
    for name, path, q in (("a", a, "SELECT count(*), sum(length(v)) FROM bulk"),
                          ("b", b, "SELECT count(*), max(id) FROM posts")):
        out = project.dir / f"{name}-r.db"
        r = project.run("restore", name, "--latest", "--to", str(out))
        assert r.code == 0, r.err
        assert apsw.Connection(str(out)).execute(q).fetchall() == apsw.Connection(path).execute(q).fetchall()


def test_stop_stores_the_commits_already_seen_even_when_the_last_poll_fails(project, monkeypatch):
    """When the database breaks under watch (a SQLite or I/O error), the watcher stops that
    capture: the commits it already saw but had not stored yet must still be stored, not
    dropped because the final look at the database failed."""
    import time

    import apsw

    from mulligan.ops import capture_store as cs
    from test_watch_kit import capture_in_process

    cap, db, _ = capture_in_process(project, flush_interval=3600, status_interval=3600, sample_interval=3600,
                                    idle_checkpoint=3600)
    ws, target = project.ws, cap.target
    app = apsw.Connection(db)
    app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'seen, not yet stored')")
    cap._t["flush"] = time.monotonic()
    cap.step(time.monotonic())
    assert cap.seg.pending, "the commit should be seen and waiting for the next flush"

    def broken():
        raise apsw.IOError("disk I/O error")

    monkeypatch.setattr(cap.tailer, "poll", broken)
    cap.stop()
    app.close()
    base = cs.capture_bases(ws.vault, target.id)[-1]
    assert cs.last_commit(ws.vault, base) is not None


def test_watchs_index_objects_stay_few_over_a_long_history(monkeypatch):
    """Each flush stores a pack and its index object; watch merges them every MERGE_EVERY
    flushes, and the merged objects again past INDEX_OBJECTS_MAX, so a restore does not list
    and load thousands of them a week later. No chunk is lost on the way; a pack is named twice
    only by the last merge's small objects, kept one merge longer for readers that listed them."""
    import os

    from mulligan.ops import capture_store as cs
    from mulligan.vault import Vault
    from mulligan.vault import vault as vault_mod
    from mulligan.vault.packs import decode_index

    monkeypatch.setattr(cs.SegmentWriter, "MERGE_EVERY", 2)
    monkeypatch.setattr(vault_mod, "INDEX_OBJECTS_MAX", 8)
    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    v.index()
    seg = cs.SegmentWriter(v, "t-1", "base", 512)
    stored = {}
    for i in range(120):
        pages = {1 + j: os.urandom(512) for j in range(3)}
        _, ids = seg.add(1000.0 + i, i, 3, pages, "app")
        stored.update({cid: pages[p] for p, cid in ids.items()})
        seg.flush()
    keys = [k for k, _ in v.storage.list("index/")]
    assert len(keys) <= 8 + 2 * cs.SegmentWriter.MERGE_EVERY + 1, len(keys)  # 120 flushes: 120 without merging
    packs = [p for k in keys for p in decode_index(v.storage.get(k), k)]
    assert set(packs) == {bytes.fromhex(k.rsplit("/", 1)[-1]) for k, _ in v.storage.list("packs/")}
    small = [p for k in seg.merged_keys if v.storage.stat(k) is not None for p in decode_index(v.storage.get(k), k)]
    assert len(packs) == len(set(packs)) + len(small)
    reader = Vault(v.storage, v.config)
    assert all(reader.load_chunk(cid) == data for cid, data in stored.items())


# A capture the test steps itself: nothing happens on a timer (flush, status, sample, generation,
# base, repack) unless the test calls it.
STEPPED_BY_HAND = dict(flush_interval=3600, status_interval=3600, sample_interval=3600, generation_interval=3600,
                       base_interval=3600, repack_after=0)


def test_a_watchers_cached_index_does_not_grow_with_its_bases_and_older_bases_still_read(project):
    """Each base stores the tree nodes its pages changed; a watcher kept every one in its cached
    index, so its memory grew with every base for as long as it ran (a base every 10 minutes,
    and after every repack pass). It now keeps those of the bases the rollback matcher compares
    with (4 here); an older base is read from the vault's index objects."""
    from test_watch_kit import capture_in_process

    cap, db, _ = capture_in_process(project, **STEPPED_BY_HAND)
    cap.det.matcher.limit = 4
    conn = apsw.Connection(db)
    with conn:
        conn.executemany("INSERT INTO notes(id, body) VALUES (?, ?)", [(i, "x" * 300) for i in range(20000)])
    rnd = random.Random(7)
    sizes, bases = [], []
    for b in range(24):
        with conn:  # rows spread over the table: most leaves of the page-id tree change
            conn.executemany("UPDATE notes SET body = ? WHERE id = ?",
                             [(rnd.randbytes(150).hex(), rnd.randrange(20000)) for _ in range(300)])
        cap.step(time.monotonic())
        cap._new_base(gap=None, reason="test", bump=False)
        bases.append(cap.base)
        sizes.append(len(cap.vault.index()._written))
    conn.close()
    per_base = bases[-1].new_chunks
    assert per_base > 10
    assert max(sizes[6:]) - sizes[5] <= per_base, sizes  # grew by ~per_base at every base before
    first = bases[0]
    assert len(cap.det.matcher.ids(first)) == first.page_count
    cap.stop()
    from mulligan.vault import Vault

    assert Vault.open(cap.ws.config.vault_url).page_ids(first) == cap.vault.page_ids(first)  # a fresh reader agrees


def test_a_watcher_restarted_over_its_history_looks_its_pages_up_and_stores_none_again(project):
    """The chunk index grows with the history (about 1.3 million chunks an hour of busy capture),
    and a watcher loaded it whole at start, ~195 bytes a chunk: a restart over a day of it needed
    gigabytes. It now looks up the pages of the state it starts from (and the tree nodes it reads),
    one index object at a time, and stores none of them again."""
    from test_watch_kit import capture_in_process

    from mulligan.ops.capture import TargetCapture
    from mulligan.vault.packs import decode_index

    cap, db, _ = capture_in_process(project, **STEPPED_BY_HAND)
    conn = apsw.Connection(db)
    with conn:
        conn.executemany("INSERT INTO notes(id, body) VALUES (?, ?)", [(i, "x" * 300) for i in range(20000)])
    rnd = random.Random(3)
    for _ in range(20):  # a history: more chunks in the index than the database has pages
        with conn:
            conn.executemany("UPDATE notes SET body = ? WHERE id = ?",
                             [(rnd.randbytes(150).hex(), rnd.randrange(20000)) for _ in range(100)])
        cap.step(time.monotonic())
        cap.flush()
    cap.stop()
    ws = project.ws
    st = ws.vault.storage
    chunks = sum(len(e) for k, _ in st.list("index/") for e in decode_index(st.get(k), k).values())
    again = TargetCapture(ws, ws.target("app"), cap.o, cap.alerter, cap.log)
    again.start()
    try:
        idx = ws.vault._index
        assert not idx._segments and not idx._pending  # no index object held whole
        pages = len(again.ids)
        assert chunks > pages + 1000
        assert again.stats.bytes_stored == 0  # every page found in the vault
        assert len(idx._where) <= pages + 2 * again.base.page_count // 64 + 8
        with conn:
            conn.execute("INSERT INTO notes(id, body) VALUES (-1, 'after the restart')")
        again.step(time.monotonic())
    finally:
        again.stop()
        conn.close()
    out = project.dir / "r.db"
    assert project.run("restore", "app", "--latest", "--to", str(out)).code == 0
    assert ids_in(str(out), "notes") == ids_in(db, "notes")


def test_a_watchers_first_base_is_stored_in_blocks_of_pages_and_restores_exactly(project):
    """The pages read whole at start go into 64 KiB blocks (16 pages of 4 KiB), as a snapshot's
    do, not a block each: a restore then handles a block at a time, and the vault is smaller."""
    from test_watch_kit import capture_in_process

    from mulligan.vault.packs import decode_index

    from mulligan.vault.packs import T_PAGE

    cap, db, _ = capture_in_process(project, start=False, **STEPPED_BY_HAND)
    conn = apsw.Connection(db)
    with conn:
        conn.executemany("INSERT INTO notes(id, body) VALUES (?, ?)", [(i, f"note {i} " * 40) for i in range(3000)])
    conn.close()
    cap.start()
    cap.stop()
    st = project.ws.vault.storage
    per_block: dict = {}
    for k, _ in st.list("index/"):
        for pack, entries in decode_index(st.get(k), k).items():
            for e in entries:
                if e[1] == T_PAGE:  # not a tree node
                    per_block.setdefault((pack, e[2]), []).append(e)
    pages = sum(map(len, per_block.values()))
    assert pages >= 200
    assert max(map(len, per_block.values())) == 16
    assert len(per_block) <= pages // 16 + 16  # blocks of 16, but for the end of each batch read
    out = project.dir / "r.db"
    assert project.run("restore", "app", "--latest", "--to", str(out)).code == 0
    assert ids_in(str(out), "notes") == ids_in(db, "notes")


def test_a_restore_over_a_large_index_gives_the_same_states(project, monkeypatch):
    """Past LEAN_READ_INDEX_BYTES of index objects a restore reads them one at a time (its
    memory would otherwise grow with the history): the latest state and a past one are the
    same as with the index loaded."""
    from test_watch_kit import capture_in_process

    from mulligan.vault import vault as vault_mod

    cap, db, _ = capture_in_process(project, **STEPPED_BY_HAND)
    conn = apsw.Connection(db)
    seen = []
    for i in range(6):
        with conn:
            conn.executemany("INSERT INTO notes(id, body) VALUES (?, ?)", [(i * 1000 + j, "y" * 200) for j in range(300)])
        cap.step(time.monotonic())
        cap.flush()
        seen.append((time.time(), ids_in(db, "notes")))
        time.sleep(0.05)
    cap.stop()
    conn.close()
    out = []
    for limit in (1 << 40, 0):
        monkeypatch.setattr(vault_mod, "LEAN_READ_INDEX_BYTES", limit)
        for k, args in enumerate((["--latest"], ["--at", iso(seen[2][0])])):
            path = project.dir / f"r-{limit}-{k}.db"
            r = project.call("restore", "app", *args, "--to", str(path))
            assert r.code == 0, r.err
            out.append(ids_in(str(path), "notes"))
    assert out[0] == out[2] == seen[-1][1] and out[1] == out[3] == seen[2][1]


def test_a_damaged_index_object_does_not_stop_capture(project):
    """A damaged index object made watch fail at every start ("capture failed ... tried again
    by itself", nothing captured, for as long as nobody looked), and every restore fail. It is
    passed over with a warning; what it alone names is stored again; the states restore."""
    from test_watch_kit import capture_in_process

    from mulligan.ops.capture import TargetCapture

    cap, db, log = capture_in_process(project, **STEPPED_BY_HAND)
    cap.stop()
    st = project.ws.vault.storage
    keys = [k for k, _ in st.list("index/")]
    for k in keys:  # every index object the first watch wrote
        st.put(k, b"XXXX" + st.get(k)[4:], overwrite=True)
    ws = project.ws
    again = TargetCapture(ws, ws.target("app"), cap.o, cap.alerter, cap.log)
    again.start()
    assert "is not a Mulligan index object: passed over; capture goes on" in log.getvalue()
    conn = apsw.Connection(db)
    with conn:
        conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after the damage')")
    conn.close()
    again.step(time.monotonic())
    again.stop()
    assert again.stats.bytes_stored > 0  # the pages only the damaged objects named, stored again
    r = project.call("restore", "app", "--latest", "--to", str(project.dir / "r.db"))
    assert r.code == 0, r.err
    assert "passed over" in r.err
    assert ids_in(str(project.dir / "r.db")) == ids_in(db)


@pytest.mark.parametrize("failing", ["packs/", "index/", "capture/"])
def test_a_flush_whose_write_fails_stores_everything_at_the_next_one(failing):
    """A flush stores its pack and index object from a worker thread, then the segment; when a
    write fails (a full disk, an unreachable store) the flush raises, nothing is taken for
    stored, and the next flush stores every commit and page, readable by a fresh reader."""
    import os

    from mulligan.errors import StorageError
    from mulligan.ops import capture_store as cs
    from mulligan.storage.faulty import FaultyStorage
    from mulligan.vault import Vault

    inner = Vault.create(f"memory://{os.urandom(6).hex()}")
    broken = [True]
    v = Vault(FaultyStorage(inner.storage, fail_put=lambda key: broken[0] and key.startswith(failing)), inner.config)
    v.index()
    seg = cs.SegmentWriter(v, "t-1", "base", 512)
    stored = {}
    for i in range(40):  # enough pages for several compressed blocks
        pages = {1 + j: os.urandom(256) * 2 for j in range(4)}
        _, ids = seg.add(1000.0 + i, i, 4, pages, "app")
        stored.update({cid: pages[p] for p, cid in ids.items()})
    with pytest.raises(StorageError):
        seg.flush()
    assert not [k for k, _ in inner.storage.list("capture/")]
    broken[0] = False
    key = seg.flush()
    assert key is not None
    reader = Vault(inner.storage, inner.config)
    assert all(reader.load_chunk(cid) == data for cid, data in stored.items())
    assert len(cs.load_segment(reader, key)["commits"]) == 40


@pytest.mark.parametrize("backend", ["file", "memory"])
def test_a_segment_stored_whose_answer_was_lost_is_not_stored_twice(backend, tmp_path):
    """The segment lands but its write reports failure; more commits come before the next flush.
    That flush writes the same segment again (found already there, so it stands), then the newer
    commits as the next segment: the chain has each commit once, in order."""
    import os

    from mulligan.errors import StorageError
    from mulligan.ops import capture_store as cs
    from mulligan.storage.faulty import FaultyStorage
    from mulligan.vault import Vault

    inner = Vault.create(str(tmp_path / "vault") if backend == "file" else f"memory://{os.urandom(6).hex()}")
    lost = []

    def lose(key):
        if key.startswith("capture/") and not lost:
            lost.append(key)
            return True
        return False

    v = Vault(FaultyStorage(inner.storage, lose_answer=lose), inner.config)
    v.index()
    seg = cs.SegmentWriter(v, "t-1", "base", 512)
    points = []
    for i in range(10):
        points.append(seg.add(1000.0 + i, i, 2, {1: os.urandom(512), 2: os.urandom(512)}, "app")[0])
    with pytest.raises(StorageError):
        seg.flush()
    assert lost and inner.storage.stat(lost[0]) is not None  # it landed
    for i in range(10, 15):
        points.append(seg.add(1000.0 + i, i, 2, {1: os.urandom(512)}, "app")[0])
    assert seg.flush() is not None
    keys = [k for k, _ in inner.storage.list("capture/")]
    assert keys == [cs.segment_key("t-1", "base", 0), cs.segment_key("t-1", "base", 1)]
    reader = Vault(inner.storage, inner.config)
    segs = [cs.load_segment(reader, k) for k in keys]
    assert [len(s["commits"]) for s in segs] == [10, 5] and segs[1]["prev"] == 0
    assert [c["t"] for s in segs for c in s["commits"]] == [1000.0 + i for i in range(15)]
    assert points == [cs.commit_id("base", 0, i) for i in range(10)] + [cs.commit_id("base", 1, i) for i in range(5)]


@pytest.mark.parametrize("mode", ["TRUNCATE", "RESTART", "FULL"])
def test_an_application_checkpoint_on_an_idle_database_is_not_kept_waiting(app_env, mode):
    """With nothing new in the WAL the watcher keeps its read where it is (no turn each poll);
    an application's blocking checkpoint then backfills, which the watcher sees at its next
    poll, and moves off: the checkpoint returns within a few polls, not its busy timeout, and
    every commit before and after is captured."""
    env, db = app_env
    configure(env, capture={"idle_checkpoint": "60s"})  # the watcher's own checkpoint stays out of it
    w = Watch(env, "app")
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    for i in range(20):
        with conn:
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"before {i}",))
    time.sleep(0.6)  # several polls with nothing new: the read stays on the last commit's frame
    t0 = time.monotonic()
    busy, _log, _done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0]
    took = time.monotonic() - t0
    with conn:
        conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after')")
    last = conn.execute("SELECT max(id) FROM posts").fetchone()[0]
    conn.close()
    time.sleep(0.8)
    assert w.term() == 0
    assert busy == 0 and took < 1.0, f"the app's {mode} checkpoint waited {took:.2f} s (busy={busy})"
    assert env.run("snapshots", "app", "--json").json["coverage"]["gaps"] == []
    assert last in _restored_ids(env, "--latest")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 3)), min_size=0, max_size=4),
                min_size=1, max_size=30),
       st.integers(1, 6), st.data())
def test_a_captured_commit_and_a_time_resolve_to_the_state_replayed_naively(commits, per_flush, data):
    """Any chain of commits (pages written, the database growing and shrinking), flushed in
    segments of any size, some commits read in pieces (an earlier piece may hold an older
    version of a page; pieces go to the pack writer past a small threshold): the state of a
    commit by its id, and at any time, is the base overlaid by every commit up to it, one by one."""
    import os
    from datetime import datetime, timezone

    from mulligan.model import Target
    from mulligan.ops import capture_store as cs
    from mulligan.vault import Vault

    ps = 512
    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    target = Target("t", "/x.db", "test", "t-1")
    base_pages = [os.urandom(ps) for _ in range(6)]
    base_ids, _ = cs.store_pages(v, base_pages)
    base = cs.save_base(v, target, ps, base_ids, time=1000.0, meta={})
    seg = cs.SegmentWriter(v, target.id, base.id, ps)
    seg.SPILL_BYTES = data.draw(st.sampled_from([2 * ps, 8 * ps]))
    state = list(base_pages)
    truth = []  # (point id, seen time, pages after it)
    for k, writes in enumerate(commits):
        n = max([6] + [p for p, _ in writes]) - (k % 3 == 2)  # sometimes one page shorter
        pages = {p: bytes([p, w]) * (ps // 2) for p, w in writes if p <= n}
        state = (state + [bytes(ps)] * n)[:n]
        for p, d in pages.items():
            state[p - 1] = d
        if any(state[i] == bytes(ps) for i in range(n)):  # a page grown into must be written
            pages.update({i + 1: bytes([i + 1, 9]) * (ps // 2) for i in range(n) if state[i] == bytes(ps)})
            for p, d in pages.items():
                state[p - 1] = d
        t = 1001.0 + k
        items = list(pages.items())
        cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=3)))
        for a, b in zip([0] + cuts, cuts):
            part = dict(items[a:b])
            part.update({p: bytes([p, 7]) * (ps // 2) for p, _ in items[b:b + 1]})  # older, overwritten later
            seg.add_part(part)
        point, _ = seg.add(t, k + 1, n, dict(items[cuts[-1] if cuts else 0:]), "app")
        truth.append((point, t, list(state)))
        if (k + 1) % per_flush == 0:
            seg.flush()
    seg.flush()

    def pages_of(m):
        by_id = dict(v.iter_chunks(set(m.resolved_ids)))
        return [by_id[c] for c in m.resolved_ids]

    point, t, expected = data.draw(st.sampled_from(truth))
    _, seq, idx = point.split(".")
    assert pages_of(cs.materialize_commit(v, base, int(seq), int(idx))) == expected
    when = t + data.draw(st.sampled_from([0.0, 0.5]))
    got = cs.point_at(v, target, datetime.fromtimestamp(when, timezone.utc))
    assert got.id == point and pages_of(got) == expected
    before = cs.point_at(v, target, datetime.fromtimestamp(1000.5, timezone.utc))
    assert before.id == base.id


def test_a_failing_vault_is_tried_again_with_backoff_while_polls_go_on(project):
    """While every write to the vault fails, the watcher does not compress and try to store its
    held pages at every poll (a core burnt, or the polls held up by an object store's retries,
    for the whole outage): tries back off from the flush interval to FLUSH_RETRY_MAX. Polls go
    on between tries and see the commits; every step reports the failure until a flush
    succeeds; then everything seen is stored."""
    import time
    from contextlib import nullcontext

    import apsw

    from mulligan.errors import StorageError
    from mulligan.ops import capture_store as cs
    from mulligan.ops.capture import FLUSH_RETRY_MAX
    from mulligan.storage.faulty import FaultyStorage
    from test_watch_kit import capture_in_process

    cap, db, _ = capture_in_process(project, flush_interval=0.5, status_interval=3600, sample_interval=3600,
                                    idle_checkpoint=3600, base_interval=3600, generation_interval=3600)
    ws, target = cap.ws, cap.target
    tries, broken = [], [True]

    def fail(key):
        if key.startswith("packs/"):
            tries.append(key)
        return broken[0]

    ws.vault.storage = FaultyStorage(ws.vault.storage, fail_put=fail)
    app = apsw.Connection(db)
    t0, wall0 = time.monotonic(), time.time()
    cap._t["flush"] = t0
    n = 0
    for k in range(1, 301):  # 30 s of polls, 100 ms apart, a commit each
        app.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"during the outage {k}",))
        n += 1
        with pytest.raises(StorageError) if k >= 5 else nullcontext():
            cap.step(t0 + k * 0.1)
    assert len([c for c in cap.seg.pending if c["by"] == "app"]) == n  # every commit seen, none stored
    # tries at 0.5 s, then after 0.5, 1, 2, 4, 8, 8, 8 s: 8 in 30 s, not 296
    assert 6 <= len(tries) <= 9, len(tries)
    assert FLUSH_RETRY_MAX == 8.0
    broken[0] = False
    cap.step(t0 + 30.0 + FLUSH_RETRY_MAX)
    assert cap.seg.unstored_commits() == 0
    cap.step(t0 + 30.0 + FLUSH_RETRY_MAX + 0.1)  # no failure reported any more
    cap.stop()
    app.close()
    base = cs.capture_bases(ws.vault, target.id)[-1]
    pid, _t, seg = cs.last_commit(ws.vault, base)
    assert seg["commits"][-1]["t"] >= wall0


def test_a_wall_clock_stepped_back_an_hour_does_not_hold_capture(project, monkeypatch):
    """The wall clock is stepped back an hour while watch runs (a fast clock corrected): flushes,
    status and the stale check are timed on the monotonic clock, so commits go on being stored
    every flush interval. Before, nothing was stored until the wall clock caught up: an hour of
    commits held in memory, lost to a SIGKILL."""
    import time

    import apsw

    from mulligan.ops import capture_store as cs
    from test_watch_kit import make_app_db, watcher_in_thread

    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    ws = project.ws
    target = ws.target("app")
    w, th = watcher_in_thread(ws, target, flush_interval=0.2)
    try:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3600)
        app = apsw.Connection(db)
        for i in range(10):
            app.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"after the step {i}",))
            time.sleep(0.05)
        app.close()
        time.sleep(1.5)
        base = cs.capture_bases(ws.vault, target.id)[-1]
        stored = [c for k in cs.segment_keys(ws.vault, target.id, base.id)
                  for c in cs.load_segment(ws.vault, k)["commits"] if c["by"] == "app"]
        assert len(stored) == 10, f"{len(stored)} of 10 commits stored 1.5 s after the last"
        assert not w.slots[0].stale and w.slots[0].error is None
    finally:
        w.stop()
        th.join(30)


def _commits_read(tailer, bounded=True) -> tuple[list[tuple[int, int, dict]], int]:
    """Every commit the tailer reads until it has caught up, pieces put together; and how many
    polls stopped inside a commit."""
    out, part, pieces = [], {}, 0
    while True:
        res = tailer.poll(bounded=bounded)
        assert not res.restarted and not res.part_dropped
        if res.part is not None:
            part.update(res.part)
            pieces += 1
        for c in res.commits:
            out.append((c.frame, c.db_pages, {**part, **c.pages}))
            part = {}
        if not res.more:
            return out, pieces


def test_a_commit_larger_than_a_poll_is_read_in_pieces_while_a_checkpoint_cannot_pass_them(tmp_path):
    """A migration's commit of gigabytes must not be held in memory at once: polls read a
    bounded amount, inside one commit if need be, and the pieces add up to the commit. Until
    every piece is read, the watcher's read does not move: the application's checkpoint cannot
    backfill past it, so the WAL cannot start over on the frames not read yet."""
    import os

    from mulligan.engines.sqlite.capture import Tailer

    db = str(tmp_path / "a.db")
    # The same SQLite library as the watcher's, or the two would not see each other's locks
    # inside one process.
    app = apsw.Connection(db)
    app.execute("PRAGMA journal_mode=WAL").fetchall()
    app.execute("PRAGMA wal_autocheckpoint=0").fetchall()
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    ref, t = Tailer(db), Tailer(db)
    for tl in (ref, t):
        tl.open()
        tl.full_state(lambda pages: None, lambda: None)
    for i in range(3):
        app.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(300),))
    app.execute("BEGIN")
    for i in range(600):  # ~2.5 MB: many pieces of 64 KiB, a page written twice in it
        app.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(3000),))
    app.execute("UPDATE t SET v = ? WHERE id = 1", (b"later",))
    app.execute("COMMIT")
    for i in range(3):
        app.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(300),))
    expected, _ = _commits_read(ref, bounded=False)
    ref.close()

    t.poll_max = 64 << 10
    res = t.poll()
    assert [c.db_pages for c in res.commits] == [c[1] for c in expected[:3]] and res.more
    first = [(c.frame, c.db_pages, c.pages) for c in res.commits]
    res = t.poll()
    assert res.part is not None and not res.commits and res.more
    part = dict(res.part)
    # The application checkpoints, the watcher reads a piece more, the application writes:
    # were the watcher's read moved to the newest state at each piece, the checkpoint would
    # backfill everything, the read after it would need no WAL frame, and the write would start
    # the WAL over on the frames not read yet.
    app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    res = t.poll()
    assert res.part is not None and not res.commits and res.more
    part.update(res.part)
    app.execute("INSERT INTO t (v) VALUES (x'00')")
    rest, pieces = _commits_read(t)
    rest[0] = (rest[0][0], rest[0][1], {**part, **rest[0][2]})
    got = first + rest
    assert pieces >= 10
    assert [(f, n) for f, n, _ in got[:-1]] == [(f, n) for f, n, _ in expected]
    assert [p for _, _, p in got[:-1]] == [p for _, _, p in expected]
    t.close()
    app.close()


def _peak_mib(pid: int, field: str = "VmHWM") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def test_a_migration_of_hundreds_of_megabytes_in_one_commit_is_captured_in_bounded_memory(app_env):
    """One transaction of 300 MiB (a migration, a bulk load) while the application goes on
    committing: the watcher stores it piece by piece as it reads it (it held it whole, and more
    than once: it grew by 1.6 times the commit's size; now about 0.7 times: the pieces and
    packs in flight, the heap glibc keeps meanwhile, bookkeeping per page), and every commit
    restores."""
    import subprocess
    import sys

    env, db = app_env
    app = App(db, env.dir / "app.log", rate=50)
    w = Watch(env, "app")
    start_mib = _peak_mib(w.proc.pid)
    mib = 300
    subprocess.run([sys.executable, "-c", f"""
import apsw
c = apsw.Connection({db!r})
c.set_busy_timeout(5000)
with c:
    c.execute("CREATE TABLE bulk(id INTEGER PRIMARY KEY, v BLOB)")
    c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {mib * 256}) "
              "INSERT INTO bulk(v) SELECT randomblob(4000) FROM n")
"""], check=True, timeout=60)
    time.sleep(1.0)
    deadline = time.time() + 30
    out = env.dir / "latest.db"
    while True:  # the watcher has caught up once the latest restore point holds the table
        time.sleep(1.0)
        r = env.run("restore", "app", "--latest", "--to", str(out))
        assert r.code == 0, r.err
        if apsw.Connection(str(out)).execute("SELECT count(*) FROM sqlite_master WHERE name = 'bulk'").fetchall()[0][0]:
            break
        out.unlink()
        assert time.time() < deadline, w.text()
    peak, now = _peak_mib(w.proc.pid), _peak_mib(w.proc.pid, "VmRSS")
    app.stop()
    assert w.term() == 0, w.text()
    assert peak - start_mib < 0.85 * mib, f"the watcher grew from {start_mib:.0f} to {peak:.0f} MiB"
    # Once the commit is stored, the heap's free pages go back (they stayed: 229-235 MiB resident)
    assert now - start_mib < 0.42 * mib, f"the watcher still holds {now:.0f} MiB once the commit is stored"
    c = apsw.Connection(str(out))
    assert c.execute("SELECT count(*), sum(length(v)) FROM bulk").fetchall()[0] == (mib * 256, mib * 256 * 4000)
    assert c.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    got = set(_restored_ids(env, "--latest"))
    assert sorted(got) == list(range(1, max(got) + 1))
    assert {i for i, _ in app.log()} <= got


@pytest.mark.parametrize("fails", ["while read", "at the flush"])
def test_a_large_commit_whose_pieces_cannot_be_stored_is_dropped_and_read_again(project, monkeypatch, fails):
    """Pieces of a large commit go to the vault as they are read; when the vault refuses them
    (as they go, or the last of them at the flush), they are no longer in memory to try again,
    so the commits not stored yet are dropped at once (logged, as a long outage's are) and,
    once the vault answers, the whole database is read again under a new base: the latest
    restore point is the database, and the gap is recorded."""
    import os

    import apsw

    from mulligan.errors import StorageError
    from mulligan.ops import capture_store as cs
    from mulligan.storage.faulty import FaultyStorage
    from test_watch_kit import capture_in_process

    monkeypatch.setattr(cs.SegmentWriter, "SPILL_BYTES", 64 << 10)
    monkeypatch.setattr(cs.PackWriter.__init__, "__defaults__", (64 << 10, None))  # packs cut as pieces come
    cap, db, out = capture_in_process(project, flush_interval=0.5, status_interval=3600, sample_interval=3600,
                                      idle_checkpoint=3600, base_interval=3600, generation_interval=3600)
    ws = cap.ws
    cap.tailer.poll_max = 128 << 10
    broken = [fails == "while read"]
    ws.vault.storage = FaultyStorage(ws.vault.storage, fail_put=lambda key: broken[0] and key.startswith("packs/"))
    app = apsw.Connection(db)
    app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'before the migration')")
    with app:
        app.execute("CREATE TABLE bulk(id INTEGER PRIMARY KEY, v BLOB)")
        for _ in range(500):  # 2 MB
            app.execute("INSERT INTO bulk(v) VALUES (?)", (os.urandom(4000),))
    t0 = time.monotonic()
    cap._t["flush"] = t0
    with pytest.raises(StorageError):
        if fails == "at the flush":
            cap.step(t0)  # read and handed over, not flushed yet
            assert cap.seg.spilled and cap._dropped is None
            broken[0] = True
            cap.flush()
        else:
            cap.step(t0)
    assert cap._dropped is not None and cap.seg.unstored_commits() == 0
    assert "dropped from memory" in out.getvalue()
    cap.step(t0 + 0.1)  # polls go on; the pieces are not kept meanwhile
    assert not cap.seg.part_ids and not cap.seg.part_fresh
    broken[0] = False
    app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after')")
    cap.step(t0 + 2.0)  # the flush reads everything again and starts a new base
    assert cap._dropped is None
    cap.step(t0 + 2.6)
    cap.stop()
    app.close()
    r = project.run("restore", "app", "--latest", "--to", str(project.dir / "r.db"))
    assert r.code == 0, r.err
    got = apsw.Connection(str(project.dir / "r.db"))
    want = apsw.Connection(db)
    for q in ("SELECT count(*), sum(length(v)) FROM bulk", "SELECT group_concat(body, '|') FROM posts WHERE id > 50"):
        assert got.execute(q).fetchall() == want.execute(q).fetchall()
    assert project.run("snapshots", "app", "--json").json["coverage"]["gaps"]


def test_reading_the_whole_state_takes_the_newest_version_of_each_page_from_a_wal_not_backfilled(tmp_path):
    """At start, and after a gap, the watcher reads the whole state: the main file overlaid by
    the newest committed version of each page in the WAL. It reads those pages one by one from
    the WAL instead of holding the WAL (which may hold gigabytes not backfilled); the state read
    is page for page what SQLite's backup API copies."""
    import os

    from mulligan.engines.sqlite.capture import Tailer

    db = str(tmp_path / "a.db")
    app = apsw.Connection(db)
    app.execute("PRAGMA journal_mode=WAL").fetchall()
    app.execute("PRAGMA wal_autocheckpoint=0").fetchall()
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    with app:
        for i in range(300):
            app.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(1500),))
    app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # these pages are in the main file
    for k in range(20):  # then rewritten, some many times, none backfilled
        with app:
            app.execute("UPDATE t SET v = ? WHERE id % 7 = ?", (os.urandom(1500), k % 7))
            app.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(1500),))
    app.execute("BEGIN")  # an uncommitted transaction's frames are not part of the state
    app.execute("UPDATE t SET v = x'00'")
    copy = str(tmp_path / "copy.db")
    with apsw.Connection(copy) as dest:
        with dest.backup("main", apsw.Connection(db), "main") as b:
            b.step(-1)
    got: list[bytes] = []
    t = Tailer(db)
    t.open()
    try:
        count, h = t.full_state(got.extend, got.clear)
        assert h.mx_frame > 0 and h.n_backfill == 0
    finally:
        t.close()
    app.execute("ROLLBACK")
    ps = 4096
    want = open(copy, "rb").read()
    assert count == len(want) // ps == len(got)
    # the backup's copy differs from the source only in its header's change counter fields
    assert got[0][100:] == want[100:ps]
    assert all(got[i] == want[i * ps:(i + 1) * ps] for i in range(1, count))


def test_a_wal_cut_short_outside_sqlite_is_named_not_read_again_for_ever(tmp_path):
    """Someone truncates the -wal under a running application (a careless clean-up, a disk
    tool): the frames its index says are committed are gone. The watcher read short, took it
    for a WAL starting over, and read again at every poll without a word (or failed with
    "file is not a database", or with "the WAL kept restarting"); it now says what happened,
    that every commit captured before is in the vault, and how to get it."""
    import os

    from mulligan.engines.sqlite.capture import Tailer, WalDamaged

    db = str(tmp_path / "a.db")
    app = apsw.Connection(db)
    app.execute("PRAGMA journal_mode=WAL").fetchall()
    app.execute("PRAGMA wal_autocheckpoint=0").fetchall()
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    t = Tailer(db)
    t.open()
    try:
        t.full_state(lambda pages: None, lambda: None)
        for _ in range(20):
            app.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(3000),))
        size = os.path.getsize(db + "-wal")
        os.truncate(db + "-wal", size // 2)
        with pytest.raises(WalDamaged) as e:
            for _ in range(3):
                t.poll()
        assert "shorter than its index says" in e.value.message and "restore" in e.value.hint
        with pytest.raises(WalDamaged):
            t.full_state(lambda pages: None, lambda: None)
    finally:
        t.close()
        app.close()


def test_a_watcher_killed_while_storing_a_large_commit_in_pieces_leaves_a_vault_that_verifies(app_env):
    """SIGKILL at a random moment while a 48 MiB commit is read and stored piece by piece:
    packs of it may be in the vault with no segment naming them yet. The next watcher's base
    holds the commit whole if it was not stored (the gap is recorded), the latest state
    restores whole, and verify passes."""
    import subprocess
    import sys

    env, db = app_env
    w = Watch(env, "app")
    rows = 48 * 256
    subprocess.run([sys.executable, "-c", (
        "import apsw, sys\n"
        "c = apsw.Connection(sys.argv[1]); c.set_busy_timeout(5000)\n"
        "with c:\n"
        "    c.execute('CREATE TABLE bulk(id INTEGER PRIMARY KEY, v BLOB)')\n"
        "    c.execute('WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) '\n"
        "              'INSERT INTO bulk(v) SELECT randomblob(4000) FROM n', (int(sys.argv[2]),))\n"), db, str(rows)],
        check=True, timeout=60)
    time.sleep(random.uniform(0.0, 1.0))
    w.kill()
    w = Watch(env, "app")  # ready once its base holds the state at its start: the commit, whole
    assert w.term() == 0, w.text()
    out = env.dir / "latest.db"
    r = env.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    c = apsw.Connection(str(out))
    assert c.execute("SELECT count(*), sum(length(v)) FROM bulk").fetchall() == [(rows, rows * 4000)]
    v = env.run("verify", "--json")
    assert v.code == 0 and v.json["ok"], v.out


def test_a_commit_in_pieces_after_a_failed_flush_is_stored_whole_once_the_vault_answers(monkeypatch):
    """A flush fails (several packs refused), then a large commit comes in pieces once the
    vault answers again: its pieces go to a pack writer as they come, the commits held since
    the failure with them, and the next flush stores every one, whole."""
    import os

    from mulligan.errors import StorageError
    from mulligan.ops import capture_store as cs
    from mulligan.storage.faulty import FaultyStorage
    from mulligan.vault import Vault

    monkeypatch.setattr(cs.PackWriter.__init__, "__defaults__", (8 << 10, None))  # many small packs
    inner = Vault.create(f"memory://{os.urandom(6).hex()}")
    broken = [True]
    v = Vault(FaultyStorage(inner.storage, fail_put=lambda key: broken[0] and key.startswith("packs/")), inner.config)
    v.index()
    seg = cs.SegmentWriter(v, "t-1", "base", 512)
    seg.SPILL_BYTES = 4 << 10
    stored = {}

    def commit(i, pieces=1):
        pages = {1 + j: os.urandom(512) for j in range(16)}
        items = list(pages.items())
        step = len(items) // pieces
        for k in range(pieces - 1):
            seg.add_part(dict(items[k * step:(k + 1) * step]))
        _, ids = seg.add(1000.0 + i, i, 16, dict(items[(pieces - 1) * step:]), "app")
        stored.update({cid: pages[p] for p, cid in ids.items()})

    for i in range(4):
        commit(i)
    with pytest.raises(StorageError):
        seg.flush()
    broken[0] = False
    commit(4, pieces=4)  # spills: 4 KiB at a time
    assert seg.spilled
    key = seg.flush()
    assert key is not None and not seg.spilled
    reader = Vault(inner.storage, inner.config)
    assert all(reader.load_chunk(cid) == data for cid, data in stored.items())
    assert len(cs.load_segment(reader, key)["commits"]) == 5


def test_leaving_wal_mode_while_watch_runs_fails_at_once_as_docs_say(app_env):
    """docs/capture.md: with watch holding its read, PRAGMA journal_mode=DELETE fails at once
    with "database is locked" (stop watch first); the database stays in WAL mode and captured."""
    env, db = app_env
    w = Watch(env, "app")
    try:
        conn = apsw.Connection(db)
        conn.set_busy_timeout(2000)
        with pytest.raises(apsw.BusyError):
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        conn.close()
    finally:
        assert w.term() == 0, w.text()


def test_a_second_watch_of_the_same_database_steps_aside(project):
    """Two watchers of one database would each keep a chain of the same commits and take the
    other's identity stamps for someone else's: the second refuses (exit 3, one line) and the
    first goes on. A watcher SIGKILLed leaves its lease behind, but not a live process: the next
    one starts."""
    import subprocess
    import sys

    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    first = Watch(project, "app")
    r = subprocess.run([sys.executable, "-m", "mulligan", "watch", "app"], cwd=project.dir, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("mulligan:")]
    assert len(lines) == 1 and "already captured by another watch" in lines[0], r.stderr
    assert f"pid {first.proc.pid}" in lines[0] and "Traceback" not in r.stderr
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'the first watcher still captures')")
    time.sleep(0.8)
    first.kill()
    second = Watch(project, "app")
    conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'and then the next one')")
    time.sleep(0.8)
    assert second.term() == 0
    out = project.dir / "r.db"
    assert project.run("restore", "app", "--latest", "--to", str(out)).code == 0
    assert ids_in(str(out)) == ids_in(db)
    conn.close()


def test_a_stop_in_the_middle_of_a_commit_of_gigabytes_does_not_wait_for_its_end(project, monkeypatch):
    """SIGTERM while a migration of gigabytes is read in pieces: reading it to its end could
    take minutes (systemd kills after 90 s). The stop reads on for STOP_BUDGET, then leaves it:
    the commits before it are stored, and the next watch reads it with the whole database."""
    from mulligan.ops.capture import TargetCapture
    from test_watch_kit import capture_in_process

    monkeypatch.setattr(TargetCapture, "STOP_BUDGET", 0.05)
    cap, db, out = capture_in_process(project, flush_interval=3600, status_interval=3600, sample_interval=3600,
                                      idle_checkpoint=3600, base_interval=3600, generation_interval=3600)
    cap.tailer.poll_max = 8 << 10  # two pages a poll: the commit below takes thousands of polls
    app = apsw.Connection(db)
    app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'before the migration')")
    cap.step(time.monotonic())
    app.execute("CREATE TABLE bulk(id INTEGER PRIMARY KEY, v BLOB)")
    app.execute(BULK_16MB)
    t0 = time.monotonic()
    cap.stop()
    assert time.monotonic() - t0 < 5.0
    assert "stopping in the middle of a commit" in out.getvalue()
    r = project.run("restore", "app", "--latest", "--to", str(project.dir / "r1.db"))
    assert r.code == 0, r.err
    got = apsw.Connection(str(project.dir / "r1.db"))
    assert got.execute("SELECT count(*) FROM bulk").fetchone()[0] == 0  # its CREATE was a commit of its own
    assert got.execute("SELECT count(*) FROM posts WHERE body = 'before the migration'").fetchone()[0] == 1
    again = TargetCapture(cap.ws, cap.target, cap.o, cap.alerter, cap.log)  # the next watch: the whole database
    again.start()
    again.stop()
    from mulligan.ops import incidents as inc_mod

    assert inc_mod.list_incidents(cap.ws.vault, cap.target.id) == []  # a gap, not a rollback
    r = project.run("restore", "app", "--latest", "--to", str(project.dir / "r2.db"))
    assert r.code == 0, r.err
    q = "SELECT count(*), sum(length(v)) FROM bulk"
    assert apsw.Connection(str(project.dir / "r2.db")).execute(q).fetchall() == app.execute(q).fetchall()
    app.close()


def test_the_wal_index_header_is_read_again_while_a_writer_is_between_its_two_copies(tmp_path):
    """A writer descheduled between the header's two copies (a busy machine) left them differing
    for every read of a tight loop: capture failed with "cannot be read consistently" (seen in
    CI). The reads back off as SQLite's own readers do, and get the header once it is whole."""
    import os
    import threading

    from mulligan.engines.sqlite import wal

    db = make_app_db(tmp_path / "app.db")
    conn = apsw.Connection(db)
    conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'x')")
    whole = open(db + "-shm", "rb").read(wal.SHM_READ)
    shm = tmp_path / "copy-shm"
    torn = bytearray(whole)
    torn[48 + 16] ^= 0xFF  # the second copy's mxFrame, as if the writer had not copied it yet
    shm.write_bytes(bytes(torn))
    fd = os.open(shm, os.O_RDWR)
    try:
        mended = threading.Timer(0.02, lambda: os.pwrite(fd, whole, 0))
        mended.start()
        h = wal.read_index_header(fd)
        mended.join()
        assert h is not None and h == wal.read_index_header(fd)
    finally:
        os.close(fd)
        conn.close()


def test_a_restore_past_the_last_capture_says_how_old_it_is(app_env, monkeypatch):
    """watch stopped (or died) and nobody noticed: `restore --latest` or `--at` a later time
    gives the last state captured, and says how long before the time asked capture stopped."""
    from mulligan.ops import points

    env, db = app_env
    w = Watch(env, "app")
    conn = apsw.Connection(db)
    conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'captured')")
    time.sleep(0.5)
    assert w.term() == 0
    conn.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after watch stopped')")
    conn.close()
    r = env.call("restore", "app", "--latest", "--to", str(env.dir / "fresh.db"), "--json")
    assert r.code == 0 and r.json["warnings"] == [w for w in r.json["warnings"] if "capture is known" not in w]
    monkeypatch.setattr(points, "HEARTBEAT_SLACK", 1.0)
    time.sleep(1.5)
    r = env.call("restore", "app", "--latest", "--to", str(env.dir / "old.db"), "--json")
    assert r.code == 0, r.err
    assert any("after the last moment capture is known to have run" in w for w in r.json["warnings"]), r.json
    assert 52 not in ids_in(str(env.dir / "old.db"))


def test_a_snapshot_over_a_large_index_after_capture_stores_only_what_changed(project, monkeypatch):
    """The target's newest restore point is a captured commit (no tree of its own): a snapshot
    reading the index in part deduplicates against its pages and against the tree nodes of the
    base it grows from, so it stores what changed, not every tree node again."""
    from conftest import dump, make_db

    from mulligan.vault import vault as vault_mod

    db = make_db(project.dir / "app.db", rows=30000)
    project.protect(db)
    w = Watch(project, "app")
    make_db(db, rows=3)  # captured commits after the base
    time.sleep(1.0)
    assert w.term() == 0
    target = project.ws.target("app")
    assert project.ws.vault.latest(target.id).meta.get("capture")  # the newest stored tree is the base
    monkeypatch.setattr(vault_mod, "LEAN_READ_INDEX_BYTES", 0)
    r = project.call("--json", "snapshot", "app")
    assert r.code == 0, r.err
    m = project.ws.vault.manifest(target.id, r.json["id"])
    assert m.page_count > 64 * 16
    # a few pages and the nodes over them (4 here); 20 when only the captured commit's pages
    # were looked up (every tree node stored again)
    assert m.new_chunks <= 8, (m.new_chunks, m.page_count)
    assert project.call("restore", "app", "--snapshot", m.id, "--to", "copy.db").code == 0
    assert dump(str(project.dir / "copy.db")) == dump(db)


def test_verify_while_watch_captures_reports_no_damage(app_env, monkeypatch):
    """Segments, packs and bases written after verify listed the packs are not damage: their
    chunks are in packs verify had not read when it listed them (it reads them at the end), not
    missing."""
    from mulligan.ops import verify as verify_mod

    env, db = app_env
    configure(env, capture={"base_interval": "1s"})  # bases (new trees) during the check too
    app = App(db, env.dir / "app.log", rate=100)
    w = Watch(env, "app")
    time.sleep(1.0)
    real = verify_mod._manifests

    def late(*a):  # the listing of restore points comes a while after the packs were read
        time.sleep(2.5)
        return real(*a)

    monkeypatch.setattr(verify_mod, "_manifests", late)
    try:
        v = env.call("--json", "verify", "app")
    finally:
        assert w.term() == 0
        app.stop()
    assert v.code == 0 and v.json["ok"], v.json["problems"]
    assert any("written since verify listed" in n for n in v.json["notes"]), v.json["notes"]


def test_a_checkpoint_of_the_new_wal_before_its_commits_are_applied_is_not_a_changed_main_file(project):
    """The WAL starts over; the poll that sees it reads the new WAL's commits and moves the held
    read forward, and an application's checkpoint may then copy those commits into the main file
    before the restart check compares sampled main-file pages with the captured state (the new
    commits are applied after it). Those pages were taken for a main file changed outside
    SQLite: a whole read, a new base, a gap in the history, a rollback check, under nothing but
    load (seen at 1,000 tx/s with a slowed watcher)."""
    from test_watch_kit import capture_in_process

    cap, db, out = capture_in_process(project, sample_pages=64)
    app = apsw.Connection(db)
    try:
        with app:
            for i in range(40):
                app.execute("INSERT INTO notes(body) VALUES (?)", ("before " * 30,))
        cap.step(time.monotonic())
        app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # every frame backfilled
        cap.step(time.monotonic())  # the held read moves past the backfill: the WAL may start over
        with app:
            app.execute("UPDATE notes SET body = 'after the restart' WHERE id % 2 = 0")
            app.execute("UPDATE posts SET body = 'after the restart'")
        turn = cap.tailer._turn

        def turn_then_checkpoint():
            turn()
            app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        cap.tailer._turn = turn_then_checkpoint
        res_seen = []
        apply = cap._apply_poll
        cap._apply_poll = lambda res: (res_seen.append(res.restarted), apply(res))
        cap.step(time.monotonic())
        assert res_seen and res_seen[0], "the WAL did not start over: the scene did not happen"
        assert "not the captured state" not in out.getvalue() and "new base" not in out.getvalue(), out.getvalue()
    finally:
        cap.stop()
        app.close()
