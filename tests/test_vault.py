"""The vault: chunking, packs and tree manifests round-trip; dedup; format checks."""

import json
import os
import threading
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mulligan.errors import IntegrityError, UnsupportedFormat
from mulligan.storage import ObjectMissing
from mulligan.storage.faulty import FaultyStorage
from mulligan.storage.memory import MemoryStorage
from mulligan.vault import Vault, tree
from mulligan.vault.catalog import catalog_key
from mulligan.vault.packs import (T_TREE, ChunkIndex, Entry, decode_index, decode_pack_trailer, encode_index, index_key,
                                  pack_key, pack_rank)

PS = 512


def new_vault():
    name = os.urandom(6).hex()
    return Vault.create(f"memory://{name}")


def save(v, pages, tid="t-1", **kw):
    batches = [pages[i:i + 7] for i in range(0, len(pages), 7)]
    return v.save_pages(target_id=tid, target_name="t", page_size=PS, batches=batches, time="2026-01-01T00:00:00.000Z",
                        **kw)


def read_back(v, m):
    out = [None] * m.page_count
    for pgnos, data in v.iter_pages(m):
        for p in pgnos:
            out[p - 1] = data
    return out


pages_strategy = st.lists(
    st.one_of(st.binary(min_size=PS, max_size=PS), st.sampled_from([bytes(PS), b"\x01" * PS])),
    min_size=0, max_size=300,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages_strategy)
def test_any_list_of_pages_round_trips_through_the_vault(pages):
    v = new_vault()
    m = save(v, pages)
    assert m.page_count == len(pages)
    assert read_back(v, m) == pages
    pairs = [pair for batch in v.iter_page_batches(m) for pair in batch]
    assert sorted(p for p, _ in pairs) == list(range(1, len(pages) + 1)), "every page exactly once"
    assert all(pages[p - 1] == data for p, data in pairs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=16, max_size=16), max_size=5000), min_size=1, max_size=4))
def test_chunk_id_trees_expand_to_exactly_the_ids_they_were_built_from(lists):
    """Several trees of any depths expanded at once, a level of all of them a call."""
    nodes = {}
    calls = []

    def store(node):
        key = os.urandom(16)
        nodes[key] = node
        return key

    def load_many(level):
        calls.append(len(level))
        return {n: nodes[n] for n in level}

    trees = {k: tree.build(b"".join(ids), store) for k, ids in enumerate(lists)}
    assert tree.expand_many(trees, load_many) == {k: b"".join(ids) for k, ids in enumerate(lists)}
    assert len(calls) == max(depth for _root, depth in trees.values())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**11), min_size=1, max_size=3000),
       st.lists(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 2**11)), max_size=40), min_size=1, max_size=6),
       st.integers(1, 50))
def test_reachable_over_many_trees_is_the_union_of_each_trees_nodes_and_leaves(first, edits, batch):
    """Trees of successive states (a few pages changed, some added or cut) share subtrees;
    prune's walk over all of them at once must find exactly what walking each one finds."""
    import blake3

    nodes = {}

    def store(node):  # content-addressed, as in the vault: equal nodes are one node
        key = blake3.blake3(node).digest(16)
        nodes[key] = node
        return key

    def pid(n):
        return n.to_bytes(16, "big")

    states = [[pid(n) for n in first]]
    for changes in edits:
        s = list(states[-1])
        for at, value in changes:
            if at < len(s):
                s[at] = pid(value)
            else:
                s.append(pid(value))
        states.append(s[: max(1, len(s) - len(changes) % 3)])
    trees = [tree.build(b"".join(s), store) for s in states]
    expected = set()
    for (root, depth), s in zip(trees, states):
        expected |= set(tree.node_ids(root, depth, nodes.__getitem__)) | set(s)
    reads = []

    def load_many(ids):
        reads.extend(ids)
        return [(i, nodes[i]) for i in ids]

    counts = {}
    assert tree.reachable(trees, load_many, batch=batch, counts=counts) == expected
    assert len(reads) == len(set(reads)), "each node read once"
    assert all(counts[t] == len(s) for t, s in zip(trees, states)), "each tree's number of leaves"
    # verify's walk: the leaves handed over a batch at a time, the result only the nodes
    handed: set[bytes] = set()
    nodes_only = tree.reachable(trees, load_many, batch=batch, leaves=handed.update)
    assert handed == set().union(*states)
    assert nodes_only == set().union(*(tree.node_ids(root, depth, nodes.__getitem__) for root, depth in trees))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.integers(0, 2), st.integers(0, 2**40),
                          st.integers(0, 2**31), st.integers(0, 2**31), st.integers(0, 2**31)), max_size=50))
def test_pack_indexes_decode_to_what_was_encoded(entries):
    pid = os.urandom(16)
    assert decode_index(encode_index([(pid, entries)])) == {pid: entries}


# A block at an offset has one stored length, whatever chunks it holds: derived from the offset
# (entries of one block naming two lengths are no pack a writer makes).
entry_lists = st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.integers(0, 3), st.integers(0, 2**40),
                                 st.integers(0, 2**31), st.integers(0, 2**31))
                       .map(lambda t: (t[0], t[1], t[2], (t[2] * 7 + 3) % 2**31, t[3], t[4])), max_size=30)


def _best_entries(objects: list) -> dict:
    """The model: for each chunk, the entry of the best-ranked pack holding it (within one
    pack, its last entry), over the given index objects."""
    best: dict = {}
    for packs in objects:
        for pid, ents in packs:
            rank = pack_rank(pid, len(ents), bool(ents) and ents[0][1] == 3)  # type 3: a repacked page
            for e in ents:
                old = best.get(e[0])
                if old is None or old[0] <= rank:
                    best[e[0]] = (rank, Entry(pid, *e[1:]))
    return {c: e for c, (_, e) in best.items()}


@settings(max_examples=80, deadline=None)
@given(st.lists(entry_lists, min_size=1, max_size=4), st.integers(0, 3), st.randoms(use_true_random=False),
       st.integers(0, 40))
def test_the_chunk_index_reads_a_chunk_stored_twice_from_the_repacked_or_larger_pack_whatever_the_load_order(
        objects, n_written, rnd, n_singles):
    # Each object's second pack repeats its first entry; objects may repeat each other's chunks.
    # Between loads, chunks are asked for the way a restore asks (group), one by one (get, past
    # the point where the index settles everything) and as writers ask (in): same answers.
    built = [[(os.urandom(16), entries), (os.urandom(16), entries[:1])] for entries in objects]
    everything = _best_entries(built)
    written = {os.urandom(16): Entry(os.urandom(16), 0, 1, 2, 3, 4) for _ in range(n_written)}
    if everything and n_written:  # a chunk this process stored itself keeps the place it was stored at
        written[next(iter(everything))] = Entry(os.urandom(16), 0, 5, 6, 7, 8)
    for order in (built, rnd.sample(built, len(built))):
        idx2 = ChunkIndex()
        mine: dict = {}
        for i, packs in enumerate(order):
            if i == len(order) // 2:
                idx2.update(written)
                mine = written
            idx2.add_index(encode_index(packs))
            expect = {**_best_entries(order[: i + 1]), **mine}
            asked = rnd.sample(sorted(expect), min(len(expect), rnd.randint(0, 6))) + [b"y" * 16]
            by_pack, missing = idx2.group(dict.fromkeys(asked))
            assert missing == [b"y" * 16]
            for pid, blocks in by_pack.items():
                for off, (slen, chunks) in blocks.items():
                    for inner, length, cid, _ in chunks:
                        e = expect[cid]
                        assert (e.pack, e.offset, e.stored_len, e.length, e.inner) == (pid, off, slen, length, inner)
            for cid in rnd.sample(sorted(expect), min(len(expect), n_singles // 4)):
                assert idx2.get(cid) == expect[cid]
        expect = {**everything, **written}
        for cid in rnd.sample(sorted(expect), min(len(expect), n_singles)):
            assert idx2.get(cid) == expect[cid]
        assert len(idx2) == len(expect) and set(idx2) == set(expect)
        assert all(idx2[c] == e and idx2.get(c) == e and c in idx2 for c, e in expect.items())
        assert idx2.get(b"x" * 16) is None and b"x" * 16 not in idx2


def test_a_damaged_index_object_is_an_integrity_error():
    data = encode_index([(os.urandom(16), [(os.urandom(16), 0, 0, 10, 4096, 0)] * 3)])
    for bad in (b"junk" + data[4:], data[:-5]):
        with pytest.raises(IntegrityError):
            ChunkIndex().add_index(bad)


def test_a_second_snapshot_of_unchanged_pages_stores_no_new_chunks():
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(500)]
    first = save(v, pages)
    second = save(v, pages)
    assert first.new_chunks > 500
    assert second.new_chunks == 0
    assert read_back(v, second) == pages


def test_changing_a_few_pages_stores_only_those_pages_and_a_few_tree_nodes():
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(64 * 64 * 2)]
    save(v, pages)
    for i in (5, 3000, 7000):
        pages[i] = os.urandom(PS)
    m = save(v, pages)
    # 3 pages, 3 leaf nodes, a few upper nodes: the manifest cost follows the change.
    assert m.new_chunks <= 3 + 3 * 3
    assert read_back(v, m) == pages


def test_a_vault_of_an_unknown_format_version_is_refused(tmp_path):
    v = Vault.create(str(tmp_path / "v"))
    cfg = json.loads(v.storage.get("config"))
    cfg["format_version"] = 99
    v.storage.put("config", json.dumps(cfg).encode(), overwrite=True)
    with pytest.raises(UnsupportedFormat) as e:
        Vault.open(str(tmp_path / "v"))
    assert e.value.exit_code == 4 and "version 99" in e.value.message


def test_a_vault_using_an_unknown_feature_is_refused(tmp_path):
    v = Vault.create(str(tmp_path / "v"))
    cfg = json.loads(v.storage.get("config"))
    cfg["features"].append("time-travel")
    v.storage.put("config", json.dumps(cfg).encode(), overwrite=True)
    with pytest.raises(UnsupportedFormat, match="time-travel"):
        Vault.open(str(tmp_path / "v"))


def test_creating_a_vault_where_one_exists_is_refused(tmp_path):
    Vault.create(str(tmp_path / "v"))
    with pytest.raises(Exception, match="already exists"):
        Vault.create(str(tmp_path / "v"))


def test_a_flipped_byte_in_a_pack_is_caught_on_read(tmp_path):
    v = Vault.create(str(tmp_path / "v"))
    pages = [os.urandom(PS) for _ in range(20)]
    m = save(v, pages)
    key = next(k for k, _ in v.storage.list("packs/"))
    body = bytearray(v.storage.get(key))
    body[100] ^= 0xFF
    v.storage.put(key, bytes(body), overwrite=True)
    v2 = Vault.open(str(tmp_path / "v"))
    with pytest.raises(IntegrityError):
        read_back(v2, m)


@pytest.mark.parametrize("damage", ["header", "body", "truncated"])
def test_blocks_decompressed_together_name_a_damaged_one(damage):
    """Blocks of a pack are decompressed in one call; a damaged block among good ones is an
    integrity error naming where it is, whatever part of the frame was hit."""
    from mulligan.vault.codec import PlainCodec

    codec = PlainCodec()
    raws = [os.urandom(2000) * 8 for _ in range(5)]
    blobs = codec.pack_blobs(raws)
    assert [bytes(b) for b in codec.decompress_many(blobs)] == raws
    bad = bytearray(blobs[3])
    if damage == "header":
        bad[:8] = b"garbage!"
    elif damage == "body":
        bad[len(bad) // 2] ^= 0xFF
        bad[len(bad) // 2 + 1] ^= 0xFF
    else:
        del bad[len(bad) // 2 :]
    blobs[3] = bytes(bad)
    try:
        out = codec.decompress_many(blobs, "in packs/ab/cd")
    except IntegrityError as exc:
        assert "in packs/ab/cd" in str(exc)
    else:  # zstd frames carry no checksum here: a body hit can decompress to other bytes, which the
        assert bytes(out[3]) != raws[3]  # page hash then catches (test_a_flipped_byte_in_a_pack_is_caught_on_read)
        assert [bytes(b) for i, b in enumerate(out) if i != 3] == raws[:3] + raws[4:]


def test_small_packs_read_together_give_every_page_and_name_a_damaged_pack(tmp_path):
    """A restore hands the reading thread several small packs at once (a captured history's
    flushes): every page still comes back right, and a damaged block names its own pack."""
    v = Vault.create(str(tmp_path / "v"))
    pages = [os.urandom(PS) for _ in range(40)]
    ms = [save(v, pages)]
    for k in range(12):  # each snapshot stores its changed pages in a pack of its own
        pages = list(pages)
        for i in range(k, 40, 7):
            pages[i] = os.urandom(PS)
        ms.append(save(v, pages))
    fresh = Vault.open(str(tmp_path / "v"))
    assert read_back(fresh, ms[-1]) == pages
    packs = sorted(k for k, _ in v.storage.list("packs/"))
    assert len(packs) >= 13
    ids = set(fresh.page_ids(ms[-1]))
    idx = fresh.index()
    used = sorted({pack_key(idx[c].pack) for c in ids})
    assert len(used) >= 3, "the last state's pages live in several packs"
    victim = used[len(used) // 2]
    entry = next(idx[c] for c in ids if pack_key(idx[c].pack) == victim)
    body = bytearray(v.storage.get(victim))
    body[entry.offset : entry.offset + 8] = b"garbage!"
    v.storage.put(victim, bytes(body), overwrite=True)
    with pytest.raises(IntegrityError) as err:
        read_back(Vault.open(str(tmp_path / "v")), ms[-1])
    assert victim in str(err.value)


def test_pages_compressed_together_in_blocks_are_each_readable_alone(tmp_path):
    v = Vault.create(str(tmp_path / "v"))
    pages = [os.urandom(PS // 2) * 2 for _ in range(200)]
    m = save(v, pages)
    ids = v.page_ids(m)
    fresh = Vault.open(str(tmp_path / "v"))
    for i in (0, 57, 199):
        assert fresh.load_chunk(ids[i]) == pages[i]
    entries = fresh.index()
    assert len({(e.pack, e.offset) for e in entries.values()}) < len(entries), "blocks hold several chunks"


def test_a_pack_carries_its_own_index_in_its_trailer(tmp_path):
    v = Vault.create(str(tmp_path / "v"))
    save(v, [os.urandom(PS) for _ in range(10)])
    key = next(k for k, _ in v.storage.list("packs/"))
    entries = decode_pack_trailer(v.storage.get(key), key)
    assert len(entries) >= 10


def test_memory_storage_is_shared_by_name():
    a = MemoryStorage("shared-x")
    a.put("k", b"v")
    assert MemoryStorage("shared-x").get("k") == b"v"


def test_a_long_lived_vault_does_not_dedup_against_chunks_a_prune_removed_meanwhile():
    """A Vault object keeps its chunk index between snapshots (a long-running process: Django, a
    library user). A prune in another process may delete packs in between; the next snapshot
    must not deduplicate against them, or its manifest names data that no longer exists."""
    from types import SimpleNamespace

    from mulligan.ops.prune import PruneResult, _collect, referenced_chunks

    name = os.urandom(6).hex()
    v1 = Vault.create(f"memory://{name}")
    pages = [os.urandom(PS) for _ in range(20)]
    m1 = save(v1, pages)
    # Another process prunes the only restore point and its data.
    v2 = Vault.open(f"memory://{name}")
    v2.delete_manifest(m1)
    ws = SimpleNamespace(vault=v2)
    res = PruneResult(target="t")
    _collect(ws, referenced_chunks(ws), res)
    assert res.packs_removed >= 1
    m2 = save(v1, pages)
    fresh = Vault.open(f"memory://{name}")
    assert read_back(fresh, fresh.manifest("t-1", m2.id)) == pages


def test_an_index_removed_between_listing_and_reading_is_skipped():
    """Index objects are replaced (prune rewrites them, watch merges the small ones): one that
    vanishes after the listing is not an error for a reader; a later miss lists again."""
    v = new_vault()
    m = save(v, [os.urandom(PS) for _ in range(5)])
    st = v.storage
    real_list = st.list

    def list_with_ghost(prefix=""):
        items = list(real_list(prefix))
        if prefix == "index/":
            items.append(("index/ffffffffffffffffffffffffffffffff", 10))
        return iter(sorted(items))

    st.list = list_with_ghost
    reader = Vault(st, v.config)
    assert len(read_back(reader, m)) == 5


@pytest.mark.parametrize("lean", [False, True])
def test_index_objects_merged_while_a_reader_looks_its_chunks_up_leave_none_missing(lean):
    """watch merges its small index objects every half minute: a restore reading the index in
    part while that happens finds a listed object gone, and the merged one (written first) may
    be missing from its listing. The chunks still missing are looked for in a new listing."""
    from mulligan.storage import ObjectMissing
    from mulligan.vault.packs import merge_indexes

    v = new_vault()
    points = [save(v, [os.urandom(PS) for _ in range(40)]) for _ in range(3)]
    st = v.storage
    real_get = st.get
    merged = []

    def get_while_merging(key):
        if key.startswith("index/") and not merged:  # the first object read is merged away now
            objects = [(k, real_get(k)) for k, _ in st.list("index/")]
            merged.append(index_key(os.urandom(16)))
            st.put(merged[0], merge_indexes(objects))
            for k, _ in objects:
                st.delete(k)
            raise ObjectMissing(key)
        return real_get(key)

    expect = [read_back(Vault(v.storage, v.config), m) for m in points]
    reader = Vault(st, v.config)
    reader.lean = lean
    st.get = get_while_merging
    assert [read_back(reader, m) for m in points] == expect
    assert merged


def test_verify_while_index_objects_and_packs_are_replaced_reports_no_damage(project):
    """watch merges its small index objects and prune rewrites indexes then deletes packs, while
    verify may be running: an index or pack that was listed and is gone when verify reads it was
    replaced or pruned, not damaged. verify notes it; it is not an integrity failure (exit 4)."""
    from conftest import make_db

    from mulligan.ops.verify import verify

    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    ws = project.ws
    st = ws.vault.storage
    real_list = st.list

    def list_with_ghosts(prefix=""):
        items = list(real_list(prefix))
        if prefix == "index/":
            items.append(("index/" + "ab" * 16, 10))
        if prefix == "packs/":
            items.append(("packs/cd/" + "cd" * 16, 10))
        return iter(sorted(items))

    st.list = list_with_ghosts
    res = verify(ws)
    assert res.ok, res.problems
    assert any("ab" * 16 in n for n in res.notes) and any("cd" * 16 in n for n in res.notes)


def test_verify_still_reports_a_pack_that_an_index_names_and_is_gone(project):
    from conftest import make_db

    from mulligan.ops.verify import verify

    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    st = project.ws.vault.storage
    for key, _ in list(st.list("packs/")):
        st.delete(key)
    res = verify(project.ws)
    assert not res.ok
    assert any(p["problem"] == "pack named by an index is missing" for p in res.problems)


def test_a_damaged_pack_written_while_verify_ran_is_reported(project, monkeypatch):
    """A restore point stored after verify listed the packs (a running watch's base, a nightly
    snapshot) has its chunks in packs verify had not read: they were noted unread and verify
    passed, damaged or not. They are read at the end now."""
    from conftest import make_db

    from mulligan.ops import verify as verify_mod

    db = make_db(project.dir / "app.db")
    project.protect(db)
    assert project.call("snapshot", "app").code == 0
    st = project.ws.vault.storage
    real = verify_mod._manifests

    def snapshot_meanwhile(*a):
        before = {k for k, _ in st.list("packs/")}
        make_db(db, rows=200, payload=900)  # new pages
        assert project.call("snapshot", "app").code == 0
        new = sorted(k for k, _ in st.list("packs/") if k not in before)
        assert new
        body = bytearray(st.get(new[0]))
        body[len(body) // 3] ^= 0xFF
        st.put(new[0], bytes(body), overwrite=True)
        return real(*a)

    monkeypatch.setattr(verify_mod, "_manifests", snapshot_meanwhile)
    res = verify_mod.verify(project.ws)
    assert not res.ok, res.notes
    assert any(p["object"].startswith("packs/") for p in res.problems), res.problems
    assert any("were read at the end" in n for n in res.notes), res.notes


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"a string"'])
def test_a_damaged_manifest_is_an_integrity_error_wherever_it_is_read(body):
    """restore --snapshot ID, a prefix, the ref to the latest point: a damaged manifest is exit 4
    with a hint, never a JSONDecodeError or AttributeError traceback."""
    v = new_vault()
    m = save(v, [os.urandom(PS) for _ in range(3)])
    v.storage.put(m.key, body, overwrite=True)
    with pytest.raises(IntegrityError):
        v.manifest("t-1", m.id)
    with pytest.raises(IntegrityError):
        v.resolve(m.id[:6])
    v.storage.delete(catalog_key("t-1"))  # (one write in 32 stores a catalog: the next test covers it)
    with pytest.raises(IntegrityError):
        Vault(v.storage, v.config).manifests("t-1")  # another process, no catalog: reads the manifest


def test_verify_reports_a_manifest_that_is_json_but_not_an_object(project):
    from conftest import make_db

    from mulligan.ops.verify import verify

    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    st = project.ws.vault.storage
    key = next(k for k, _ in st.list("snapshots/"))
    st.put(key, b"[1, 2]", overwrite=True)
    res = verify(project.ws)
    assert any(p["object"] == key for p in res.problems)


@pytest.mark.parametrize("damage", ["page count", "unknown root", "root not hex", "missing leaf"])
def test_verify_names_exactly_the_restore_point_whose_tree_is_damaged(project, damage):
    """Trees are walked together (shared nodes read once); a damaged one is still named alone."""
    from conftest import make_db

    from mulligan.ops.verify import verify
    from mulligan.vault.manifest import Manifest

    db = make_db(project.dir / "app.db")
    project.protect(db)
    for rows in (0, 50, 50):
        make_db(db, rows=rows)
        project.call("snapshot", "app")
    v = project.ws.vault
    a, b, c = v.manifests(project.ws.target("app").id, direct=True)
    assert verify(project.ws).ok
    bad = Manifest.decode(b.encode())
    if damage == "page count":
        bad.page_count += 1
    elif damage == "unknown root":
        bad.root = os.urandom(16).hex()
    elif damage == "root not hex":
        bad.root = "zz" * 16
    else:  # a leaf id no pack holds: a tree over the real pages and one more
        ids = v.page_ids(b) + [os.urandom(16)]
        bad.root, bad.depth = (x.hex() if isinstance(x, bytes) else x for x in
                               tree.build(b"".join(ids), lambda node: _store_node(v, node)))
        bad.page_count = len(ids)
    v.storage.put(b.key, bad.encode(), overwrite=True)
    res = verify(project.ws)
    assert [p["object"] for p in res.problems] == [b.key], res.problems


def _store_node(v, node):
    from mulligan.vault.packs import T_TREE, PackWriter

    cid = v.codec.chunk_id(node)
    w = PackWriter(v.storage, codec=v.codec)
    w.add_raw(cid, T_TREE, node)
    w.flush()
    v._absorb(w)
    return cid


@pytest.mark.parametrize("failing", ["packs/", "index/", "snapshots/"])
def test_a_write_failing_at_any_step_of_a_snapshot_leaves_no_restore_point_and_the_next_one_works(tmp_path, failing):
    """The ordering invariant with a storage that fails: pack, then index, then manifest.
    Whichever write fails, no manifest names missing data, and a retry stores a good point."""
    from mulligan.errors import StorageError
    from mulligan.storage.faulty import FaultyStorage
    from mulligan.storage.local import LocalStorage
    from mulligan.ops.verify import verify
    from mulligan.ops.workspace import Workspace

    good = Vault.create(str(tmp_path / "v"))
    broken = Vault(FaultyStorage(LocalStorage(tmp_path / "v"), fail_put=lambda key: key.startswith(failing)),
                   good.config)
    pages = [os.urandom(PS) for _ in range(300)]
    with pytest.raises(StorageError):
        save(broken, pages)
    fresh = Vault.open(str(tmp_path / "v"))
    assert fresh.manifests() == []
    m = save(fresh, pages)
    assert read_back(Vault.open(str(tmp_path / "v")), m) == pages

    class _Config:
        targets: dict = {}

    res = verify(Workspace(_Config(), Vault.open(str(tmp_path / "v"))))
    assert res.ok, res.problems


@settings(max_examples=60, deadline=None)
@given(st.lists(entry_lists, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_chunks_located_one_index_object_at_a_time_are_the_copies_the_whole_index_reads(objects, rnd):
    built = [[(os.urandom(16), entries), (os.urandom(16), entries[:1])] for entries in objects]
    everything = _best_entries(built)
    vault = new_vault()
    for packs in rnd.sample(built, len(built)):
        vault.storage.put(index_key(os.urandom(16)), encode_index(packs))
    asked = rnd.sample(sorted(everything), min(len(everything), rnd.randint(0, 8))) + [b"y" * 16]
    found = vault.locate(asked)
    assert {c: found.get(c) for c in asked} == {c: everything.get(c) for c in asked}
    assert vault._index is None  # nothing cached: a long-running process's memory stays put


def test_a_lean_vault_reads_states_and_deduplicates_without_loading_the_index():
    """A watcher's vault (Vault.lean) never loads the whole chunk index: reads look their chunks
    up one index object at a time, tree nodes read are kept, and a writer deduplicates against
    the chunks it was told the vault holds."""
    writer = new_vault()
    pages = [os.urandom(PS) for _ in range(300)] + [bytes(PS)] * 3
    first = save(writer, pages)
    other = save(writer, [os.urandom(PS) for _ in range(200)])
    lean = Vault(writer.storage, writer.config)
    lean.lean = True
    assert read_back(lean, first) == pages
    assert lean.page_ids(first) == writer.page_ids(first)
    idx = lean._index
    assert not idx._segments and not idx._pending
    assert all(e[1] == T_TREE for e in idx._written.values())  # the nodes read, nothing else
    ids = writer.page_ids(first)
    assert lean.know_present(ids + [b"z" * 16]) == len(set(ids))
    assert all(c in idx for c in ids) and b"z" * 16 not in idx
    assert not any(c in idx for c in writer.page_ids(other))
    assert lean.load_chunk(ids[5]) == pages[5]  # known present, found where it is
    # A snapshot on the lean vault deduplicates only against what it looks up with its writer
    # lease held (a prune may delete packs until then): the likely pages, not what it was told.
    unaware = Vault(writer.storage, writer.config)
    unaware.lean = True
    unaware.know_present(ids)
    assert save(unaware, pages).new_chunks >= len(set(ids))  # told before its lease: not used
    again = save(lean, pages, likely=lambda: ids)  # stores none of those pages again
    assert again.new_chunks <= again.page_count // 16 + 2  # tree nodes at most

    # Several points' page lists (the rollback matcher's window): one pass over the index
    # objects a tree level, not one per point and level.
    points = [save(writer, [os.urandom(PS) for _ in range(n)]) for n in (70, 130, 5000)]
    fresh = Vault(writer.storage, writer.config)
    fresh.lean = True
    passes = []
    real = fresh.locate
    fresh.locate = lambda wanted, **kw: passes.append(1) or real(wanted, **kw)
    got = fresh.page_ids_many(points)
    assert got == {m.id: writer.page_ids(m) for m in points}
    assert len(passes) == max(m.depth for m in points) > 1


def test_a_reader_over_a_large_index_reads_it_one_object_at_a_time():
    """A restore whose vault's index objects are large (a long, busy capture) reads every tree
    node in one pass and its pages in one more, holding one index object at a time."""
    writer = new_vault()
    points = [save(writer, [os.urandom(PS) for _ in range(n)]) for n in (40, 3000, 700)]
    small = Vault(writer.storage, writer.config)
    assert not small.lean_if_large() and not small.lean  # a small index is loaded as before
    reader = Vault(writer.storage, writer.config)
    assert reader.lean_if_large(limit=0) and reader.lean
    passes = []
    real = reader.locate
    reader.locate = lambda wanted, **kw: passes.append(kw.get("tree", False)) or real(wanted, **kw)
    for m in points:
        assert read_back(reader, m) == read_back(writer, m)
    assert passes == [False, False, False]  # one pass each for the pages; the nodes were all read first
    assert not reader._index._segments and not reader._index._pending


@pytest.mark.parametrize("lean", [False, True])
@pytest.mark.parametrize("damage", ["magic", "truncated"])
def test_a_damaged_index_object_is_passed_over_and_named_when_a_chunk_is_missing(lean, damage):
    """One damaged index object used to fail every read of the vault (and stop watch from
    capturing anything): it is passed over; what other objects name reads as before, and a
    chunk named only there is missing with the object named."""
    writer = new_vault()
    first_pages = [os.urandom(PS) for _ in range(50)]
    first = save(writer, first_pages)
    first_keys = {k for k, _ in writer.storage.list("index/")}
    second_pages = [os.urandom(PS) for _ in range(60)]
    second = save(writer, second_pages)
    (bad,) = first_keys
    data = writer.storage.get(bad)
    writer.storage.put(bad, b"XXXX" + data[4:] if damage == "magic" else data[:-7], overwrite=True)
    reader = Vault(writer.storage, writer.config)
    reader.lean = lean
    assert read_back(reader, second) == second_pages
    assert bad in reader.index_problems and len(reader.index_problems) == 1
    with pytest.raises(IntegrityError) as exc:
        read_back(reader, first)
    assert bad in exc.value.message and "not in any pack" in exc.value.message
    again = save(reader, first_pages)  # a writer stores what it cannot find again
    assert read_back(Vault(writer.storage, writer.config), again) == first_pages


def test_tree_nodes_the_cached_index_forgot_are_found_in_the_vault():
    """A watcher drops the tree nodes of its older bases from its cached index (its memory grew
    with every base); reading such a base again looks in every index object, although the ones
    holding those nodes count as loaded."""
    vault = new_vault()
    pages = [os.urandom(PS) for _ in range(300)]
    first = save(vault, pages)
    idx = vault.index()
    nodes = [c for c, e in idx._written.items() if e[1] == T_TREE]
    assert nodes
    idx.forget(nodes)
    assert not any(c in idx for c in nodes)
    assert read_back(vault, first) == pages
    assert vault.page_ids(first) == [vault.codec.chunk_id(p) for p in pages]


def test_restore_points_removed_by_another_process_leave_the_cached_manifests():
    vault = new_vault()
    points = [save(vault, [os.urandom(PS)]) for _ in range(5)]
    assert len(vault.manifests("t-1")) == 5
    other = Vault(vault.storage, vault.config)
    for m in points[:3]:
        other.delete_manifest(m)  # a prune in another process
    assert sorted(m.id for m in vault.manifests("t-1")) == sorted(m.id for m in points[3:])
    assert sorted(vault._known) == sorted(m.key for m in points[3:])


def test_a_reader_whose_index_predates_a_write_finds_the_new_chunks():
    """A vault opened (index loaded) before another writer stored a state reads that state:
    a miss reloads the index objects instead of calling the chunks missing."""
    name = os.urandom(6).hex()
    writer = Vault.create(f"memory://{name}")
    first = save(writer, [os.urandom(PS) for _ in range(30)])
    reader = Vault.open(f"memory://{name}")
    assert read_back(reader, first)  # index loaded now
    pages = [os.urandom(PS) for _ in range(40)] + [bytes(PS)] * 3
    other = Vault.open(f"memory://{name}")
    second = save(other, pages)
    ids = other.page_ids(second)
    assert dict(reader.iter_chunks(ids)) == dict(zip(ids, pages))  # the reader has not seen the new tree either
    assert read_back(reader, second) == pages
    pairs = sorted(pair for batch in reader.iter_page_batches(second) for pair in batch)
    assert pairs == list(enumerate(pages, 1))


def test_small_index_objects_are_merged_and_every_state_still_reads_back(monkeypatch):
    from mulligan.vault import vault as vault_mod

    monkeypatch.setattr(vault_mod, "INDEX_OBJECTS_MAX", 8)
    name = os.urandom(6).hex()
    v = Vault.create(f"memory://{name}")
    early_reader = Vault.open(f"memory://{name}")
    pages = [os.urandom(PS) for _ in range(20)]
    states = []
    for i in range(30):
        pages[i % 20] = os.urandom(PS)
        states.append((save(v, pages), list(pages)))
        if i == 2:
            assert read_back(early_reader, states[0][0]) == states[0][1]  # its index is loaded now
        assert len(list(v.storage.list("index/"))) <= 9
    fresh = Vault.open(f"memory://{name}")
    for m, expected in states:
        assert read_back(fresh, m) == expected
        assert read_back(v, m) == expected
        assert read_back(early_reader, m) == expected  # its index objects are gone: it looks again
    # the merged objects index every pack exactly once
    from mulligan.vault.packs import decode_index

    named = [p for key, _ in v.storage.list("index/") for p in decode_index(v.storage.get(key))]
    assert len(named) == len(set(named)) == len(list(v.storage.list("packs/")))


def test_merging_index_objects_keeps_each_pack_once():
    from mulligan.vault.packs import decode_index, encode_index, merge_indexes

    a = [(os.urandom(16), 0, 0, 10, 4096, 0), (os.urandom(16), 0, 10, 12, 4096, 0)]
    b = [(os.urandom(16), 1, 0, 8, 100, 0)]
    p1, p2 = os.urandom(16), os.urandom(16)
    one, two = encode_index([(p1, a)]), encode_index([(p2, b)])
    both = encode_index([(p1, a), (p2, b)])  # an object merged earlier, its sources still there
    merged = merge_indexes([("index/1", one), ("index/m", both), ("index/2", two)])
    assert decode_index(merged) == {p1: a, p2: b}
    assert len(merged) == len(both)
    with pytest.raises(IntegrityError):
        merge_indexes([("index/1", one), ("index/bad", b"MIX2" + b"\x01" * 30)])


def test_the_latest_point_of_a_target_never_captured_needs_no_scan_of_its_manifests():
    from mulligan.model import Target
    from mulligan.ops.capture_store import latest_point

    v = new_vault()
    target = Target(name="t", path="/nowhere/t.db", env="test", id="t-1")
    assert latest_point(v, target) is None
    save(v, [os.urandom(PS) for _ in range(5)])
    m = v.save_pages(target_id="t-1", target_name="t", page_size=PS, batches=[[os.urandom(PS)] * 3],
                     time="2026-01-02T00:00:00.000Z")
    v.manifests = lambda *a, **k: pytest.fail("every manifest of the target was read")
    assert latest_point(v, target).id == m.id


class SlowStore(FaultyStorage):
    """A store a round trip away: every read waits 20 ms; counts the reads in flight at once.

    Until ``gather`` reads have been in flight together, a read also waits (up to 0.25 s) for the
    others: on a loaded machine a pool's threads do not always overlap within 20 ms, and a
    count that depends on it fails now and then (seen in CI: 8 of 10 at once)."""

    def __init__(self, inner, read_ahead, gather: int = 0):
        super().__init__(inner)
        self.read_ahead, self.now, self.most, self.gather = read_ahead, 0, 0, gather
        self.lock = threading.Condition()

    def _slow(self, fn, *args):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.lock.notify_all()
            self.lock.wait_for(lambda: self.most >= self.gather, timeout=0.25)
        time.sleep(0.02)
        try:
            return fn(*args)
        finally:
            with self.lock:
                self.now -= 1

    def get(self, key):
        return self._slow(super().get, key)

    def get_range(self, key, offset, length):
        return self._slow(super().get_range, key, offset, length)


@pytest.mark.parametrize("ahead", [1, 4])
def test_reads_kept_in_flight_follow_the_storage_and_pages_come_back_in_order(monkeypatch, ahead):
    """An object store's restore keeps several ranged reads in flight (Storage.read_ahead), a
    local one one: either way every page comes back once, right, and parts in order."""
    from mulligan.vault import vault as vault_mod

    monkeypatch.setattr(vault_mod, "GROUP_BLOCKS", 2)  # many small parts
    monkeypatch.setattr(vault_mod, "PART_BLOCKS", 2)
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(3000)]
    m = save(v, pages)
    v.storage = slow = SlowStore(v.storage, ahead, gather=ahead)
    batches = list(v.iter_page_batches(m))
    assert len(batches) >= 8
    pairs = [pair for batch in batches for pair in batch]
    assert sorted(p for p, _ in pairs) == list(range(1, len(pages) + 1))
    assert all(pages[p - 1] == data for p, data in pairs)
    firsts = [min(p for p, _ in batch) for batch in batches]
    assert firsts == sorted(firsts), "parts handed over out of order"
    assert slow.most == ahead


@pytest.mark.parametrize("ahead,budget", [(1, None), (4, None), (4, "two objects")])
def test_index_objects_load_with_the_storages_reads_in_flight_and_skip_ones_gone(monkeypatch, ahead, budget):
    """Index objects (and segments) are fetched up to four per read_ahead at once on an object
    store, within GET_MANY_BYTES; one after another on a local one."""
    from mulligan.vault import vault as vault_mod

    v = new_vault()
    pages = [os.urandom(PS) for _ in range(20)]
    for k in range(10):  # each snapshot leaves an index object of its own
        pages[k] = os.urandom(PS)
        m = save(v, pages)
    listed = list(v.storage.list("index/"))
    keys = [k for k, _ in listed]
    assert len(keys) >= 10
    if budget:
        monkeypatch.setattr(vault_mod, "GET_MANY_BYTES", 2 * max(size for _, size in listed))
    slow = SlowStore(v.storage, ahead, gather=2 if budget else (1 if ahead == 1 else len(keys)))
    gone = keys[3]
    real_get = FaultyStorage.get

    def get(self, key):
        if key == gone:  # deleted between the listing and the read (a merge replaced it)
            raise ObjectMissing(key)
        return real_get(self, key)

    slow.get = types.MethodType(lambda self, key: self._slow(get, self, key), slow)
    fresh = Vault(slow, v.config)
    idx = fresh.index()
    if budget:  # in flight at once: never more objects than fit in the budget together
        cap = 2 * max(size for _, size in listed)
        sizes = [size for _, size in listed]
        widest = max(max(k for k in range(1, len(sizes) - i + 1) if k == 1 or sum(sizes[i:i + k]) <= cap)
                     for i in range(len(sizes)))
        assert 2 <= slow.most <= widest < len(keys)
    else:
        assert slow.most == (1 if ahead == 1 else len(keys))
    assert fresh._loaded_index_keys == set(keys) - {gone}
    assert len(idx) == len(Vault(v.storage, v.config).index()) - sum(map(len, decode_index(v.storage.get(gone)).values()))
    assert read_back(Vault(v.storage, v.config), m) == pages


def test_small_packs_read_together_are_asked_for_at_once_from_an_object_store():
    """A part of several small packs (a captured history's flushes) asks for all their ranges
    at once on a store a round trip away, and every page still comes back right."""
    v = new_vault()
    pages = [os.urandom(PS) for _ in range(40)]
    save(v, pages)
    for k in range(12):  # each snapshot stores its changed pages in a pack of its own
        pages = list(pages)
        for i in range(k, 40, 7):
            pages[i] = os.urandom(PS)
        m = save(v, pages)
    slow = SlowStore(v.storage, 4)
    fresh = Vault(slow, v.config)
    fresh.index()
    slow.most, slow.gather = 0, 5
    assert read_back(fresh, m) == pages
    assert slow.most > 4, "the packs of one part were read one after another"


def test_merging_many_index_objects_holds_one_of_them_at_a_time(tmp_path):
    """A watcher merges its small index objects (up to 64 of up to 1 MiB) every so often. It held
    every one read, every section copied out of them and the merged object at once (three times
    their size: a step of ~40 MB in a busy watcher's resident memory that stayed); now the merged
    object and the object being read."""
    import tracemalloc

    from mulligan.vault import vault as vault_mod
    from mulligan.vault.packs import decode_index, encode_index, index_key

    v = Vault.create(str(tmp_path / "vault"))
    expected = {}
    for _ in range(vault_mod.INDEX_OBJECTS_MAX + 1):
        sections = [(os.urandom(16), [(os.urandom(16), 0, i * 10, 10, 4096, 0) for i in range(2500)])
                    for _ in range(8)]  # ~0.7 MB an object: "small"
        expected.update(sections)
        v.storage.put(index_key(os.urandom(16)), encode_index(sections))
    total = sum(size for _, size in v.storage.list("index/"))
    v.lean = True  # as a watcher's: it lists the vault's index objects to find the small ones
    tracemalloc.start()
    try:
        assert v.compact_indexes() == vault_mod.INDEX_OBJECTS_MAX + 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * total, f"{peak / total:.2f} times the objects merged"
    (key, _), = v.storage.list("index/")
    assert decode_index(v.storage.get(key)) == expected
