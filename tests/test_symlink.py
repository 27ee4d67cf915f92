"""A database path that is a symbolic link (each release's path linked to one shared file).

SQLite follows the link and keeps the -wal and -shm next to the file it resolves to;
Mulligan must read them there, or it takes every commit still in the WAL for absent.
"""

from __future__ import annotations

import os
import time

import apsw
import pytest

from conftest import dump
from test_watch_kit import Watch, ids_in, make_app_db

pytestmark = pytest.mark.timeout(90)


def _linked(project) -> tuple[str, str]:
    """(the link the target is protected as, the shared file it names)."""
    shared = project.dir / "shared"
    release = project.dir / "releases" / "r1"
    shared.mkdir()
    release.mkdir(parents=True)
    real = make_app_db(shared / "prod.db")
    link = release / "prod.db"
    os.symlink(os.path.relpath(real, release), link)
    project.protect(str(link))
    return str(link), real


def test_snapshot_of_a_linked_database_holds_the_commits_in_its_wal(project):
    link, real = _linked(project)
    app = apsw.Connection(link)
    app.execute("PRAGMA wal_autocheckpoint=0")  # the commits below stay in the WAL
    for i in range(30):
        app.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"in the wal {i}",))
    assert os.path.getsize(real + "-wal") > 0 and not os.path.exists(link + "-wal")
    r = project.run("snapshot", "app")
    assert r.code == 0, r.err
    out = project.dir / "r.db"
    r = project.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    assert dump(str(out)) == dump(real)
    assert len(ids_in(str(out))) == 80
    app.close()


def test_watch_captures_a_database_opened_through_a_link(project):
    link, real = _linked(project)
    w = Watch(project)
    app = apsw.Connection(link)
    app.set_busy_timeout(5000)
    for i in range(20):
        app.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"through the link {i}",))
    time.sleep(0.8)
    assert "capture failed" not in w.text()
    assert w.term() == 0
    out = project.dir / "r.db"
    r = project.run("restore", "app", "--latest", "--to", str(out))
    assert r.code == 0, r.err
    assert ids_in(str(out)) == ids_in(real) and len(ids_in(real)) == 70
    app.close()


def test_a_link_pointed_at_an_old_copy_is_a_rollback(project):
    """Re-pointing the link at an old copy while the application holds the shared file open is
    the `mv` case: an alert, and what the application still writes into its file is captured."""
    link, real = _linked(project)
    old = project.dir / "old.db"
    w = Watch(project)
    app = apsw.Connection(link)
    app.set_busy_timeout(5000)
    backup = apsw.Connection(str(old))
    with backup.backup("main", app, "main") as b:
        b.step(-1)
    backup.close()
    for i in range(10):
        app.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"after the copy {i}",))
    time.sleep(0.8)
    tmp = link + ".new"
    os.symlink(os.path.relpath(old, os.path.dirname(link)), tmp)
    os.replace(tmp, link)
    assert w.wait_for("ALERT rollback", 5), w.text()
    for i in range(5):
        app.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", (f"still into the shared file {i}",))
    time.sleep(0.8)
    assert w.term() == 0
    inc = project.run("incidents", "--json")
    assert inc.code == 0, inc.err
    listed = inc.json["incidents"]
    assert len(listed) == 1 and listed[0]["kind"] == "rollback", inc.out
    out = project.dir / "lkg.db"
    r = project.run("restore", "app", "--snapshot", listed[0]["last_good"]["point"], "--to", str(out))
    assert r.code == 0, r.err
    assert len(ids_in(str(out))) >= 60  # every commit made through the link before it moved
    latest = project.dir / "latest.db"
    r = project.run("restore", "app", "--latest", "--to", str(latest))
    assert r.code == 0, r.err
    assert ids_in(str(latest)) == ids_in(real)  # what the application wrote into its file after the move
    app.close()
