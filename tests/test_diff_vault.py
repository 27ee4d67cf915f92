"""Vault states are diffed in place: read page by page from the vault, never restored to a file."""

from __future__ import annotations

import apsw

from conftest import make_db
from diffkit import run
from mulligan.ops.diff import diff, diff_states, vault_image
from mulligan.ops.snapshot import take_snapshot


def snapshots(project, wal: bool, rows: int = 300):
    db = make_db(project.dir / "app.db", rows=rows, wal=wal)
    project.protect(db)
    ws = project.ws
    target = ws.target("app")
    first = take_snapshot(ws, target)
    conn = apsw.Connection(db)
    run(conn, "DELETE FROM posts WHERE id % 50 = 0; UPDATE users SET email = 'x' WHERE id = 7;"
              "INSERT INTO users(username, email) VALUES ('late', 'late@example.com')")
    conn.close()
    second = take_snapshot(ws, target)
    return ws, target, db, first, second


def counts(d) -> dict:
    return {t.name: (t.inserted, t.updated, t.deleted) for t in d.changed_tables}


def test_two_snapshots_give_the_same_answer_as_the_two_files(project, tmp_path):
    ws, target, db, first, second = snapshots(project, wal=True)
    res = diff(ws, target, first.id, second.id)
    assert counts(res.diff) == {"posts": (0, 0, 6), "users": (1, 1, 0), "sqlite_sequence": (0, 1, 0)}
    assert res.from_state["snapshot"] == first.id and res.to_state["snapshot"] == second.id
    assert counts(diff(ws, target, first.id, "live").diff) == counts(res.diff)


def test_a_snapshot_compared_with_itself_or_its_own_file_has_no_differences(project):
    ws, target, db, first, second = snapshots(project, wal=False)
    assert not diff(ws, target, second.id, second.id).has_differences
    assert not diff(ws, target, second.id, "live").has_differences


def test_only_the_pages_the_comparison_needs_are_fetched_from_the_vault(project):
    ws, target, db, first, second = snapshots(project, wal=False, rows=3000)
    a, b = vault_image(ws.vault, first), vault_image(ws.vault, second)
    b.chunks = a.chunks
    fetched = []
    load = a.chunks.load_many
    a.chunks.load_many = lambda cids: (fetched.extend(cids), load(cids))[1]
    d = diff_states(a, b, tables=["users"])
    assert counts(d) == {"users": (1, 1, 0)}
    assert first.page_count > 100
    assert len(set(fetched)) < first.page_count / 4


def test_a_snapshot_is_compared_page_by_page_with_a_live_database_whose_writes_sit_in_its_wal(project):
    ws, target, db, first, second = snapshots(project, wal=True, rows=1000)
    conn = apsw.Connection(db)
    run(conn, "PRAGMA wal_autocheckpoint=0; UPDATE users SET email = 'wal@example.com' WHERE id = 3;"
              "DELETE FROM posts WHERE id = 999")
    try:
        res = diff(ws, target, second.id, "live")
        assert res.diff.pages_compared
        assert counts(res.diff) == {"users": (0, 1, 0), "posts": (0, 0, 1)}
        assert {t.name: t.method for t in res.diff.tables}["users"] in ("ranges", "full")
    finally:
        conn.close()


def test_two_vault_states_over_a_large_index_give_the_same_diff(project, monkeypatch):
    """Past LEAN_READ_INDEX_BYTES the index is read in part (one pass for the pages of both
    states, not one for each read SQLite makes): the same differences."""
    from mulligan.vault import vault as vault_mod

    ws, target, db, first, second = snapshots(project, wal=True)
    whole = project.call("--json", "diff", "app", first.id, second.id)
    monkeypatch.setattr(vault_mod, "LEAN_READ_INDEX_BYTES", 0)
    calls = []
    real = vault_mod.Vault._scan_index
    monkeypatch.setattr(vault_mod.Vault, "_scan_index", lambda self, *a: calls.append(1) or real(self, *a))
    lean = project.call("--json", "diff", "app", first.id, second.id)
    assert whole.code == lean.code == 0, lean.err
    assert lean.json["tables"] == whole.json["tables"] and lean.json["tables"]
    assert len(calls) == 2, len(calls)  # every tree node, then the pages of both states: not a pass per read

