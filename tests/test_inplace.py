"""restore --in-place and undo on real files, through the real command in a subprocess."""

from __future__ import annotations

import os
import shutil
import time

import apsw
import pytest
from conftest import dump, make_db

from mulligan.engines.sqlite.engine import SqliteEngine
from mulligan.vault import KIND_UNDO


def settle(path: str, seconds: float = 60) -> None:
    """Make the database's last write look ``seconds`` old (a quiet database, not in live use)."""
    t = time.time() - seconds
    for suffix in ("", "-wal", "-journal"):
        if os.path.exists(path + suffix):
            os.utime(path + suffix, (t, t))


def content(path: str) -> dict[str, bytes]:
    """The bytes of the database and of its WAL (absent and empty are the same: no frames), for 'nothing changed'."""
    out = {}
    for suffix in ("", "-wal"):
        try:
            with open(path + suffix, "rb") as fh:
                out[suffix] = fh.read()
        except FileNotFoundError:
            out[suffix] = b""
    return out


def write_rows(path: str, n: int) -> None:
    make_db(path, rows=n)


def quiet_target(project, name: str = "app", env: str = "production", *, rows: int = 10, later: int = 3) -> str:
    """Target NAME (NAME.db, ROWS rows) with one snapshot, then LATER more rows written by 'the app'
    a minute ago. Sets ``project.snapshot_id`` and ``project.state_at_snapshot``; returns the path."""
    db = make_db(project.dir / f"{name}.db", rows=rows)
    project.protect(db, name, env)
    snap = project.call("--json", "snapshot", name)
    assert snap.code == 0, snap.err
    project.snapshot_id = snap.json["id"]
    project.state_at_snapshot = dump(db)
    write_rows(db, later)
    settle(db)
    return db


@pytest.fixture
def app(project):
    """Production target 'app' with one snapshot, then 5 more rows written by 'the app' a minute ago."""
    project.db = quiet_target(project, rows=20, later=5)
    return project


def undo_points(project, name="app"):
    ws = project.ws
    return [m for m in ws.vault.manifests(ws.target(name).id) if m.kind == KIND_UNDO]


def test_production_without_a_typed_name_is_refused_and_the_file_stays_byte_identical(app):
    before = content(app.db)
    r = app.run("restore", "app", "--latest", "--in-place", input="")
    assert r.code == 3
    assert "--confirm app" in r.err
    assert "PRODUCTION" in r.err and "will lose" in r.err
    assert content(app.db) == before
    assert undo_points(app) == []


def test_yes_alone_never_replaces_production(app):
    before = content(app.db)
    r = app.run("restore", "app", "--latest", "--in-place", "--yes", input="")
    assert r.code == 3
    assert "--yes alone never replaces a production database" in r.err
    assert content(app.db) == before
    assert undo_points(app) == []


def test_a_wrong_confirm_name_is_refused(app):
    before = content(app.db)
    r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "staging-app")
    assert r.code == 3
    assert "does not match the target's name 'app'" in r.err
    assert content(app.db) == before


@pytest.mark.parametrize("extra", [["--env", "staging"], ["--check", "full"]])
def test_options_of_a_restore_into_a_new_database_are_refused_with_in_place_not_ignored(app, extra):
    before = content(app.db)
    r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app", *extra)
    assert r.code == 2 and "go with --to" in r.err
    assert content(app.db) == before
    assert undo_points(app) == []


def test_confirm_with_the_name_restores_keeps_the_identity_and_leaves_an_undo_point(app):
    eng = SqliteEngine()
    ident_before = eng.read_identity(app.db)
    state_before = dump(app.db)
    r = app.run("--json", "restore", "app", "--snapshot", app.snapshot_id, "--in-place", "--confirm", "app")
    assert r.code == 0, r.err
    assert dump(app.db) == app.state_at_snapshot
    ident = eng.read_identity(app.db)
    assert (ident.target_id, ident.name, ident.env, ident.kind) == (ident_before.target_id, "app", "production", "original")
    assert ident.generation > ident_before.generation
    assert r.json["identity"]["generation"] == ident.generation
    undo = undo_points(app)
    assert [u.id for u in undo] == [r.json["undo_point"]["id"]]
    assert undo[0].tag == "undo"
    assert app.ws.vault.latest(app.ws.target("app").id).id == app.snapshot_id  # --latest never picks an undo point
    assert eng.check_integrity(app.db, full=True) == []
    assert r.json["plan"]["loss"]["totals"]["lost"] == 10  # 5 users and 5 posts written after the snapshot
    assert state_before != app.state_at_snapshot


def test_an_in_place_restore_over_a_large_index_keeps_an_undo_point_of_only_what_changed(app, monkeypatch,
                                                                                        whole_index_loads):
    """Past LEAN_READ_INDEX_BYTES the index is read in part, in place and by undo too (no index
    object loaded whole); each undo point deduplicates against the pages of the newest restore
    point and of the point last put in place (told to the vault in one pass), not against
    nothing, and the restore and its undos give back the exact contents."""
    from mulligan.vault import vault as vault_mod

    assert app.call("snapshot", "app").code == 0  # the state the undo point will hold, already in the vault
    state_before = dump(app.db)
    monkeypatch.setattr(vault_mod, "LEAN_READ_INDEX_BYTES", 0)
    r = app.call("--json", "restore", "app", "--snapshot", app.snapshot_id, "--in-place", "--confirm", "app")
    assert r.code == 0, r.err
    assert dump(app.db) == app.state_at_snapshot
    (undo,) = undo_points(app)
    assert undo.new_chunks <= 2, undo.new_chunks  # its pages were all in the vault (a tree node at most)
    whole_index_loads.clear()  # none from here on, in undo too
    assert app.call("undo", "app", "--confirm", "app").code == 0
    assert dump(app.db) == state_before
    assert whole_index_loads == []
    second = undo_points(app)[-1]  # the state undo replaced, the restore point just restored
    # only what the in-place restore changed itself (the header and the identity stamp) and a tree
    # node, as with the whole index loaded (3); 7 when only the newest restore point was told
    assert second.new_chunks <= 3, second.new_chunks
    assert app.call("undo", "app", "--confirm", "app").code == 0
    assert dump(app.db) == app.state_at_snapshot


def test_undo_right_after_a_restore_gives_back_the_exact_previous_content(app):
    before = dump(app.db)
    assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 0
    assert dump(app.db) == app.state_at_snapshot
    r = app.run("undo", "app", "--confirm", "app")  # Mulligan's own write a moment ago is not live use
    assert r.code == 0, r.err
    assert dump(app.db) == before


def test_undo_is_its_own_inverse(app):
    before = dump(app.db)
    assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 0
    assert app.run("undo", "app", "--confirm", "app").code == 0
    assert dump(app.db) == before
    assert app.run("undo", "app", "--confirm", "app").code == 0
    assert dump(app.db) == app.state_at_snapshot
    assert len(undo_points(app)) == 3
    gens = SqliteEngine().read_identity(app.db).generation
    assert gens >= 4  # protect 1, then one step per replacement


def test_undo_is_guarded_like_restore(app):
    assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 0
    before = content(app.db)
    r = app.run("undo", "app", "--yes", input="")
    assert r.code == 3
    assert content(app.db) == before


def test_undo_without_any_undo_point_says_so(app):
    r = app.run("undo", "app", "--confirm", "app")
    assert r.code == 1
    assert "no undo point" in r.err


def test_a_snapshot_of_another_target_is_refused_unless_allowed(app):
    staging_db = make_db(app.dir / "staging.db", rows=3)
    app.protect(staging_db, "staging-app", "staging")
    settle(staging_db)
    before = content(staging_db)
    r = app.run("restore", "staging-app", "--snapshot", app.snapshot_id, "--in-place", "--yes")
    assert r.code == 3
    assert "belongs to target 'app'" in r.err
    assert content(staging_db) == before
    assert undo_points(app, "staging-app") == []

    r = app.run("--json", "restore", "staging-app", "--snapshot", app.snapshot_id, "--in-place", "--yes",
                "--allow-cross-target")
    assert r.code == 0, r.err
    assert any("personal data" in w for w in r.json["plan"]["warnings"])
    assert dump(staging_db) == app.state_at_snapshot
    ident = SqliteEngine().read_identity(staging_db)
    assert (ident.name, ident.env, ident.target_id) == ("staging-app", "staging", app.ws.target("staging-app").id)


def test_a_stamp_that_disagrees_with_the_configuration_is_refused(app):
    other = make_db(app.dir / "other.db", rows=2)
    app.protect(other, "other", "development")
    assert app.call("snapshot", "other").code == 0
    shutil.copy(app.db, other)  # the production file now sits where 'other' is configured
    settle(other)
    before = content(other)
    r = app.run("restore", "other", "--latest", "--in-place", "--yes", input="")
    assert r.code == 3
    assert "says it is target 'app'" in r.err
    assert content(other) == before


def test_a_database_without_a_stamp_is_refused(app):
    conn = apsw.Connection(app.db)
    conn.execute("DROP TABLE _mulligan_identity")
    conn.close()
    settle(app.db)
    before = content(app.db)
    r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app")
    assert r.code == 3
    assert "no identity stamp" in r.err
    assert content(app.db) == before


def test_other_environments_need_yes_or_a_prompt(project):
    db = quiet_target(project, "stage", "staging", rows=5, later=2)
    before = content(db)
    r = project.run("restore", "stage", "--latest", "--in-place", input="")
    assert r.code == 3 and "--yes" in r.err
    assert content(db) == before
    assert project.run("restore", "stage", "--latest", "--in-place", "--yes").code == 0


def test_a_refusal_with_json_carries_the_plan(app):
    r = app.run("--json", "restore", "app", "--latest", "--in-place", "--yes", input="")
    assert r.code == 3
    err = r.json
    assert err["error"] == "refused"
    plan = err["details"]["plan"]
    assert plan["target"]["production"] is True and plan["target"]["name"] == "app"
    assert plan["point"]["id"] == app.snapshot_id
    assert {t["table"] for t in plan["loss"]["tables"]} >= {"users", "posts"}


def test_a_connection_the_app_holds_open_sees_the_restored_content_and_keeps_writing_into_the_file(app):
    import subprocess
    import sys

    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "print(c.execute('select count(*) from users').fetchone()[0], flush=True)\n"
        "sys.stdin.readline()\n"
        "print(c.execute('select count(*) from users').fetchone()[0], flush=True)\n"
        "c.execute(\"insert into users(username, email) values ('after', 'a@example.com')\"); c.commit()\n"
        "print('written', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script, app.db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "25"
        r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app", "--force-live")
        assert r.code == 0, r.err
        assert f"pid {p.pid}" in r.err  # the evidence is shown even when overridden
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "20"
        assert p.stdout.readline().strip() == "written"
    finally:
        p.stdin.close()
        p.wait(timeout=10)
    names = [row[1] for row in dict(dump(app.db))["users"]]
    assert len(names) == 21 and names[-1] == "after"


@pytest.mark.parametrize("point_wal,target_wal", [(False, True), (True, False)])
def test_the_target_keeps_its_journal_mode_whatever_the_points(project, point_wal, target_wal):
    db = make_db(project.dir / "j.db", rows=4, wal=point_wal)
    project.protect(db, "j", "staging")
    assert project.call("snapshot", "j").code == 0
    at_snapshot = dump(db)
    conn = apsw.Connection(db)
    conn.execute(f"PRAGMA journal_mode={'wal' if target_wal else 'delete'}").fetchall()
    conn.close()
    make_db(db, rows=2, wal=target_wal)
    settle(db)
    r = project.run("restore", "j", "--latest", "--in-place", "--yes")
    assert r.code == 0, r.err
    assert dump(db) == at_snapshot
    conn = apsw.Connection(db)
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == ("wal" if target_wal else "delete")
    conn.close()


def test_a_second_in_place_change_of_the_same_target_at_once_is_refused(app):
    from mulligan.storage.local import LocalStorage
    from mulligan.vault.locks import Lease

    t = app.ws.target("app")
    lease = Lease(LocalStorage(app.dir / ".mulligan" / "vault"), "writer", f"in-place change of app ({t.id})").acquire()
    try:
        before = content(app.db)
        r = app.run("restore", "app", "--latest", "--in-place", "--confirm", "app")
        assert r.code == 3
        assert "another in-place change of 'app' is running" in r.err
        assert content(app.db) == before
    finally:
        lease.release()
    assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 0


def test_the_live_window_comes_from_the_configuration(app):
    with open(app.config_path, "a") as fh:
        fh.write("\n[guards]\nlive_window_seconds = 2\n")
    write_rows(app.db, 1)
    assert app.call("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 3
    time.sleep(2.1)
    assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 0
