"""One conformance suite for every storage backend."""

import shutil
import threading

import pytest

from mulligan.storage import ObjectExists, ObjectMissing
from mulligan.storage.local import LocalStorage
from mulligan.storage.memory import MemoryStorage


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return _local(tmp_path / "store")
    if request.param == "s3":
        from mulligan.storage.s3 import S3Storage

        s3 = request.getfixturevalue("s3")
        return S3Storage(s3.url(s3.new_bucket()))
    return MemoryStorage()


def test_put_then_get_returns_the_same_bytes(storage):
    storage.put("a/b/c", b"hello")
    assert storage.get("a/b/c") == b"hello"
    assert storage.stat("a/b/c") == 5


def test_get_of_a_missing_key_raises_object_missing(storage):
    with pytest.raises(ObjectMissing):
        storage.get("nope")
    assert storage.stat("nope") is None


def _local(root):
    """A local backend whose folder exists, as creating a vault makes it (puts never do)."""
    s = LocalStorage(root)
    s.create_root()
    return s


def test_put_without_overwrite_refuses_an_existing_key_and_keeps_the_first(storage):
    storage.put("k", b"one")
    with pytest.raises(ObjectExists):
        storage.put("k", b"two")
    assert storage.get("k") == b"one"


def test_put_of_the_bytes_already_there_succeeds(storage):
    """A write retried after its answer was lost finds its own first attempt: that is not a
    conflict. Bytes of the same length that differ still are."""
    storage.put("k", b"one")
    storage.put("k", b"one")
    with pytest.raises(ObjectExists):
        storage.put("k", b"onf")
    assert storage.get("k") == b"one"


def test_put_with_overwrite_replaces(storage):
    storage.put("k", b"one")
    storage.put("k", b"two", overwrite=True)
    assert storage.get("k") == b"two"


def test_list_yields_keys_under_a_prefix_in_order(storage):
    for k in ["x/2", "x/1", "y/1", "x/10"]:
        storage.put(k, b".")
    assert [k for k, _ in storage.list("x/")] == ["x/1", "x/10", "x/2"]
    assert [k for k, _ in storage.list("x/1")] == ["x/1", "x/10"]
    assert len(list(storage.list(""))) == 4


def test_list_walks_nested_folders_and_filters_partial_names(storage):
    keys = {"s/t-1/aa": b"1", "s/t-1/ab": b"22", "s/t-2/aa": b"333", "s/u/v/w": b"4444", "st": b"5", "z": b""}
    for k, v in keys.items():
        storage.put(k, v)
    assert list(storage.list("s/")) == [("s/t-1/aa", 1), ("s/t-1/ab", 2), ("s/t-2/aa", 3), ("s/u/v/w", 4)]
    assert [k for k, _ in storage.list("s/t-")] == ["s/t-1/aa", "s/t-1/ab", "s/t-2/aa"]
    assert [k for k, _ in storage.list("s/t-1/a")] == ["s/t-1/aa", "s/t-1/ab"]
    assert [k for k, _ in storage.list("s")] == ["s/t-1/aa", "s/t-1/ab", "s/t-2/aa", "s/u/v/w", "st"]
    assert list(storage.list("nothing/")) == [] and list(storage.list("s/t-3")) == []
    assert sorted(storage.list("")) == sorted((k, len(v)) for k, v in keys.items())


def test_get_range_reads_part_of_an_object(storage):
    storage.put("k", b"0123456789")
    assert storage.get_range("k", 3, 4) == b"3456"


def test_get_range_past_the_end_gives_what_there_is(storage):
    """A truncated object reads short, as a file does: the vault compares the length it got."""
    storage.put("k", b"0123456789")
    assert storage.get_range("k", 8, 10) == b"89"
    assert storage.get_range("k", 12, 4) == b""
    with pytest.raises(ObjectMissing):
        storage.get_range("nope", 0, 4)


def test_delete_removes_and_is_idempotent(storage):
    storage.put("k", b"1")
    storage.delete("k")
    storage.delete("k")
    assert storage.stat("k") is None


def test_concurrent_put_if_absent_lets_exactly_one_writer_win(storage):
    wins, losses = [], []

    def put(i):
        try:
            storage.put("race", str(i).encode())
            wins.append(i)
        except ObjectExists:
            losses.append(i)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 1 and len(losses) == 7
    assert storage.get("race") == str(wins[0]).encode()


def test_local_storage_leaves_no_temporary_files_behind(tmp_path):
    s = _local(tmp_path / "store")
    s.put("a", b"x" * 10000)
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []
    assert [k for k, _ in s.list("")] == ["a"]


def test_local_storage_turns_unreadable_objects_into_storage_errors(tmp_path):
    """An object the OS will not read (permissions, an I/O error, a folder where a file should
    be) is a StorageError with the path, never an OSError traceback from the CLI."""
    from mulligan.errors import StorageError

    s = _local(tmp_path / "v")
    (tmp_path / "v" / "index").mkdir(parents=True)
    (tmp_path / "v" / "index" / "odd").mkdir()
    with pytest.raises(StorageError, match="index/odd"):
        s.get("index/odd")
    with pytest.raises(StorageError, match="index/odd"):
        s.get_range("index/odd", 0, 4)
    with pytest.raises(StorageError, match="index/odd"):
        s.delete("index/odd")


def test_local_storage_makes_new_folders_durable_before_an_object_in_them_counts(tmp_path, monkeypatch):
    """A put that creates packs/ab/ must fsync the folders whose entries it added (packs/ and
    the vault root), not only packs/ab/: after a power cut the pack's folder entry could be
    lost while the index written after it survives, an index naming a missing pack."""
    from mulligan.storage import local

    synced = []
    real = local._fsync_dir
    monkeypatch.setattr(local, "_fsync_dir", lambda p: (synced.append(str(p)), real(p)))
    s = _local(tmp_path / "v")
    s.put("config", b"{}")
    synced.clear()
    s.put("packs/ab/abcdef", b"pack")
    root = str(tmp_path / "v")
    assert root + "/packs/ab" in synced
    assert root + "/packs" in synced
    assert root in synced
    synced.clear()
    s.put("packs/ab/abcdeg", b"pack")  # the folders exist already: only the object's own folder
    assert synced == [root + "/packs/ab"]


def test_local_storage_delete_is_durable_before_it_returns(tmp_path, monkeypatch):
    """prune deletes an index, then the packs it named: if the index's removal were not durable
    first, a power cut could bring the index back while its pack stays gone."""
    from mulligan.storage import local

    s = _local(tmp_path / "v")
    s.put("index/abc", b"x")
    synced = []
    real = local._fsync_dir
    monkeypatch.setattr(local, "_fsync_dir", lambda p: (synced.append(str(p)), real(p)))
    s.delete("index/abc")
    assert synced == [str(tmp_path / "v" / "index")]
    synced.clear()
    s.delete("index/abc")  # already gone: nothing to make durable
    assert synced == []


def test_a_sweep_never_touches_objects(storage):
    storage.put("a/b", b"kept")
    assert storage.sweep(0) == (0, 0)
    assert storage.get("a/b") == b"kept"


def test_local_storage_sweeps_only_temporary_files_old_enough(tmp_path):
    import os
    import time

    s = _local(tmp_path / "store")
    s.put("packs/ab/x", b"object")
    tmp = tmp_path / "store" / ".tmp"
    old, new = tmp / "1-killed-mid-write", tmp / "2-writing-now"
    old.write_bytes(b"a" * 700)
    new.write_bytes(b"b" * 300)
    aged = time.time() - 3600
    os.utime(old, (aged, aged))
    assert s.sweep(600) == (1, 700)
    assert sorted(p.name for p in tmp.iterdir()) == ["2-writing-now"]
    assert s.get("packs/ab/x") == b"object" and [k for k, _ in s.list()] == ["packs/ab/x"]
    assert s.sweep(600) == (0, 0)


def test_a_local_vault_folder_that_is_gone_is_never_made_again_by_a_write(tmp_path):
    """Deleted (or unmounted) under a running writer: a put fails saying so, and leaves no folder
    in its place (before, the write made a fresh folder that no vault describes and went on as if
    all were well)."""
    from mulligan.errors import StorageError

    s = _local(tmp_path / "v")
    s.put("packs/ab/abcd", b"x")
    shutil.rmtree(tmp_path / "v")
    with pytest.raises(StorageError, match="is gone") as e:
        s.put("packs/ab/abce", b"y")
    assert "no folder was made" in e.value.one_line()
    assert not (tmp_path / "v").exists()
