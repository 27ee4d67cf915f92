"""Block digests: an incremental snapshot reuses page ids of unchanged blocks, and gets exactly
the manifest that hashing every page would give."""

import os
import sqlite3

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mulligan.model import PageBatch
from mulligan.vault import Vault, blocks
from mulligan.vault.blocks import BLOCK_PAGES, BlockDigests

from test_vault import read_back

PS = 600  # not a multiple of 16: a tree node (16-byte ids) is never mistaken for a page
B = BLOCK_PAGES


def new_vault():
    return Vault.create(f"memory://{os.urandom(6).hex()}")


def batches_of(pages, size, patched=(), stale=b"\xee" * PS):
    """Batches as the SQLite reader makes them: ``raw`` holds the main file, where a patched
    page (one the WAL overrides) still has its old bytes."""
    out = []
    for start in range(0, len(pages), size):
        part = pages[start : start + size]
        mine = {i - start: part[i - start] for i in patched if start <= i < start + size}
        raw = b"".join(stale if i in mine else p for i, p in enumerate(part))
        out.append(PageBatch(raw, PS, len(part), mine))
    return out


def save(v, batches, previous=None, tid="t-1"):
    return v.save_pages(target_id=tid, target_name="t", page_size=PS, batches=batches,
                        time="2026-01-01T00:00:00.000Z", previous=previous)


def ids_of(v, pages):
    return [v.codec.chunk_id(p) for p in pages]


page = st.one_of(st.binary(min_size=PS, max_size=PS), st.sampled_from([bytes(PS), b"\x01" * PS]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(page, max_size=120),
    st.data(),
    st.sampled_from([B, 2 * B, 3 * B, 7, 512]),
    st.sampled_from([B, 2 * B, 5, 512]),
)
def test_a_snapshot_reusing_block_digests_holds_exactly_the_new_pages(first, data, size1, size2):
    v = new_vault()
    p1 = data.draw(st.sets(st.integers(0, max(len(first) - 1, 0)), max_size=5)) if first else set()
    m1 = save(v, batches_of(first, size1, p1))
    second = list(first)
    changed = data.draw(st.sets(st.integers(0, max(len(first) - 1, 0)), max_size=8)) if first else set()
    if data.draw(st.booleans()):
        changed |= p1  # pages the WAL held change again
    for i in changed:
        second[i] = data.draw(page)
    second += data.draw(st.lists(page, max_size=3 * B))  # the database grows ...
    second = second[: data.draw(st.integers(0, len(second)))]  # ... or shrinks
    p2 = data.draw(st.sets(st.integers(0, max(len(second) - 1, 0)), max_size=5)) if second else set()
    if data.draw(st.booleans()):  # pages changed again while still in the WAL: raw holds the same stale bytes
        p2 |= {i for i in p1 | changed if i < len(second)}
    m2 = save(v, batches_of(second, size2, p2), previous=m1.block_digests)
    assert v.page_ids(m2) == ids_of(v, second)
    assert read_back(v, m2) == second
    assert m2.block_digests.ids == b"".join(ids_of(v, second))


def test_a_page_the_wal_holds_is_never_judged_by_the_main_file_bytes():
    """The main file's bytes of a patched page stay the same while the WAL's copy changes."""
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(4 * B)]
    m1 = save(v, batches_of(pages, 2 * B, patched={3}))
    pages[3] = os.urandom(PS)
    m2 = save(v, batches_of(pages, 2 * B, patched={3}), previous=m1.block_digests)
    assert v.page_ids(m2) == ids_of(v, pages)


def save_counting(v, pages, previous, size=2 * B):
    """Save ``pages``; return (manifest, how many pages were hashed one by one). The manifest
    must hold exactly ``pages`` whichever way its ids were found."""
    calls = []
    plain = v.codec.chunk_id
    v.codec.chunk_id = lambda d: calls.append(len(d)) or plain(d)
    try:
        m = save(v, batches_of(pages, size), previous=previous)
    finally:
        del v.codec.chunk_id
    assert v.page_ids(m) == ids_of(v, pages)
    return m, sum(1 for n in calls if n == PS)


def _reused(v, pages, previous):
    return save_counting(v, pages, previous)[1] < len(pages)


def test_unchanged_blocks_are_not_hashed_page_by_page():
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(8 * B)]
    m1 = save(v, batches_of(pages, 4 * B))
    pages[3] = os.urandom(PS)  # one page of the first block changes
    m2, hashed = save_counting(v, pages, m1.block_digests, size=4 * B)
    assert hashed == B, "only the changed block's pages are hashed one by one"
    assert m2.new_chunks >= 1


def test_without_digests_every_page_is_hashed():
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(4 * B)]
    save(v, batches_of(pages, 2 * B))
    assert save_counting(v, pages, None)[1] == len(pages)


def test_digests_of_a_snapshot_no_longer_in_the_vault_are_not_used():
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(4 * B)]
    m1 = save(v, batches_of(pages, 2 * B))
    assert _reused(v, pages, m1.block_digests)
    v.delete_manifest(m1)
    assert not _reused(v, pages, m1.block_digests)


def test_digests_that_do_not_match_their_snapshot_are_not_used():
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(4 * B)]
    d = save(v, batches_of(pages, 2 * B)).block_digests
    other_root = BlockDigests(d.snapshot_id, "00" * 16, d.page_size, d.ids, d.digests)
    other_size = BlockDigests(d.snapshot_id, d.root, 1024, d.ids, d.digests)
    fewer_ids = BlockDigests(d.snapshot_id, d.root, d.page_size, d.ids[:-16], d.digests)
    for bad in (other_root, other_size, fewer_ids):
        assert not _reused(v, pages, bad)
    other_target = save(v, batches_of(pages, 2 * B), tid="t-2").block_digests
    assert not _reused(v, pages, other_target)


def test_the_cache_file_round_trips_and_a_damaged_one_is_ignored(tmp_path):
    d = BlockDigests("abc", "12" * 16, 4096, os.urandom(16 * 40), os.urandom(16 * 2))
    path = tmp_path / "cache" / "t.blocks"
    assert blocks.save(path, d)
    assert blocks.load(path) == d
    raw = bytearray(path.read_bytes())
    for pos in (0, 10, len(raw) // 2, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 1
        path.write_bytes(bytes(bad))
        assert blocks.load(path) is None
    path.write_bytes(bytes(raw[:50]))
    assert blocks.load(path) is None
    path.write_bytes(b"")
    assert blocks.load(path) is None
    assert blocks.load(tmp_path / "absent") is None
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


APP = """
import sys, apsw
conn = apsw.Connection(sys.argv[1])
conn.execute("PRAGMA wal_autocheckpoint=0")
for line in sys.stdin:
    r = int(line)
    with conn:
        for i in range(1, 5000, 97):
            conn.execute("UPDATE t SET v = ? WHERE id = ?", (f"r{r}-{i}", i))
    print(conn.execute("SELECT count(*) FROM t WHERE v LIKE ?", (f"r{r}-%",)).fetchall()[0][0], flush=True)
"""


def test_snapshots_of_a_live_wal_database_use_the_cache_and_restore_exactly(tmp_path):
    """The app (another process) keeps its changes in the WAL, so the reader patches those
    pages over the main file's: a reused block must never be one that a patched page changed."""
    import subprocess
    import sys

    from mulligan import config
    from mulligan.ops.restore import restore_new
    from mulligan.ops.setup import protect
    from mulligan.ops.snapshot import take_snapshot
    from mulligan.ops.workspace import Workspace

    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(os.urandom(40).hex(),) for _ in range(5000)])
    conn.commit()
    conn.close()
    cfg = config.write_new(tmp_path / "mulligan.toml", str(tmp_path / "vault"))
    Vault.create(cfg.vault_url)
    protect(Workspace.open(cfg), str(db), name="app", env="production")
    ws = Workspace.open(config.load(tmp_path / "mulligan.toml"))
    target = ws.target("app")
    take_snapshot(ws, target)
    assert blocks.load(ws.cache_file(target, "blocks")) is not None
    app = subprocess.Popen([sys.executable, "-c", APP, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for round_ in range(3):
            app.stdin.write(f"{round_}\n")
            app.stdin.flush()
            assert int(app.stdout.readline()) == len(range(1, 5000, 97))
            m = take_snapshot(ws, target)
            assert m.meta["wal_commits"] == round_ + 1, "the changes are in the WAL, not the main file"
            out = tmp_path / f"r{round_}.db"
            restore_new(ws, m, str(out))
            got = sqlite3.connect(out).execute("SELECT count(*) FROM t WHERE v LIKE ?", (f"r{round_}-%",)).fetchone()
            assert got[0] == len(range(1, 5000, 97))
    finally:
        app.stdin.close()
        app.wait(timeout=30)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=4, max_size=4), max_size=20), st.data())
def test_a_page_batch_is_the_list_of_its_pages_however_it_is_read(pages, data):
    patched = data.draw(st.dictionaries(st.integers(0, max(len(pages) - 1, 0)), st.binary(min_size=4, max_size=4))) \
        if pages else {}
    want = [patched.get(i, p) for i, p in enumerate(pages)]
    raw = b"".join(pages)
    lazy = PageBatch(raw, 4, len(pages), patched)
    i = data.draw(st.integers(-len(pages) - 1, len(pages)))
    sl = slice(data.draw(st.integers(-25, 25)), data.draw(st.integers(-25, 25)))
    assert len(lazy) == len(want)
    assert lazy[sl] == want[sl]
    if -len(want) <= i < len(want):
        assert lazy[i] == want[i]
    else:
        with pytest.raises(IndexError):
            lazy[i]
    assert list(lazy) == want and lazy[sl] == want[sl]  # the same once cut whole
