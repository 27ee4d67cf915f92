"""Live-use detection with real processes, the confirmation rules, and `guard PATH`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

import apsw
import pytest
from conftest import make_db
from test_inplace import content, quiet_target, settle, write_rows

from mulligan import config as cfg
from mulligan.errors import GuardRefused
from mulligan.model import Target
from mulligan.ops import guards

HOLD = textwrap.dedent("""
    import sqlite3, sys
    {prelude}
    c = sqlite3.connect(sys.argv[-1])
    c.execute('select count(*) from sqlite_master').fetchall()
    print('ready', flush=True)
    sys.stdin.readline()
""")


@contextmanager
def holder(db: str, *, argv: list[str] | None = None, prelude: str = ""):
    """A real process with the database open until the block ends."""
    cmd = argv or [sys.executable, "-c", HOLD.format(prelude=prelude)]
    p = subprocess.Popen([*cmd, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert p.stdout.readline().strip() == "ready"
        yield p
    finally:
        p.stdin.close()
        p.wait(timeout=10)


@pytest.fixture
def app(project):
    project.db = quiet_target(project, later=3)
    return project


def live(project, db=None):
    ws = project.ws
    return guards.live_use(db or project.db, ws.vault, ws.target("app").id)


def test_a_quiet_database_nobody_holds_is_not_in_live_use(app):
    assert not live(app).live


def test_a_second_process_holding_the_database_open_is_refused_unless_force_live(app):
    before = content(app.db)
    with holder(app.db) as p:
        r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app")
        assert r.code == 3
        assert f"pid {p.pid}" in r.err and "in live use" in r.err and "--force-live" in r.err
        assert content(app.db) == before
        r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app", "--force-live")
        assert r.code == 0, r.err


def test_a_running_mulligan_watch_holding_the_database_is_not_live_use(app, tmp_path):
    fake = tmp_path / "bin" / "mulligan"  # a process whose command line runs `mulligan watch`
    fake.parent.mkdir()
    fake.write_text(HOLD.format(prelude=""))
    with holder(app.db, argv=[sys.executable, str(fake), "watch"]) as p:
        found = live(app)
        assert [h.pid for h in found.holders] == [p.pid]
        assert found.holders[0].mulligan == "runs mulligan"
        assert not found.live
        assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 0


def test_a_process_holding_a_mulligan_lease_in_the_vault_is_not_live_use(app):
    prelude = textwrap.dedent(f"""
        from mulligan.storage.local import LocalStorage
        from mulligan.vault.locks import Lease
        lease = Lease(LocalStorage({str(app.dir / '.mulligan' / 'vault')!r}), 'writer', 'capture of app').acquire()
    """)
    with holder(app.db, prelude=prelude):
        found = live(app)
        assert found.holders and "lease" in found.holders[0].mulligan
        assert not found.live


@pytest.mark.parametrize("recorded", [True, False])
def test_the_watchers_stamp_write_counts_as_its_own_only_when_recorded_by_its_wal_position(app, recorded):
    vault = str(app.dir / ".mulligan" / "vault")
    prelude = textwrap.dedent(f"""
        import apsw, os
        from mulligan.engines.sqlite import identity, wal
        from mulligan.ops.guards import record_own_commit
        from mulligan.storage.local import LocalStorage
        from mulligan.vault import Vault
        from mulligan.vault.locks import Lease
        db = sys.argv[-1]
        lease = Lease(LocalStorage({vault!r}), 'writer', 'watch app').acquire()
        w = apsw.Connection(db)
        w.execute('BEGIN IMMEDIATE'); identity.bump_generation(w); w.execute('COMMIT')
        fd = os.open(db + '-wal', os.O_RDONLY); scan = wal.scan(fd); os.close(fd)
        if {recorded!r}:
            record_own_commit(Vault.open({vault!r}), {app.ws.target("app").id!r}, wal_salts=scan.header.salts,
                              wal_frame=scan.last_commit_frame, by='watch: generation')
    """)
    with holder(app.db, prelude=prelude):
        found = live(app)
        assert found.holders and all(h.mulligan for h in found.holders)
        assert (found.recent_commit is None) == recorded


def test_the_stamp_written_by_protect_is_mulligans_own_write(project):
    db = make_db(project.dir / "fresh.db", rows=3)
    settle(db)
    project.protect(db, "fresh", "staging")
    assert project.run("guard", db).code == 0


def test_a_commit_by_someone_else_seconds_ago_is_live_use_with_no_process_holding_it(app):
    write_rows(app.db, 1)  # committed and closed: nothing holds the file now
    found = live(app)
    assert found.holders == []
    assert found.recent_commit is not None and found.live
    r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app")
    assert r.code == 3 and "committed" in r.err


def test_a_mere_reader_does_not_make_a_quiet_database_live(app):
    conn = apsw.Connection(app.db)  # a reader: writes read marks into -shm, creates an empty -wal
    try:
        assert conn.execute("select count(*) from users").fetchall()[0][0] == 13
        assert time.time() - os.stat(app.db + "-shm").st_mtime < 5
        assert time.time() - os.stat(app.db + "-wal").st_mtime < 5
        # this process is Mulligan's own, so only the commit rule speaks here
        assert live(app).recent_commit is None
    finally:
        conn.close()
    assert not live(app).live


def test_a_checkpoint_of_mulligans_own_write_is_not_taken_for_a_foreign_commit(app):
    with holder(app.db):  # keeps the WAL: the replacement stays in it as frames
        assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app", "--force-live").code == 0
        assert os.path.getsize(app.db + "-wal") > 0
    # the holder closed last: SQLite checkpointed Mulligan's frames into the main file just now
    found = live(app)
    assert found.recent_commit is None, found.evidence()


def test_commits_to_a_rollback_journal_database_are_seen_by_its_change_counter(project):
    db = make_db(project.dir / "rj.db", rows=5, wal=False)
    project.protect(db, "app", "staging")
    assert project.call("snapshot", "app").code == 0
    settle(db)
    assert not live(project, db).live
    write_rows(db, 1)
    assert live(project, db).recent_commit is not None
    settle(db)
    assert not live(project, db).live


@pytest.mark.parametrize("env,kwargs,outcome", [
    ("production", {"confirm_name": "app"}, "--confirm"),
    ("production", {"confirm_name": "ap"}, "refused"),
    ("production", {"yes": True}, "refused"),
    ("production", {"yes": True, "interactive": True, "ask_name": lambda: "app"}, "refused"),
    ("production", {}, "refused"),
    ("production", {"interactive": True, "ask_name": lambda: "app"}, "typed name"),
    ("production", {"interactive": True, "ask_name": lambda: "no"}, "refused"),
    ("production", {"interactive": True, "ask_name": lambda: "y"}, "refused"),
    ("staging", {"yes": True}, "--yes"),
    ("staging", {}, "refused"),
    ("staging", {"interactive": True, "ask_yes": lambda: True}, "prompt"),
    ("staging", {"interactive": True, "ask_yes": lambda: False}, "refused"),
    ("staging", {"confirm_name": "other"}, "refused"),
])
def test_confirmation_rules(env, kwargs, outcome):
    target = Target(name="app", path="/srv/app.db", env=env, id="t-1")
    args = {"confirm_name": None, "yes": False, "interactive": False, **kwargs}
    if outcome == "refused":
        with pytest.raises(GuardRefused) as info:
            guards.confirm(target, **args)
        assert info.value.exit_code == 3
    else:
        assert guards.confirm(target, **args) == outcome


def test_guard_says_production_is_refused_with_exit_3(app):
    r = app.run("--json", "guard", app.db)
    assert r.code == 3
    assert r.json["name"] == "app" and r.json["production"] is True and r.json["live"] is False


def test_guard_passes_a_quiet_staging_database_with_exit_0_and_refuses_it_while_held(project):
    db = make_db(project.dir / "stage.db", rows=3)
    project.protect(db, "stage", "staging")
    settle(db)
    r = project.run("--json", "guard", db)
    assert r.code == 0, r.out
    assert r.json["env"] == "staging" and r.json["safe_to_change"] is True
    with holder(db) as p:
        r = project.run("--json", "guard", db)
        assert r.code == 3
        assert r.json["live"] is True and r.json["live_use"]["holders"][0]["pid"] == p.pid
        r = project.run("guard", db)
        assert "IN LIVE USE" in r.out and f"pid {p.pid}" in r.err


def test_guard_answers_1_for_a_file_that_is_not_a_database(project):
    other = project.dir / "notes.txt"
    other.write_text("hello")
    assert project.run("guard", str(other)).code == 1
    assert project.run("guard", str(project.dir / "missing.db")).code == 1


def test_guard_works_without_a_configuration_from_what_the_file_says(tmp_path, project):
    db = make_db(project.dir / "p.db", rows=2)
    project.protect(db, "p", "production")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settle(db)
    r = subprocess.run([sys.executable, "-m", "mulligan", "--json", "guard", db], cwd=elsewhere,
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MULLIGAN_CONFIG"})
    assert r.returncode == 3
    assert '"production": true' in r.stdout


def test_inspect_file_is_the_same_answer_for_python_callers(app):
    report = guards.inspect_file(app.db, cfg.load(app.config_path))
    assert report.exit_code == 3 and report.name == "app" and report.env == "production"
    assert report.target is not None and not report.live.live
    plain = make_db(app.dir / "plain.db", rows=1)
    settle(plain)
    report = guards.inspect_file(plain)
    assert report.exit_code == 0 and report.identity is None
    assert any("not protected" in n for n in report.notes)


def test_guard_through_a_symlink_still_compares_the_file_with_its_configured_target(project):
    db = make_db(project.dir / "stage.db", rows=3)
    project.protect(db, "stage", "staging")
    os.replace(make_db(project.dir / "plain.db", rows=1), db)  # someone put another file there
    settle(db)
    link = project.dir / "current.db"
    link.symlink_to(db)
    r = project.run("--json", "guard", str(link))
    assert r.code == 3, r.out
    assert r.json["configured_target"] == "stage"
    assert any("no identity stamp" in p for p in r.json["problems"])
