"""The catalog of a target's manifests: read in one object, never trusted over the listing."""

import os

import pytest

from mulligan.errors import IntegrityError
from mulligan.storage.memory import MemoryStorage
from mulligan.vault import Vault, catalog
from mulligan.vault.catalog import catalog_key

PS = 512
T = "t-1"


class CountingStorage(MemoryStorage):
    """A memory store that counts the objects read (the catalog's point is to read fewer)."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def get(self, key):
        self.reads.append(key)
        return super().get(key)


def _id(due: bool, n: int) -> str:
    # catalog.due looks at the first four hex digits: multiples of SLACK are due
    head = 0 if due else 1
    return f"{head:04x}{n:012x}"


def vault_with(n: int, storage=None) -> Vault:
    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    if storage is not None:
        storage.put("config", v.storage.get("config"))
        v = Vault(storage, v.config)
    for i in range(n):
        save(v, i)
    return v


def save(v: Vault, i: int, *, due: bool = False):
    pages = [os.urandom(PS) for _ in range(2)]
    return v.save_pages(target_id=T, target_name="t", page_size=PS, batches=[pages],
                        time=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z", snapshot_id=_id(due, i))


def fresh(v: Vault) -> Vault:
    """The same vault as another process sees it."""
    return Vault(v.storage, v.config)


def listed(v: Vault) -> list[str]:
    return [m.id for m in v.manifests(T, direct=True)]


def test_a_writer_writes_the_catalog_on_its_turn_and_a_reader_reads_one_object_not_each_manifest():
    st = CountingStorage()
    v = vault_with(40, st)
    assert st.stat(catalog_key(T)) is None  # no write was due
    save(v, 40, due=True)
    assert st.stat(catalog_key(T)) is not None
    r, expected = fresh(v), listed(v)
    st.reads.clear()
    got = [m.id for m in r.manifests(T)]
    assert got == expected and len(got) == 41
    assert [k for k in st.reads if k.startswith("snapshots/")] == []
    assert st.reads == [catalog_key(T)]


def test_manifests_stored_after_the_catalog_are_read_and_pruned_ones_are_not_listed():
    st = CountingStorage()
    v = vault_with(40, st)
    save(v, 40, due=True)
    later = [save(v, 41 + i) for i in range(3)]
    gone = v.manifests(T)[2]
    v.delete_manifest(gone)
    r, expected = fresh(v), listed(v)
    st.reads.clear()
    got = [m.id for m in r.manifests(T)]
    assert got == expected and gone.id not in got and all(m.id in got for m in later)
    assert sorted(k for k in st.reads if k.startswith("snapshots/")) == sorted(m.key for m in later)


def test_a_catalog_lacking_fewer_than_slack_manifests_is_not_rewritten_but_one_lacking_more_is():
    v = vault_with(catalog.SLACK - 1)
    save(v, 99, due=True)  # no catalog yet, and SLACK manifests to put in one
    first = v.storage.get(catalog_key(T))
    for i in range(catalog.SLACK - 2):
        save(v, 100 + i)
    save(v, 200, due=True)  # lacks SLACK - 1 (with itself): not worth a rewrite yet
    assert v.storage.get(catalog_key(T)) == first
    save(v, 201)
    save(v, 202, due=True)
    assert v.storage.get(catalog_key(T)) != first
    assert len(catalog.decode(v.storage.get(catalog_key(T)), T, "c")) == len(listed(v))


def _huge_header(good: bytes) -> bytes:
    """The same frame, its header claiming 2**40 bytes: descriptor 0xE4 (an 8-byte content size,
    a single segment, a checksum), then that size, then the original blocks."""
    import zstandard

    return good[:4] + bytes([0xE4]) + (1 << 40).to_bytes(8, "little") + good[zstandard.frame_header_size(good):]


@pytest.mark.parametrize("damage", ["flip", "not zstd", "other target", "huge header"])
def test_a_damaged_catalog_is_ignored_reported_by_verify_and_rewritten(damage, project):
    from conftest import make_db

    from mulligan.ops.verify import verify

    db = make_db(project.dir / "app.db")
    project.protect(db)
    for _ in range(3):
        project.call("snapshot", "app")
    v = project.ws.vault
    tid = project.ws.target("app").id
    assert v.refresh_catalog(tid, always=True)
    key = catalog_key(tid)
    good = v.storage.get(key)
    bad = {"flip": good[:-9] + bytes([good[-9] ^ 0x40]) + good[-8:], "not zstd": b"{}",
           "other target": catalog.encode("t-other", []), "huge header": _huge_header(good)}[damage]
    v.storage.put(key, bad, overwrite=True)
    r = fresh(v)
    assert [m.id for m in r.manifests(tid)] == [m.id for m in v.manifests(tid, direct=True)]
    assert tid in r.catalog_problems
    out = project.call("snapshots", "app", "--json").json
    assert len(out["snapshots"]) == 3
    res = verify(project.ws)
    assert not res.ok and [p["object"] for p in res.problems] == [key]
    assert r.refresh_catalog(tid)  # a writer replaces it at its next turn
    assert catalog.decode(v.storage.get(key), tid, key)
    assert verify(project.ws).ok


def test_a_catalog_entry_that_differs_from_its_manifest_is_reported_and_never_restored_from(project, tmp_path):
    from conftest import make_db

    from mulligan.ops.verify import verify

    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    make_db(db, rows=500)  # more rows: another state
    project.call("snapshot", "app")
    v = project.ws.vault
    tid = project.ws.target("app").id
    a, b = v.manifests(tid, direct=True)
    assert a.root != b.root
    a.root, a.depth, a.page_count = b.root, b.depth, b.page_count  # a copy that would restore the other point's pages
    v.storage.put(catalog_key(tid), catalog.encode(tid, [a, b]), overwrite=True)
    res = verify(project.ws)
    assert any("differs from the manifest" in p["problem"] for p in res.problems), res.problems
    r = fresh(v)
    picked = [m for m in r.manifests(tid) if m.id == a.id][0]
    with pytest.raises(IntegrityError, match="differs from its manifest"):
        r.page_ids(picked)
    assert len(r.page_ids([m for m in r.manifests(tid) if m.id == b.id][0])) == b.page_count


def test_prune_leaves_a_catalog_of_exactly_the_points_it_kept(project):
    from conftest import make_db

    db = make_db(project.dir / "app.db")
    project.protect(db)
    for _ in range(5):
        project.call("snapshot", "app")
    project.call("prune", "app", "--keep-last", "2")
    v = fresh(project.ws.vault)
    tid = project.ws.target("app").id
    held = catalog.decode(v.storage.get(catalog_key(tid)), tid, "c")
    assert sorted(m.id for m in held.values()) == sorted(m.id for m in v.manifests(tid, direct=True))
    assert len(held) == 2


_WRITER = """
import os, sys
from mulligan.vault import Vault
v = Vault.open(sys.argv[1])
w = int(sys.argv[2])
for i in range(int(sys.argv[3])):
    due = i % 5 == 4  # every fifth write of each process checks the catalog
    sid = f"{0 if due else 1:04x}{w:04x}{i:08x}"
    v.save_pages(target_id="t-1", target_name="t", page_size=512, batches=[[os.urandom(512) for _ in range(2)]],
                 time=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.{w:03d}Z", snapshot_id=sid)
"""


def test_writers_in_several_processes_rewriting_the_catalog_at_once_never_hide_or_invent_a_point(tmp_path):
    """Three processes store restore points, each rewriting the catalog on its turns while the
    others write; then a third of them are deleted (as prune deletes them). Every reader sees
    exactly the listed manifests, and every copy the catalog holds is its manifest."""
    import subprocess
    import sys

    url = str(tmp_path / "vault")
    Vault.create(url)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), url, str(w), "60"]) for w in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    v = Vault.open(url)
    direct = [m.id for m in v.manifests(T, direct=True)]
    assert len(direct) == 180
    assert [m.id for m in Vault.open(url).manifests(T)] == direct
    held = catalog.decode(v.storage.get(catalog_key(T)), T, "c")
    assert all(m == v.manifest(T, m.id) for m in held.values())
    gone = v.manifests(T)[::3]
    for m in gone:
        v.delete_manifest(m)
    assert [m.id for m in Vault.open(url).manifests(T)] == [i for i in direct if i not in {m.id for m in gone}]
