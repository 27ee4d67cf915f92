"""A restore's pages checked and written by several processes at once (parallel.py): every page
once, the children's errors and deaths reported, nothing left behind."""

import os
import signal
import time

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mulligan import parallel
from mulligan.engines.sqlite.engine import SqliteEngine
from mulligan.errors import IntegrityError, StorageError
from mulligan.storage.faulty import FaultyStorage
from mulligan.storage.local import LocalStorage
from mulligan.vault import Vault
from mulligan.vault.workers import worker

from conftest import dump

PS = 512

needs_fork = pytest.mark.skipif(not parallel.can_fork(), reason="processes are forked on Linux only")


def save(v, pages):
    batches = [pages[i:i + 7] for i in range(0, len(pages), 7)]
    return v.save_pages(target_id="t-1", target_name="t", page_size=PS, batches=batches,
                        time="2026-01-01T00:00:00.000Z")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(min_size=PS, max_size=PS), st.sampled_from([bytes(PS), b"\x01" * PS])),
                max_size=400),
       st.integers(min_value=1, max_value=5))
def test_shards_hold_every_page_exactly_once(pages, n):
    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    m = save(v, pages)
    shards = v.page_batch_shards(m, n)
    assert 1 <= len(shards) <= n
    pairs = [pair for shard in shards for batch in shard for pair in batch]
    assert sorted(p for p, _ in pairs) == list(range(1, len(pages) + 1))
    assert all(pages[p - 1] == data for p, data in pairs)


def _big_db(path, mb=20):
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    with conn:
        conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                     "INSERT INTO t(v) SELECT CAST(randomblob(900) || zeroblob(100) AS BLOB) FROM n", (mb * 1000,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()


@needs_fork
def test_a_restore_is_written_by_several_processes_and_equals_one_written_by_one(project, tmp_path):
    _big_db(tmp_path / "app.db")
    assert project.run("protect", str(tmp_path / "app.db"), "--name", "app", "--env", "staging").code == 0
    assert project.run("snapshot", "app").code == 0
    one = project.run("--json", "restore", "app", "--latest", "--to", str(tmp_path / "one.db"), "--jobs", "1")
    two = project.run("--json", "restore", "app", "--latest", "--to", str(tmp_path / "two.db"), "--jobs", "2")
    assert one.code == 0 and two.code == 0, one.err + two.err
    assert one.json["jobs"] == 1 and two.json["jobs"] == 2
    assert dump(str(tmp_path / "two.db")) == dump(str(tmp_path / "one.db")) == dump(str(tmp_path / "app.db"))
    small = tmp_path / "small.db"
    conn = apsw.Connection(str(small))
    conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    conn.close()
    assert project.run("protect", str(small), "--name", "small", "--env", "staging").code == 0
    assert project.run("snapshot", "small").code == 0
    res = project.run("--json", "restore", "small", "--latest", "--to", str(tmp_path / "small2.db"))
    assert res.json["jobs"] == 1, "a small database is not worth a second process"


@needs_fork
def test_a_damaged_block_read_by_a_child_fails_the_restore_and_leaves_nothing(tmp_path):
    good = Vault.create(str(tmp_path / "v"))
    pages = [os.urandom(PS // 2) * 2 for _ in range(3000)]
    m = save(good, pages)
    parent = os.getpid()
    # Reads go wrong in the children only: the parent's share is sound.
    broken = Vault(FaultyStorage(LocalStorage(tmp_path / "v"), corrupt_get=lambda key: os.getpid() != parent),
                   good.config)
    out = tmp_path / "out.db"
    with pytest.raises(IntegrityError, match="the vault object holding it is damaged"):
        SqliteEngine().write_new(str(out), PS, m.page_count, broken.page_batch_shards(m, 2), check="none")
    assert sorted(os.listdir(tmp_path)) == ["v"], "no file, no temporary file"


def _jobs(*bodies):
    return [lambda report, body=body: body(report) for body in bodies]


@needs_fork
def test_children_report_their_progress_and_finish(tmp_path):
    seen = []

    def write(name):
        def body(report):
            for _ in range(1000):
                report(1)
            (tmp_path / name).write_text(str(os.getpid()))
        return body

    parallel.fan_out(_jobs(write("a"), write("b"), write("c")), seen.append)
    assert sum(seen) == 3000
    pids = {(tmp_path / n).read_text() for n in "abc"}
    assert len(pids) == 3 and str(os.getpid()) in pids


@needs_fork
@pytest.mark.parametrize("how", ["error", "disk full", "crash", "killed"])
def test_what_a_child_met_is_raised_in_the_parent(how, tmp_path):
    def child(report):
        if how == "error":
            raise IntegrityError("chunk 00 does not match its hash", hint="run 'mulligan verify'")
        if how == "disk full":  # a real one: a write past the room of a 1 MiB tmpfs
            import subprocess
            small = tmp_path / "small"
            small.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
            try:
                fd = os.open(small / "f", os.O_WRONLY | os.O_CREAT)
                written = 0
                while True:  # a short write first, then ENOSPC
                    written += os.pwrite(fd, bytes(1 << 20), written)
            finally:
                subprocess.run(["umount", "-l", str(small)], check=True)
        if how == "crash":
            raise ValueError("a bug")
        os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer

    expected = {"error": (IntegrityError, "does not match its hash"), "disk full": (OSError, "No space left"),
                "crash": (RuntimeError, "ValueError: a bug"), "killed": (StorageError, "killed by SIGKILL")}[how]
    if how == "disk full" and os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    with pytest.raises(expected[0], match=expected[1]) as info:
        parallel.fan_out(_jobs(lambda report: time.sleep(0.2), child))
    if how == "error":
        assert info.value.hint == "run 'mulligan verify'"
    if how == "disk full":
        assert info.value.errno == 28  # ENOSPC: the caller reports it as a full disk


@needs_fork
def test_a_parent_that_fails_stops_its_children(tmp_path):
    def parent_job(report):
        time.sleep(0.3)
        raise IntegrityError("the parent's share is damaged")

    def child(report):
        (tmp_path / "pid").write_text(str(os.getpid()))
        time.sleep(60)

    t0 = time.monotonic()
    with pytest.raises(IntegrityError):
        parallel.fan_out(_jobs(parent_job, child))
    assert time.monotonic() - t0 < 10
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


@needs_fork
def test_a_child_makes_its_own_threads(tmp_path):
    """A pool the parent made before the fork has no thread in the child: the child gets a new one."""
    assert worker("read").submit(os.getpid).result(timeout=5) == os.getpid()

    def child(report):
        assert worker("read").submit(os.getpid).result(timeout=5) == os.getpid()

    parallel.fan_out(_jobs(lambda report: None, child))


def test_without_a_process_to_be_had_the_work_is_done_here(monkeypatch):
    """fork failing (a process limit, no memory: EAGAIN) leaves the parent to do every share."""
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    ran = []
    parallel.fan_out(_jobs(lambda report: ran.append("a"), lambda report: ran.append("b")))
    assert ran == ["a", "b"]


@needs_fork
def test_a_restore_killed_mid_way_takes_its_children_with_it_and_leaves_nothing_at_the_path(project, tmp_path):
    import subprocess
    import sys

    _big_db(tmp_path / "app.db", mb=60)
    assert project.run("protect", str(tmp_path / "app.db"), "--name", "app", "--env", "staging").code == 0
    assert project.run("snapshot", "app").code == 0
    out = tmp_path / "out.db"
    p = subprocess.Popen([sys.executable, "-m", "mulligan", "-q", "restore", "app", "--latest", "--to", str(out),
                          "--jobs", "2"], cwd=project.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.monotonic() + 30
    while not children and p.poll() is None and time.monotonic() < deadline:
        for task in os.listdir(f"/proc/{p.pid}/task"):
            try:
                with open(f"/proc/{p.pid}/task/{task}/children") as fh:
                    children += [int(c) for c in fh.read().split()]
            except OSError:
                pass
        time.sleep(0.001)
    assert children, "the restore forked no child before it ended"
    p.kill()
    p.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{c}") and _alive(c) for c in children):
        time.sleep(0.02)
    assert not any(os.path.exists(f"/proc/{c}") and _alive(c) for c in children), "a child outlived its parent"
    assert not out.exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
