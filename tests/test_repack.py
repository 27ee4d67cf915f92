"""Repacking a busy capture: the current pages stored again in page order, read from there."""

from __future__ import annotations

import hashlib
import os
import random
import time
import urllib.request

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_watch_kit import App, Watch, configure, free_port, ids_in, make_app_db

pytestmark = pytest.mark.timeout(120)


def _flushed_history(v, pages_total: int, flushes: int, rnd: random.Random, ps: int = 1024):
    """A SegmentWriter history of random page updates: (writer, current {pgno: data}, repacker)."""
    from mulligan.ops import capture_store as cs
    from mulligan.ops.capture_repack import Repacker

    seg = cs.SegmentWriter(v, "t-1", "base", ps)
    rp = Repacker(v, 1.0, floor=0, interval=0)
    current = {p: rnd.randbytes(ps // 2) * 2 for p in range(1, pages_total + 1)}
    cs.store_pages(v, list(current.values()))  # the base: read in full, stored in page order
    for i in range(flushes):
        pages = {p: rnd.randbytes(ps // 2) * 2 for p in rnd.sample(range(1, pages_total + 1), 8)}
        _, ids = seg.add(1000.0 + i, i, pages_total, pages, "app")
        rp.note(pages_total, ids)
        current.update(pages)
        seg.flush()
    return seg, current, rp


def test_a_repack_stores_the_pages_it_can_verify_and_readers_then_read_them_from_its_packs():
    from mulligan.vault import Vault
    from mulligan.vault.packs import pack_key

    rnd = random.Random(7)
    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    v.index()
    n = 300
    seg, current, rp = _flushed_history(v, n, 60, rnd)
    chunk_id = v.codec.chunk_id
    ids = [chunk_id(current[p]) for p in range(1, n + 1)]
    packs_before = {k for k, _ in v.storage.list("packs/")}
    reader = Vault(v.storage, v.config)
    before = {reader.index().get(c).pack for c in ids}
    assert len(before) > 30  # scattered over the flushes' packs

    changed = set(rnd.sample(range(1, n + 1), 20))  # rewritten since they were captured: not ours to store

    def read(pgnos):
        return [b"x" * len(current[p]) if p in changed else current[p] for p in pgnos]

    moved = {p for p in range(1, n + 1) if rp.moved[p - 1]}
    rp.STEP_PAGES = 64
    rp.begin()
    steps = 1
    while not rp.step(ids, read):
        steps += 1
    assert steps == -(-len(moved) // 64)
    assert rp.stats.pages == len(moved - changed) and not rp.running
    # the pass's own account, over all its steps (what the watcher logs)
    assert (rp.current.pages, rp.current.skipped, rp.stats.passes) == (len(moved - changed), len(moved & changed), 1)
    assert {p for p in range(1, n + 1) if rp.moved[p - 1]} == moved & changed  # left for the next pass
    new_packs = {k for k, _ in v.storage.list("packs/")} - packs_before
    assert 1 <= len(new_packs) <= 2

    fresh = Vault(v.storage, v.config)  # a restore's reader: every index object, any order
    where = {p: pack_key(fresh.index().get(ids[p - 1]).pack) for p in range(1, n + 1)}
    assert {where[p] for p in moved - changed} <= new_packs
    assert all(where[p] not in new_packs for p in changed | (set(where) - moved))
    got = dict(fresh.iter_chunks(ids))
    assert all(got[ids[p - 1]] == current[p] for p in range(1, n + 1))


def test_a_pass_is_due_once_scattered_pages_would_cost_a_restore_the_database_again():
    from mulligan.ops.capture_repack import Repacker

    v = object()  # due() looks at nothing in the vault
    db_pages, ps = 4096, 4096
    db = db_pages * ps
    hot = Repacker(v, 1.0, floor=0, interval=60)
    for _ in range(1000):  # the same 8 pages rewritten over and over: twice the database in bytes
        hot.note(db_pages, range(1, 9))
        hot.flushed += 8 * ps
    assert hot.flushed > db and not hot.due(db, now=hot.last_begin + 3600)
    spread = Repacker(v, 1.0, floor=0, interval=60)
    spread.note(db_pages, range(1, db_pages + 1, 16))  # one page in 16 moved: a block each
    spread.flushed = db
    assert spread.due(db, now=spread.last_begin + 60)
    assert not spread.due(db, now=spread.last_begin + 59)  # not sooner than the interval
    assert not Repacker(v, 1.0, floor=2 * db, interval=0).due(db)  # nor below the floor
    spread.flushed = db - 1
    assert not spread.due(db, now=spread.last_begin + 60)
    spread.note(db_pages // 2, [])  # the database shrank: the pages past its end are forgotten
    assert spread.moved_count == db_pages // 32


def _update_random_rows(db: str, seconds: float, rnd: random.Random) -> int:
    conn = apsw.Connection(db)
    conn.set_busy_timeout(5000)
    rows = conn.execute("SELECT max(id) FROM big").fetchone()[0]
    n, end = 0, time.time() + seconds
    while time.time() < end:
        with conn:
            for _ in range(4):
                conn.execute("UPDATE big SET v = randomblob(300) WHERE id = ?", (rnd.randint(1, rows),))
        n += 1
        time.sleep(0.002)
    conn.close()
    return n


def _big_app_db(project, rows: int) -> str:
    """The application's database with a table of ``rows`` 300-byte rows, protected."""
    db = make_app_db(project.dir / "app.db")
    conn = apsw.Connection(db)
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
    with conn:
        for _ in range(rows):
            conn.execute("INSERT INTO big(v) VALUES (randomblob(300))")
    conn.close()
    project.protect(db)
    return db


def _digest(path: str) -> str:
    conn = apsw.Connection(path)
    h = hashlib.sha256()
    for table in ("big", "posts", "users"):
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
            h.update(repr(row).encode())
    conn.close()
    return h.hexdigest()


def test_watch_repacks_a_busy_history_and_every_point_still_restores(project):
    """A real application commits while updates land all over a 4 MB database: once the flushes
    stored as much as the database holds, watch reads the current pages again and stores them
    in page order; the latest state then comes from a few packs instead of a hundred, and a
    point before the repack still restores to what the application had committed."""
    from mulligan.ops import points

    db = _big_app_db(project, 12000)
    configure(project, capture={"flush_interval": "50ms", "poll_interval": "20ms", "repack_after": 2.0,
                                "repack_min_mib": 0, "repack_interval": 0})
    app = App(db, project.dir / "app.log", rate=50)
    port = free_port()
    w = Watch(project, "app", "--metrics-port", str(port))
    rnd = random.Random(3)
    t0 = time.time()
    while "repacked" not in w.text() and time.time() - t0 < 60:
        _update_random_rows(db, 0.05, rnd)
    assert "repacked" in w.text(), w.text()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert int(next(ln for ln in body.splitlines() if ln.startswith("mulligan_repacks_total")).split()[-1]) >= 1
    time.sleep(0.5)  # the application alone: it appends to the last pages
    app.stop()
    assert w.term() == 0
    log = app.log()
    st = project.run("status", "app", "--json").json["targets"][0]
    assert st["watch"]["repacks"] >= 1

    out = project.dir / "latest.db"
    r = project.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    assert _digest(str(out)) == _digest(db)

    ws = project.ws
    target = ws.target("app")
    latest = points.resolve_point(ws.vault, target, latest=True)
    ids = latest.resolved_ids if getattr(latest, "resolved_ids", None) else ws.vault.page_ids(latest)
    by_pack, missing = ws.vault.index().group(dict.fromkeys(ids))
    assert not missing
    all_packs = len(list((project.dir / ".mulligan" / "vault" / "packs").rglob("*")))
    assert len(by_pack) <= 10 and all_packs >= 60, (len(by_pack), all_packs)

    when = t0 + 1.0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1e6):06d}Z"
    out2 = project.dir / "before.db"
    r = project.run("restore", "app", "--at", stamp, "--to", str(out2))
    assert r.code == 0, r.err
    got = set(ids_in(str(out2)))
    assert {i for i, t in log if t <= when - 0.3} <= got
    assert not {i for i, t in log if t > when + 0.3} & got
    v = project.run("verify", "app", "--json")
    assert v.code == 0 and v.json["ok"], v.out

    # Prune down to the newest point: packs go only when no chunk in them is referenced, so the
    # latest state still restores whole, from whichever copy is left.
    r = project.run("prune", "app", "--keep-last", "1", "--json")
    assert r.code == 0 and r.json["removed"] and r.json["packs_removed"] >= 1, r.err
    out3 = project.dir / "after-prune.db"
    r = project.run("restore", "app", "--latest", "--to", str(out3))
    assert r.code == 0, r.err
    assert _digest(str(out3)) == _digest(db)
    v = project.run("verify", "app", "--json")
    assert v.code == 0 and v.json["ok"], v.out


def test_a_watcher_killed_during_a_repack_pass_loses_nothing(project):
    """SIGKILL while a pass is storing its packs (a random moment after it began), then a
    watcher again: every commit the application made before the kill, less the last second, is
    restored, the latest state restores whole, and verify passes (a pack the killed pass left
    without its index is garbage prune removes once the dead watcher's lease is stale)."""
    db = _big_app_db(project, 24000)
    # A pass of 1,000+ pages takes two steps, one flush (0.2 s) apart: the kill falls inside it.
    configure(project, capture={"flush_interval": "200ms", "poll_interval": "20ms", "repack_after": 2.0,
                                "repack_min_mib": 0, "repack_interval": 0})
    app = App(db, project.dir / "app.log", rate=50)
    w = Watch(project, "app")
    rnd = random.Random(11)
    t0 = time.time()
    while "repacking" not in w.text() and time.time() - t0 < 60:
        _update_random_rows(db, 0.05, rnd)
    assert "repacking" in w.text(), w.text()
    time.sleep(random.uniform(0.0, 0.1))
    t_kill = time.time()
    w.kill()
    time.sleep(0.3)
    w2 = Watch(project, "app")
    _update_random_rows(db, 0.3, rnd)
    time.sleep(0.3)
    app.stop()
    assert w2.term() == 0
    log = app.log()

    out = project.dir / "latest.db"
    r = project.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    assert _digest(str(out)) == _digest(db)
    got = set(ids_in(str(out)))
    assert {i for i, t in log if t <= t_kill - 1.0} <= got
    v = project.run("verify", "app", "--json")
    assert v.code == 0 and v.json["ok"], v.out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 80), st.lists(st.integers(1, 80), max_size=12)),
    st.tuples(st.just("pass"), st.integers(1, 40), st.sets(st.integers(1, 80), max_size=10))), max_size=25))
def test_repack_bookkeeping_holds_over_any_history(events):
    """Commits (the database growing and shrinking) and passes in any order, some of whose
    reads return content that changed since it was captured: the moved count always equals the
    pages marked; a pass stores exactly the marked pages whose content it could verify, under
    their ids, and leaves the others marked; nothing it stores is not a current page."""
    from mulligan.ops.capture_repack import Repacker
    from mulligan.vault import Vault

    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    rp = Repacker(v, 1.0, floor=0, interval=0)
    chunk_id = v.codec.chunk_id
    content: dict[int, bytes] = {}
    ids: list[bytes] = []
    version = 0
    for ev in events:
        if ev[0] == "commit":
            _, n, written = ev
            version += 1
            for p in written:
                if p <= n:
                    content[p] = f"{p}:{version}".encode().ljust(64, b".")
            for p in range(1, n + 1):
                content.setdefault(p, f"{p}:0".encode().ljust(64, b"."))
            for p in [p for p in content if p > n]:
                del content[p]
            ids = [chunk_id(content[p]) for p in range(1, n + 1)]
            rp.note(n, [p for p in written if p <= n])
        else:
            _, step, stale = ev
            marked = {p for p in range(1, len(ids) + 1) if p <= len(rp.moved) and rp.moved[p - 1]}
            rp.STEP_PAGES = step
            rp.begin()
            writer = rp.writer
            while not rp.step(ids, lambda pgnos: [b"stale" if p in stale else content[p] for p in pgnos]):
                pass
            stored = set(writer.written)
            assert stored == {ids[p - 1] for p in marked - stale}
            assert {p for p in range(1, len(ids) + 1) if rp.moved[p - 1]} == marked & stale
            for cid in stored:
                assert Vault(v.storage, v.config).load_chunk(cid) in {content[p] for p in content}
        assert rp.moved_count == rp.moved.count(1)
        assert len(rp.moved) == len(ids)  # one mark a page of the database as it is now
