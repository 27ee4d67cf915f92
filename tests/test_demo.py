"""The drill, for real: the real watcher notices a rollback the test makes, and the postmortem's facts
are the ones the test caused. And `mulligan demo` tells the whole story in under a minute."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import apsw
import pytest

from mulligan.demo import blog
from mulligan.demo.drill import Drill
from mulligan.timeparse import iso, utc_now
from test_postmortem_browser import needs_chromium, open_in_chromium

pytestmark = pytest.mark.slow

LOST = [  # what the test writes between the nightly backup and the mistake: 3 users, 6 rows
    ("INSERT INTO posts(author_id, title, body, created_at) VALUES (1, 'first lost post', 'x', '2026-11-21')", "posts"),
    ("INSERT INTO posts(author_id, title, body, created_at) VALUES (1, 'second lost post', 'x', '2026-11-21')", "posts"),
    ("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (3, 2, 'lost comment 1', '2026-11-21')", "comments"),
    ("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (4, 2, 'lost comment 2', '2026-11-21')", "comments"),
    ("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (5, 2, 'lost comment 3', '2026-11-21')", "comments"),
    ("INSERT INTO users(username, email, joined_at) VALUES ('carol', 'carol@example.com', '2026-11-21')", "users"),
]


def _write(db: str, *statements: str) -> None:
    conn = blog.connect(db)
    for sql in statements:
        with conn:
            conn.execute(sql)
    conn.close()


def _rows(db: str, sql: str) -> list:
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def drilled(tmp_path_factory):
    d = Drill(tmp_path_factory.mktemp("drill") / "drill")
    d.prepare_dir()
    d.create_app(users=10, posts=20, comments=30)
    d.protect()
    try:
        d.start_watch()
        d.nightly_backup()
        _write(d.db, *(sql for sql, _ in LOST))
        d.wait_for_capture(iso(utc_now()))  # the watcher has them before production goes back
        d.restore_over_production()
        _write(d.db, "INSERT INTO posts(author_id, title, body, created_at) VALUES (4, 'written after', 'y', '2026-11-21')")
        d.wait_for_incident()
        d.assess()
        d.recover(apply=False)
        d.recover(apply=True)
    finally:
        d.stop()
    d.close_and_write_postmortem()
    return d


def test_the_watcher_opens_a_rollback_incident_naming_the_nightly_snapshot(drilled):
    inc = drilled.refresh()
    assert inc["kind"] == "rollback"
    assert inc["rolled_back_to"]["snapshot_id"] == drilled.nightly.id
    assert inc["last_good"]["time"] >= drilled.nightly.time


def test_the_postmortem_counts_the_users_and_rows_the_test_lost(drilled):
    facts = json.loads(drilled.mulligan("--json", "postmortem", drilled.incident["id"]).stdout)["facts"]
    assert facts["users_affected"] == 3  # users 1 and 2, and carol who signed up
    assert facts["rows_lost"] == 6 and facts["rows_recovered"] == 6 and facts["conflicts"] == 0
    assert {t["table"]: t["recovered"] for t in facts["per_table"]} == {"posts": 2, "comments": 3, "users": 1}
    assert facts["changed_outside_mulligan"] is True


def test_the_lost_rows_are_back_beside_what_was_written_after_the_mistake(drilled):
    titles = [r[0] for r in _rows(drilled.db, "SELECT title FROM posts WHERE created_at = '2026-11-21' ORDER BY id")]
    assert sorted(titles) == ["first lost post", "second lost post", "written after"]
    comments = _rows(drilled.db, "SELECT post_id, author_id, body FROM comments WHERE body LIKE 'lost comment %' ORDER BY body")
    assert comments == [(3, 2, "lost comment 1"), (4, 2, "lost comment 2"), (5, 2, "lost comment 3")]
    assert _rows(drilled.db, "SELECT count(*) FROM users WHERE username = 'carol'") == [(1,)]
    assert _rows(drilled.db, "PRAGMA foreign_key_check") == []


def test_the_postmortem_timeline_follows_the_order_of_the_drill(drilled):
    md = (drilled.dir / "postmortem.md").read_text()
    timeline = md.split("## Timeline (UTC)")[1].split("## Detection")[0]
    events = [line.split(" | ")[1] for line in timeline.splitlines() if line.startswith("| 2")]
    story = ["snapshot taken (the state production was later rolled back to)", "last good capture",
             "production rolled back", "impact computed", "recovery planned", "recovery applied", "incident closed"]
    assert all(e in events for e in story), events
    assert [events.index(e) for e in story] == sorted(events.index(e) for e in story)
    times = [line.split(" | ")[0].lstrip("| ") for line in timeline.splitlines() if line.startswith("| 2")]
    assert times == sorted(times)
    assert (drilled.dir / "postmortem.html").read_text().count("<svg") == 1


def test_the_demo_refuses_a_folder_that_holds_something_else(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    p = subprocess.run([sys.executable, "-m", "mulligan", "demo", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "is not empty and holds no earlier demo" in p.stderr
    assert "Traceback" not in p.stderr and (tmp_path / "keep.txt").read_text() == "mine"


def test_mulligan_demo_tells_the_whole_story_in_under_a_minute(tmp_path):
    out = tmp_path / "demo-out"
    env = {k: v for k, v in os.environ.items() if k != "MULLIGAN_CONFIG"}
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "mulligan", "--json", "demo", "--dir", str(out)],
                       capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    elapsed = time.monotonic() - started
    assert p.returncode == 0, p.stderr[-3000:]
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
    facts = json.loads(p.stdout)  # with --json the narration is on standard error, the facts on standard output
    n = facts["users_affected"]
    assert n > 0 and re.search(rf"^\s*{n} users potentially lost data$", p.stderr, re.M)
    assert facts["rows_recovered"] > 0 and facts["conflicts"] >= 2  # hedy signed up twice; post 57's title
    md = (out / "postmortem.md").read_text()
    assert f"{n} users potentially lost data" in md
    conflicts = md.split("Conflicts left for a person")[1].split("## ")[0]
    assert "hedy" in conflicts and "| posts | 57 |" in conflicts  # the two the story makes on purpose
    assert (out / "postmortem.html").exists() and facts["channel_messages"] >= 2
    for step in ("1. The app.", "5. The mistake.", "6. Detection.", "7. Impact.", "8. Recovery.", "10. The postmortem."):
        assert step in p.stderr


@needs_chromium
def test_the_drills_html_postmortem_opens_in_chromium_without_console_errors(drilled, tmp_path):
    run, console = open_in_chromium(drilled.dir / "postmortem.html", tmp_path, "screenshot")
    assert run.returncode == 0 and console == [], console
    assert (tmp_path / "postmortem.png").stat().st_size > 20_000
