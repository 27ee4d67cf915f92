"""Retention next to a running watcher: prune frees data without stopping capture."""

import time

import apsw

from test_watch_kit import App, Watch, make_app_db
def test_prune_removes_data_while_watch_runs_and_capture_goes_on_without_losing_a_commit(project):
    """watch steps aside for a prune (stores what it holds, marks its lease yielded, waits), so
    retention frees space on a vault a watcher never stops writing to; afterwards it stores
    again whatever the prune removed that it still needs, and no commit is missed."""
    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    # Snapshots whose rewritten pages the live database no longer has: prune may free them.
    for i in range(3):
        c = apsw.Connection(db)
        with c:
            c.execute("UPDATE posts SET body = hex(randomblob(200))")
        c.close()
        if i < 2:
            assert project.run("snapshot", "app").code == 0
    app = App(db, project.dir / "app.log", rate=50)
    w = Watch(project, "app")
    try:
        time.sleep(1.5)
        r = project.run("--json", "prune", "app", "--keep-last", "1")
        assert r.code == 0, r.err
        res = r.json
        assert res["data_removal"] == "done", res
        assert res["packs_removed"] >= 1
        assert w.wait_for("the prune is over", 15), w.text()
        time.sleep(1.5)
    finally:
        app.stop()
        rc = w.term()
    assert rc == 0
    assert project.run("verify").code == 0
    out = project.dir / "latest.db"
    assert project.run("restore", "app", "--latest", "--to", str(out)).code == 0
    logged = [n for n, _ in app.log()]
    c = apsw.Connection(str(out))
    have = {r[0] for r in c.execute("SELECT id FROM posts")}
    c.close()
    assert logged and set(logged) <= have, f"{len(set(logged) - have)} commits missing after the prune"
