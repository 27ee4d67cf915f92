"""Bad input gets a one-line error, the documented exit code, and changes nothing."""

import json
import os
import subprocess
import sys
import time

import apsw
import pytest

from conftest import make_db


def one_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert lines, "expected an error message"
    assert "Traceback" not in err
    return lines[-1]


def test_protecting_a_file_that_is_not_a_database_fails_with_one_line(project):
    p = project.dir / "notes.txt"
    p.write_text("hello, this is not a database\n" * 10)
    r = project.run("protect", str(p), "--name", "x", "--env", "test")
    assert r.code == 1
    assert "not a SQLite database" in one_line(r.err)
    assert p.read_text().startswith("hello")


def test_protecting_a_missing_database_fails_with_one_line(project):
    r = project.run("protect", "missing.db", "--name", "x", "--env", "test")
    assert r.code == 1 and "no database at" in one_line(r.err)
    assert not (project.dir / "missing.db").exists()


def test_snapshot_of_a_database_replaced_by_garbage_fails_and_stores_nothing(project):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    with open(db, "r+b") as fh:
        fh.write(b"garbage" * 20)
    r = project.run("snapshot", "app")
    assert r.code == 1 and "not a SQLite database" in one_line(r.err)
    assert list(project.ws.vault.storage.list("snapshots/")) == []


def test_a_database_locked_by_another_writer_fails_with_a_busy_message(project):
    db = make_db(project.dir / "app.db", wal=False)
    project.protect(db)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import apsw,sys,time; c=apsw.Connection(sys.argv[1]); c.execute('BEGIN EXCLUSIVE');"
        "c.execute('UPDATE users SET email=email'); print('locked', flush=True); time.sleep(30)"), db],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = project.run("snapshot", "app")
    finally:
        holder.kill()
        holder.wait()
    assert r.code == 1
    assert "locked" in one_line(r.err) and "nothing was" in r.err
    assert f"process {holder.pid}" in r.err and "locking_mode" not in r.err  # a writer, not a setting


def test_an_application_holding_its_wal_database_exclusively_is_named_with_the_setting_to_change(project):
    """An application that set PRAGMA locking_mode=EXCLUSIVE lets no other process read its
    database, for as long as it runs: snapshot and watch say which process and which setting,
    not just "locked"; watch goes on trying, and captures once the application lets go."""
    from test_watch_kit import Watch

    db = make_db(project.dir / "app.db", wal=True)
    project.protect(db)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import apsw,sys,time; c=apsw.Connection(sys.argv[1]); c.execute('PRAGMA locking_mode=EXCLUSIVE').fetchall();"
        "c.execute('UPDATE users SET email=email'); print('held', flush=True); sys.stdin.readline()"), db],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    w = None
    try:
        assert holder.stdout.readline().strip() == "held"
        r = project.run("snapshot", "app")
        assert r.code == 1
        line = one_line(r.err)
        assert f"held exclusively by process {holder.pid}" in line and "locking_mode=EXCLUSIVE" in line
        assert "nothing was read or written" in line
        w = Watch(project, "app", ready="watch started")
        assert w.wait_for("locking_mode=EXCLUSIVE", 15), w.text()
        assert "tried again by itself" not in w.text()  # its hint says so once, not twice
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(10)
        assert w.wait_for("capturing", 20), w.text()
    finally:
        holder.kill()
        holder.wait()
        if w is not None:
            assert w.term() == 0, w.text()


def test_a_missing_vault_is_reported_with_the_way_out(project, tmp_path):
    import shutil

    shutil.rmtree(project.dir / ".mulligan")
    r = project.run("targets")
    assert r.code == 1 and "no vault at" in one_line(r.err) and "mulligan init" in r.err


def test_a_vault_of_an_unknown_format_version_exits_4(project):
    cfg_path = project.dir / ".mulligan" / "vault" / "config"
    cfg = json.loads(cfg_path.read_text())
    cfg["format_version"] = 7
    cfg_path.write_text(json.dumps(cfg))
    r = project.run("targets")
    assert r.code == 4 and "format version 7" in one_line(r.err)


def test_no_configuration_is_an_error_that_names_init(project, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    p = subprocess.run([sys.executable, "-m", "mulligan", "targets"], cwd=empty, capture_output=True, text=True)
    assert p.returncode == 1 and "mulligan init" in p.stderr


def test_a_damaged_pack_makes_verify_exit_4_and_restore_refuse(project):
    db = make_db(project.dir / "app.db", rows=200)
    project.protect(db)
    assert project.call("snapshot", "app").code == 0
    packs = sorted((project.dir / ".mulligan" / "vault" / "packs").rglob("*"))
    pack = next(p for p in packs if p.is_file())
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x55
    pack.write_bytes(bytes(data))
    r = project.run("verify")
    assert r.code == 4, r.out + r.err
    assert "problem" in r.out
    r = project.run("restore", "app", "--latest", "--to", "out.db")
    assert r.code == 4 and "damaged" in one_line(r.err)
    assert not (project.dir / "out.db").exists()
    assert [p for p in project.dir.iterdir() if p.name.startswith(".out.db")] == []


def test_a_missing_pack_makes_verify_exit_4(project):
    db = make_db(project.dir / "app.db", rows=50)
    project.protect(db)
    project.call("snapshot", "app")
    pack = next(p for p in (project.dir / ".mulligan" / "vault" / "packs").rglob("*") if p.is_file())
    pack.unlink()
    r = project.run("--json", "verify")
    assert r.code == 4
    assert any("missing" in p["problem"] for p in r.json["problems"])
    assert any(p["object"].startswith("snapshots/") for p in r.json["problems"]), r.json["problems"]  # who needs it


def test_restore_refuses_a_non_empty_path_and_leaves_it_byte_identical(project):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    victim = project.dir / "victim.db"
    victim.write_bytes(b"precious")
    r = project.run("restore", "app", "--latest", "--to", str(victim))
    assert r.code == 3 and victim.read_bytes() == b"precious"


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_restore_refuses_a_stale_side_file_even_when_the_path_is_absent(project, suffix):
    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    (project.dir / ("new.db" + suffix)).write_bytes(b"old wal of some other database")
    r = project.run("restore", "app", "--latest", "--to", "new.db")
    assert r.code == 3 and "stale" in one_line(r.err)
    assert not (project.dir / "new.db").exists()


def _tmpfs(path, size="2m"):
    path.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill a disk here: {p.stderr.decode().strip()}")
    return path


def _vault_on_tmpfs(tmp_path, size):
    """A project whose vault is on a small tmpfs (unmount ``small`` when done): (small, proj, env)."""
    from conftest import Env

    from mulligan.ops import setup as setup_ops

    small = _tmpfs(tmp_path / "small", size)
    try:
        proj = tmp_path / "proj"
        proj.mkdir()
        setup_ops.init(proj / "mulligan.toml", str(small / "vault"))
    except BaseException:
        subprocess.run(["umount", str(small)])
        raise
    return small, proj, Env(proj)


def test_a_full_disk_during_restore_leaves_no_half_file(project, tmp_path):
    db = make_db(project.dir / "app.db", rows=3000, payload=400)
    project.protect(db)
    project.call("snapshot", "app")
    _min_free(project, "0")  # the disk itself refuses (the reserve is tested below)
    small = _tmpfs(tmp_path / "small", "512k")
    try:
        r = project.run("restore", "app", "--latest", "--to", str(small / "out.db"))
        assert r.code == 1 and "disk is full" in one_line(r.err)
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_a_full_disk_during_snapshot_keeps_the_vault_consistent(tmp_path):
    small, proj, env = _vault_on_tmpfs(tmp_path, "1m")
    try:
        _min_free(env, "0")  # the disk itself refuses (the reserve is tested below)
        db = make_db(proj / "little.db", rows=20)
        env.protect(db, name="little")
        assert env.run("snapshot", "little").code == 0
        big = str(proj / "big.db")
        c = apsw.Connection(big)
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        with c:
            c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
                      "INSERT INTO t(b) SELECT randomblob(1000) FROM n")
        c.close()
        env.protect(big, name="big")
        r = env.run("snapshot", "big")
        assert r.code == 1 and "disk holding the vault is full" in one_line(r.err)
        v = env.run("--json", "verify")
        assert v.code == 0, v.out
        assert v.json["manifests"] == 1
        assert env.run("restore", "little", "--latest", "--to", str(proj / "r.db")).code == 0
    finally:
        subprocess.run(["umount", str(small)])


def _min_free(env, value: str) -> None:
    import re

    cfg = env.dir / "mulligan.toml"
    text = re.sub(r"(?m)^min_free = .*\n", "", cfg.read_text())
    cfg.write_text(text.replace("[vault]\n", f"[vault]\nmin_free = {value!r}\n", 1))


def test_the_vault_leaves_room_on_its_disk_for_the_database(project):
    """A local vault does not store packs into the last of its disk (often the database's own):
    past [vault] min_free a snapshot is refused with one line, the vault stays consistent and the
    earlier restore points restore; 0 turns the reserve off."""
    db = make_db(project.dir / "app.db", rows=200)
    project.protect(db)
    assert project.run("snapshot", "app").code == 0
    with apsw.Connection(db) as c:
        c.execute("INSERT INTO posts(user_id, body) VALUES (1, 'after the first snapshot')")
    _min_free(project, "100000TiB")  # more than any disk here has
    r = project.run("snapshot", "app")
    assert r.code == 1, r.out
    line = one_line(r.err)
    assert "disk holding the vault is nearly full" in line and "min_free" in line, line
    assert "Traceback" not in r.err
    v = project.run("--json", "verify")
    assert v.code == 0 and v.json["manifests"] == 1, v.out
    r = project.run("restore", "app", "--latest", "--to", str(project.dir / "r1.db"))  # a restore fills disks too
    assert r.code == 1 and "would leave" in one_line(r.err) and "min_free" in one_line(r.err), r.err
    assert not (project.dir / "r1.db").exists()
    _min_free(project, "0")
    assert project.run("restore", "app", "--latest", "--to", str(project.dir / "r1.db")).code == 0
    _min_free(project, "bad size")
    r = project.run("snapshot", "app")
    assert r.code != 0 and "cannot read [vault] min_free" in one_line(r.err), r.err
    _min_free(project, "0")
    assert project.run("snapshot", "app").code == 0


def test_unknown_options_are_usage_errors_with_exit_2(project):
    r = project.run("snapshot", "--frobnicate")
    assert r.code == 2
    r = project.run("restore", "app", "--latest", "--at", "-1h", "--to", "x.db")
    assert r.code in (1, 2)


@pytest.mark.parametrize("args", [
    ["snapshots"],                                   # missing argument
    ["restore", "app", "--latest", "--to", "x.db", "--bogus"],  # unknown option
    ["nosuchcommand"],                               # unknown command
    ["postmortem", "inc-x", "--format", "pdf"],      # bad choice
])
def test_click_usage_errors_are_one_line_exit_2_and_json_with_json(project, args):
    r = project.run(*args)
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and r.err.startswith("mulligan: "), r.err
    r = project.run(*args, "--json")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert r.json["error"] == "usage" and r.json["exit_code"] == 2


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_guard_on_a_file_that_is_not_a_database_says_so_on_stderr(project, json_flag):
    (project.dir / "notes.txt").write_text("not a database\n" * 20)
    r = project.run("guard", "notes.txt", *json_flag)
    assert r.code == 1
    assert "not a SQLite database" in one_line(r.err)
    if json_flag:
        assert r.json["database"] is False


def test_a_tailer_that_cannot_open_the_wal_files_fails_cleanly_and_leaks_nothing(tmp_path, monkeypatch):
    """-wal or -shm removed (or unreadable) between the connections and the descriptors: an
    expected failure (watch retries every two seconds), so no OSError traceback, and the four
    connections and any descriptor already opened are closed, not leaked at every retry."""
    from mulligan.engines.sqlite import capture as cap_mod
    from mulligan.errors import MulliganError

    db = make_db(tmp_path / "app.db")
    keep = apsw.Connection(db)  # keeps -wal and -shm in place
    real_open = os.open

    def failing_open(path, *a, **k):
        if str(path).endswith("-shm"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(cap_mod.os, "open", failing_open)
    fds_before = set(os.listdir("/proc/self/fd"))
    conns_before = len(apsw.connections())
    t = cap_mod.Tailer(db)
    with pytest.raises(MulliganError):
        t.open()
    assert len(apsw.connections()) == conns_before
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    assert t.db_fd is None and t.wal_fd is None and t.shm_fd is None
    keep.close()


def test_a_full_disk_while_stamping_the_restored_copy_is_a_storage_error_and_leaves_nothing(project, monkeypatch):
    """The disk can fill up when SQLite writes the identity stamp into the restored copy (its
    WAL), not only while pages are written: that is apsw.FullError, not OSError. It must be the
    documented one-line 'disk is full' error, with no temporary file left beside the path."""
    from mulligan.engines.sqlite import engine as eng_mod
    from mulligan.errors import StorageError
    from mulligan.ops.restore import restore_new

    db = make_db(project.dir / "app.db")
    project.protect(db)
    project.call("snapshot", "app")
    ws = project.ws
    point = ws.vault.latest(ws.target("app").id)

    def full(conn, identity):
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(eng_mod.ident_mod, "write", full)
    out = project.dir / "out"
    out.mkdir()
    with pytest.raises(StorageError, match="disk is full"):
        restore_new(ws, point, str(out / "new.db"))
    assert os.listdir(out) == []


def test_init_with_a_vault_that_cannot_be_made_fails_with_one_line_and_writes_no_config(tmp_path):
    (tmp_path / "afile").write_text("a file where the vault folder should be")
    for vault in (str(tmp_path / "afile" / "vault"), str(tmp_path / "afile")):
        p = subprocess.run([sys.executable, "-m", "mulligan", "init", "--vault", vault], cwd=tmp_path,
                           capture_output=True, text=True)
        assert p.returncode == 1, p.stderr
        assert "vault" in one_line(p.stderr) and len(p.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "mulligan.toml").exists()


def test_a_postmortem_to_a_missing_folder_and_a_full_stdout_are_one_line_errors(project):
    r = project.run("incident", "open", "app", "--title", "t", "--json")
    assert r.code == 1  # no target 'app' yet: one line, no traceback
    db = make_db(project.dir / "app.db")
    project.protect(db)
    inc = project.run("incident", "open", "app", "--title", "t", "--json").json["id"]
    r = project.run("postmortem", inc, "-o", str(project.dir / "no-such-folder" / "pm.md"))
    assert r.code == 1 and "no such file or directory" in one_line(r.err)
    assert len(r.err.strip().splitlines()) == 1
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            p = subprocess.run([sys.executable, "-m", "mulligan", "diff", db, db, "--format", "sql"],
                               cwd=project.dir, stdout=full, stderr=subprocess.PIPE, text=True)
        assert p.returncode == 1 and "no space left" in one_line(p.stderr)


def test_protect_under_a_name_already_taken_leaves_the_database_unstamped(project):
    from mulligan.engines.sqlite.engine import SqliteEngine

    project.protect(make_db(project.dir / "app.db"))
    other = make_db(project.dir / "other.db")
    r = project.run("protect", other, "--name", "app", "--env", "test")
    assert r.code == 3 and "already registered" in one_line(r.err)
    assert SqliteEngine().read_identity(other) is None
    r = project.run("protect", other, "--name", "other", "--env", "test")
    assert r.code == 0, r.err


def test_a_failed_stamp_commit_reports_its_own_error_not_the_rollback_after_it(tmp_path):
    """When SQLite has already rolled the transaction back (a full disk or an I/O error at
    COMMIT), the stamp's cleanup must not replace that error with 'cannot rollback - no
    transaction is active': the disk-full handling upstream keys on the real error."""
    from mulligan.engines.sqlite import identity as ident_mod
    from mulligan.model import Identity

    db = make_db(tmp_path / "app.db")
    real = apsw.Connection(db)

    class FullAtCommit:
        def __getattr__(self, name):
            return getattr(real, name)

        def execute(self, sql, *a):
            if sql == "COMMIT":
                real.execute("ROLLBACK")  # what SQLite does by itself on SQLITE_FULL
                raise apsw.FullError("database or disk is full")
            return real.execute(sql, *a)

    ident = Identity(target_id="t-1", name="app", env="test", stamped_at="2026-01-01T00:00:00Z")
    with pytest.raises(apsw.FullError):
        ident_mod.write(FullAtCommit(), ident)
    real.close()


def test_stamping_a_database_on_a_full_disk_is_a_storage_error(tmp_path, monkeypatch):
    from mulligan.engines.sqlite import engine as eng_mod
    from mulligan.errors import StorageError
    from mulligan.model import Identity

    db = make_db(tmp_path / "app.db")

    def full(conn, identity):
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(eng_mod.ident_mod, "write", full)
    ident = Identity(target_id="t-1", name="app", env="test", stamped_at="2026-01-01T00:00:00Z")
    with pytest.raises(StorageError, match="disk .*full"):
        eng_mod.SqliteEngine().write_identity(db, ident)


def test_watch_rides_out_a_full_vault_disk_and_loses_nothing_once_space_is_freed(tmp_path):
    """The disk holding a local vault fills while the application writes at 100 tx/s: watch says
    so once (that it tries again by itself, not to run the command again) and keeps running,
    holding what it saw; once space is freed it says capture works again, every commit is stored
    (no gap), and after SIGTERM every commit restores."""
    from test_watch_kit import App, Watch, configure, ids_in, make_app_db

    small, proj, env = _vault_on_tmpfs(tmp_path, "16m")
    try:
        db = make_app_db(proj / "app.db")
        env.protect(db)
        configure(env, capture={"flush_interval": "0.5s"})
        app = App(db, proj / "app.log", rate=100)
        w = Watch(env, "app")
        time.sleep(1.0)
        filler = small / "filler"
        with open(filler, "wb") as fh:  # the rest of the disk
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        assert w.wait_for("disk holding the vault is", 20), w.text()  # nearly full (min_free), or full
        time.sleep(2.0)
        filler.unlink()
        time.sleep(3.0)
        t_term = time.time()
        assert w.term() == 0
        app.stop()
        text = w.text()
        assert text.count("disk holding the vault is") == 1, text
        assert "tried again by itself" in text and "run the command again" not in text, text
        assert text.index("capture is working again") > text.index("disk holding the vault is"), text
        assert "everything seen is stored" in text and "dropped" not in text, text
        out = proj / "r.db"
        r = env.run("restore", "app", "--latest", "--to", str(out))
        assert r.code == 0, r.err
        got = set(ids_in(str(out)))
        missing = [i for i, t in app.log() if t < t_term and i not in got]
        assert not missing, f"{len(missing)} commits lost"
        assert env.run("status", "app", "--json").json["targets"][0]["coverage"]["gaps"] == []
        assert env.run("verify").code == 0
    finally:
        subprocess.run(["umount", str(small)])


def test_a_vault_folder_deleted_under_watch_is_reported_and_never_recreated(project):
    """Someone deletes the local vault folder while watch runs (a clean-up, a disk unmounted).
    Before, the next write made a fresh folder that no vault describes, watch went on as if all
    were well and said "everything seen is stored" at the stop. Now each write fails saying the
    folder is gone, no folder is made in its place, and the stop exits 1 saying what was not
    stored."""
    import shutil

    from test_watch_kit import App, Watch, configure, make_app_db

    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    configure(project, capture={"flush_interval": "0.5s"})
    vault = project.dir / ".mulligan" / "vault"
    assert (vault / "config").exists()
    app = App(db, project.dir / "app.log", rate=100)
    w = Watch(project, "app")
    try:
        time.sleep(1.0)
        shutil.rmtree(vault)
        assert w.wait_for("is gone", 20), w.text()
        time.sleep(1.0)
        assert not vault.exists()
        assert w.term() == 1
    finally:
        app.stop()
    text = w.text()
    assert "everything seen is stored" not in text and "seen but not stored" in text, text
    assert "Traceback" not in text, text
    assert not vault.exists()


def test_a_full_disk_under_the_database_does_not_stop_capture(project, tmp_path):
    """The disk holding the database fills while watch runs: the application's commits fail,
    and so do the watcher's own writes into it (its checkpoints). Before, that stopped capture
    ("capture failed: SQLite: database or disk is full"), dropped the commits read under the
    write lock, and started a new base from a full read at each try. Now it is one warning, capture
    goes on, every commit the application made is restored, and once space is freed the
    watcher says its writes work again."""
    from test_watch_kit import Watch, configure

    disk = _tmpfs(tmp_path / "disk", "3m")
    w = None
    try:
        db = make_db(disk / "app.db", rows=20)
        ballast = disk / "ballast"
        ballast.write_bytes(os.urandom(1 << 20))
        project.protect(db)
        configure(project, capture={"idle_checkpoint": "0.3s", "flush_interval": "0.2s"})
        w = Watch(project, "app")
        app = subprocess.run([sys.executable, "-c", (
            "import apsw,sys,time\n"
            "c = apsw.Connection(sys.argv[1]); c.set_busy_timeout(5000); ok = fails = 0\n"
            "while fails < 20:\n"
            "    try:\n"
            "        with c: c.execute('INSERT INTO posts(user_id, body) VALUES (1, randomblob(3000))')\n"
            "        ok += 1\n"
            "    except apsw.FullError:\n"
            "        fails += 1; time.sleep(0.1)\n"
            "print(ok)\n"), db], capture_output=True, text=True, timeout=120)
        assert app.returncode == 0, app.stderr
        assert w.wait_for("is full", 10), w.text()
        ballast.unlink()  # space again: the next checkpoint goes through
        assert w.wait_for("work again", 10), w.text()
        assert w.term() == 0, w.text()
        log = w.text()
        assert "capture failed" not in log and log.count("capturing") == 1, log
        assert log.count("is full") == 1, log
        out = project.dir / "latest.db"
        r = project.run("restore", "app", "--latest", "--to", str(out))
        assert r.code == 0, r.err
        q = "SELECT count(*), max(id) FROM posts"
        assert apsw.Connection(str(out)).execute(q).fetchall() == apsw.Connection(db).execute(q).fetchall()
    finally:
        if w is not None and w.proc.poll() is None:
            w.kill()  # it holds the database open: the disk could not be unmounted
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(disk)])


def test_a_wal_cut_short_under_watch_is_reported_by_watch_and_status(project):
    """The -wal is truncated behind SQLite's back while the application holds the database and
    has commits in it the watcher has not read yet. watch says what happened (once), keeps
    running, status says it captures nothing and why, and the last state captured before it
    restores."""
    import signal

    from test_watch_kit import Watch, configure

    db = make_db(project.dir / "app.db", rows=20)
    rows_before = apsw.Connection(db).execute("SELECT count(*) FROM posts").fetchall()[0][0]
    project.protect(db)
    configure(project, capture={"status_interval": "0.2s"})
    app = subprocess.Popen([sys.executable, "-c", (
        "import apsw,sys,os\n"
        "c = apsw.Connection(sys.argv[1]); c.set_busy_timeout(5000)\n"
        "c.execute('PRAGMA wal_autocheckpoint=0').fetchall()\n"
        "for line in sys.stdin:\n"
        "    for _ in range(int(line)):\n"
        "        c.execute('INSERT INTO posts(user_id, body) VALUES (1, ?)', (os.urandom(3000).hex(),))\n"
        "    print('done', flush=True)\n"), db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    w = Watch(project, "app")
    try:
        app.stdin.write("5\n")
        app.stdin.flush()
        assert app.stdout.readline().strip() == "done"
        time.sleep(1.0)  # captured and stored
        before = project.run("--json", "status", "app").json["targets"][0]["coverage"]["to"]
        w.proc.send_signal(signal.SIGSTOP)
        app.stdin.write("20\n")
        app.stdin.flush()
        assert app.stdout.readline().strip() == "done"
        os.truncate(db + "-wal", os.path.getsize(db + "-wal") // 2)
        w.proc.send_signal(signal.SIGCONT)
        assert w.wait_for("shorter than its index says", 10), w.text()
        time.sleep(0.6)
        t = project.run("--json", "status", "app").json["targets"][0]
        assert t["watch"]["running"] and t["watch"]["capturing"] is False and t["stale"], t
        assert any("shorter than its index says" in p for p in t["problems"]), t["problems"]
        assert t["coverage"]["to"] == before
    finally:
        w.proc.send_signal(signal.SIGCONT)
        app.kill()
        app.wait()
    assert w.term() == 0, w.text()
    failed = [line for line in w.text().splitlines() if "capture failed" in line]
    assert len(failed) == 1 and "shorter than its index says" in failed[0], w.text()  # once, not at every poll
    out = project.dir / "latest.db"
    assert project.run("restore", "app", "--latest", "--to", str(out)).code == 0
    assert apsw.Connection(str(out)).execute("SELECT count(*) FROM posts").fetchall()[0][0] == rows_before + 5


def test_a_damaged_capture_segment_names_the_newest_point_that_still_restores(project):
    """A segment in the middle of a captured chain is damaged: every commit from it on is lost
    to restores. `restore --latest` refuses with one line (exit 4) naming the newest point
    before it, and that point restores."""
    from mulligan.ops import capture_store as cs
    from test_watch_kit import capture_in_process, ids_in

    cap, db, _ = capture_in_process(project)
    app = apsw.Connection(db)
    keys, counts = [], []
    for k in range(4):
        for _ in range(3):
            app.execute("INSERT INTO posts(user_id, body) VALUES (1, 'segment by segment')")
        cap.step(time.monotonic())
        cap.flush()
        counts.append(len(ids_in(db)))
    cap.stop()
    app.close()
    keys = cs.segment_keys(project.ws.vault, cap.target.id, cap.base.id)
    assert len(keys) >= 4
    path = project.ws.vault.storage.root / keys[2]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    r = project.run("restore", "app", "--latest", "--to", str(project.dir / "r.db"))
    assert r.code == 4, r.err
    line = one_line(r.err)
    assert f"{keys[2]} is damaged" in line and "the newest point before it is" in line, line
    point = line.split("the newest point before it is ")[1].split(" ")[0]
    assert not (project.dir / "r.db").exists()
    r = project.run("restore", "app", "--snapshot", point, "--to", str(project.dir / "r.db"))
    assert r.code == 0, r.err
    assert len(ids_in(str(project.dir / "r.db"))) == counts[1]


def test_a_database_on_a_read_only_mount_is_named_as_such(project, tmp_path):
    """SQLite cannot open a WAL database where it cannot create the -shm: snapshot, watch and
    protect say the file system is read-only (they said "unable to open database file")."""
    from test_watch_kit import make_app_db

    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    db = make_app_db(src / "app.db")
    p = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder here: {p.stderr.decode().strip()}")
    try:
        project.protect(str(ro / "app.db"))
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True, capture_output=True)
        r = project.run("snapshot", "app")
        assert r.code == 1, r.err
        line = one_line(r.err)
        assert "is on a read-only file system" in line and "mount it read-write" in line, line
        assert project.run("snapshot", "app").code == 1
        w = subprocess.run([sys.executable, "-m", "mulligan", "protect", str(ro / "app.db"), "--name", "other",
                            "--env", "staging"], cwd=project.dir, capture_output=True, text=True)
        assert w.returncode != 0 and "Traceback" not in w.stderr
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    assert os.path.getsize(db) > 0


def test_status_warns_before_the_vault_disk_reaches_its_reserve(project):
    """status says the vault's disk is within twice its reserve, before snapshots stop."""
    from test_watch_kit import make_app_db

    project.protect(make_app_db(project.dir / "app.db"))
    r = project.run("status", "--json")
    assert r.code == 0 and not any("disk holding the vault" in p for p in r.json["targets"][0]["problems"]), r.out
    _min_free(project, "100000TiB")
    r = project.run("status", "--json")
    assert r.code == 0, r.err
    assert any("disk holding the vault has" in p and "min_free" in p for p in r.json["targets"][0]["problems"]), r.out


def test_a_vault_out_of_inodes_says_so(tmp_path):
    """A file system with space but no inode left refuses a new file with ENOSPC too: the vault
    says it is out of inodes (not "full", which `df` would contradict), and stays consistent."""
    from conftest import Env

    from mulligan.ops import setup as setup_ops

    small = tmp_path / "few"
    small.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=40", "tmpfs", str(small)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs with few inodes here: {p.stderr.decode().strip()}")
    try:
        proj = tmp_path / "proj"
        proj.mkdir()
        setup_ops.init(proj / "mulligan.toml", str(small / "vault"))
        env = Env(proj)
        db = make_db(proj / "app.db", rows=50)
        env.protect(db, name="app")
        line = ""
        for i in range(40):
            with apsw.Connection(db) as c:
                c.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"row {i}",))
            r = env.run("snapshot", "app")
            if r.code != 0:
                line = one_line(r.err)
                break
        assert "no free inodes left" in line, line
        v = env.run("--json", "verify")
        assert v.code == 0, v.out
    finally:
        subprocess.run(["umount", str(small)])


def test_a_point_taken_of_a_damaged_database_is_refused_on_restore_in_one_line(project):
    db = make_db(project.dir / "app.db", rows=600)
    conn = apsw.Connection(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.close()
    with open(db, "r+b") as fh:  # the last page's cells reversed: its b-tree no longer adds up
        fh.seek(-4096 + 2000, os.SEEK_END)
        cells = fh.read(200)
        fh.seek(-4096 + 2000, os.SEEK_END)
        fh.write(cells[::-1])
    conn = apsw.Connection(db)
    assert conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]
    conn.close()
    project.protect(db)
    assert project.call("snapshot", "app").code == 0
    r = project.run("restore", "app", "--latest", "--to", "out.db")
    assert r.code == 4
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert "fails quick_check" in r.err and "already damaged when this restore point was taken" in r.err
    assert "--check none" in r.err
    assert not (project.dir / "out.db").exists()
    assert [p for p in project.dir.iterdir() if p.name.startswith(".out.db")] == []
    # For salvage: written anyway, stamped as a restored copy, and said to be unchecked.
    r = project.run("restore", "app", "--latest", "--to", "out.db", "--check", "none")
    assert r.code == 0, r.err
    assert "not checked (--check none)" in r.out
    conn = apsw.Connection(str(project.dir / "out.db"))
    assert conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]  # the damaged state itself
    conn.close()
    from mulligan.engines.sqlite import identity

    conn = apsw.Connection(str(project.dir / "out.db"))
    assert identity.read(conn).kind == "restored"
    conn.close()
    r = project.run("--json", "restore", "app", "--latest", "--to", "out2.db", "--check", "none")
    assert r.code == 0 and r.json["check"] == "none"
