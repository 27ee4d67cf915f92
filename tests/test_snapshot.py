"""Consistent snapshots of a database that another process keeps writing."""

import os
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from mulligan.ops.restore import restore_new
from mulligan.ops.snapshot import take_snapshot

WRITER = str(Path(__file__).with_name("writer.py"))


def start_writer(db: Path, *extra: str, project=None) -> subprocess.Popen:
    """Start the stand-in app; with ``project``, protect the database before the app starts writing."""
    if project is not None:
        sys.path.insert(0, str(Path(WRITER).parent))
        import writer

        journal = extra[extra.index("--journal") + 1] if "--journal" in extra else "wal"
        writer.setup(str(db), journal)
        project.protect(str(db))
    p = subprocess.Popen([sys.executable, WRITER, str(db), *extra], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def assert_one_commit(path: str) -> int:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    n = conn.execute("SELECT n FROM state").fetchone()[0]
    count, lo, hi = conn.execute("SELECT count(*), min(n), max(n) FROM log").fetchone()
    conn.close()
    assert count == n and (n == 0 or (lo == 1 and hi == n)), f"torn state: state.n={n}, log has {count} rows {lo}..{hi}"
    return n


@pytest.mark.parametrize("extra", [(), ("--checkpoints",)], ids=["autocheckpoint", "app-truncate-checkpoints"])
def test_snapshots_taken_while_a_writer_commits_restore_to_exactly_one_commit(project, extra):
    db = project.dir / "app.db"
    writer = start_writer(db, *extra, project=project)
    try:
        time.sleep(0.3)
        ws = project.ws
        target = ws.target("app")
        seen = []
        for i in range(6):
            m = take_snapshot(ws, target)
            out = str(project.dir / f"r{i}.db")
            restore_new(ws, m, out)
            seen.append(assert_one_commit(out))
            time.sleep(0.05)
    finally:
        writer.kill()
        writer.wait()
    assert seen == sorted(seen) and seen[-1] > seen[0], "snapshots must follow the writer's progress"


def test_a_snapshot_does_not_hold_up_the_writer(project):
    """The writer's commits keep flowing during a snapshot of a WAL database."""
    db = project.dir / "app.db"
    writer = start_writer(db, project=project)
    try:
        time.sleep(0.3)
        ws = project.ws
        before = apsw.Connection(str(db)).execute("SELECT n FROM state").fetchone()[0]
        m = take_snapshot(ws, ws.target("app"))
        after = apsw.Connection(str(db)).execute("SELECT n FROM state").fetchone()[0]
    finally:
        writer.kill()
        writer.wait()
    assert m.meta["journal_mode"] == "wal" and m.meta.get("writer_pause_ms") is None
    assert m.meta["wal_scan"] == "wal-index"
    assert after > before


def test_a_rollback_journal_database_is_snapshotted_and_the_writer_pause_is_reported(project):
    db = project.dir / "app.db"
    writer = start_writer(db, "--journal", "delete", "--rate", "200", project=project)
    try:
        time.sleep(0.3)
        r = project.run("snapshot", "app", "--json")
    finally:
        writer.kill()
        writer.wait()
    assert r.code == 0, r.err
    row = r.json
    assert row["journal_mode"] == "delete" and row["writer_pause_ms"] >= 0
    restored = project.dir / "r.db"
    ws = project.ws
    restore_new(ws, ws.vault.resolve(row["id"]), str(restored))
    assert_one_commit(str(restored))


def test_the_cli_snapshot_then_restore_round_trips_content(project):
    from conftest import dump, make_db

    db = make_db(project.dir / "app.db", rows=300)
    assert project.call("protect", db, "--name", "app", "--env", "staging").code == 0
    r = project.call("snapshot", "app", "--tag", "before-deploy")
    assert r.code == 0, r.err
    r = project.call("restore", "app", "--latest", "--to", "copy.db")
    assert r.code == 0, r.err
    assert dump(str(project.dir / "copy.db")) == dump(db)
    listing = project.call("--json", "snapshots", "app").json
    assert listing["snapshots"][0]["tag"] == "before-deploy"


def test_a_restored_copy_is_stamped_as_a_copy_and_never_passes_for_the_original(project):
    from conftest import make_db

    from mulligan.engines.sqlite.engine import SqliteEngine

    db = make_db(project.dir / "app.db")
    project.protect(db, env="production")
    assert project.call("snapshot", "app").code == 0
    r = project.call("--json", "restore", "app", "--latest", "--to", "copy.db")
    assert r.code == 0
    ident = SqliteEngine().read_identity(str(project.dir / "copy.db"))
    original = SqliteEngine().read_identity(db)
    assert ident.kind == "restored" and ident.env == "restored"
    assert ident.target_id != original.target_id and ident.source_target_id == original.target_id
    assert "personal data" in r.err


def test_a_snapshot_over_a_large_index_holds_none_of_it_and_stores_only_what_changed(project, monkeypatch,
                                                                                   whole_index_loads):
    """Past LEAN_READ_INDEX_BYTES a snapshot loads no index object whole (memory would grow with
    the history): it deduplicates against the pages of the target's newest restore point, looked
    up once its writer lease is held (a prune may run until then), and restores exactly."""
    from conftest import dump, make_db

    from mulligan.ops import snapshot as snapshot_mod
    from mulligan.vault import vault as vault_mod
    from mulligan.vault.locks import live_leases

    db = make_db(project.dir / "app.db", rows=30000)
    project.protect(db, env="production")
    assert project.call("snapshot", "app").code == 0
    make_db(db, rows=3)  # a few more rows: most pages are the same
    target = project.ws.target("app")
    os.unlink(project.ws.cache_file(target, "blocks"))  # no block digests to reuse: every page is looked up
    monkeypatch.setattr(vault_mod, "LEAN_READ_INDEX_BYTES", 0)
    leases = []
    real_likely = snapshot_mod.likely_pages
    whole_index_loads.clear()

    def likely(ws, t):
        leases.append(len(live_leases(ws.vault.storage, "writer")))
        return real_likely(ws, t)

    monkeypatch.setattr(snapshot_mod, "likely_pages", likely)
    r = project.call("--json", "snapshot", "app")
    assert r.code == 0, r.err
    assert whole_index_loads == [] and leases == [1]
    m = project.ws.vault.manifest(target.id, r.json["id"])
    assert m.page_count > 64 * 16  # tree nodes over more than 16 blocks of pages: most unchanged
    # the pages the rows changed, the header, the tree nodes over them: 9 here; 25 when the
    # unchanged tree nodes were not looked up too
    assert m.new_chunks <= 12, (m.new_chunks, m.page_count)
    assert project.call("restore", "app", "--snapshot", m.id, "--to", "copy.db").code == 0
    assert dump(str(project.dir / "copy.db")) == dump(db)
