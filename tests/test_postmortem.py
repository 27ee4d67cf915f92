"""The postmortem draft says what the recorded facts say: who lost what, in which order, and what to change."""

from __future__ import annotations

import getpass
import socket

import apsw
import pytest

from mulligan.demo import blog
from mulligan.demo.drill import Drill
from mulligan.ops import incidents as inc_ops
from mulligan.ops import postmortem as pm_ops
from mulligan.ops import summary as summary_ops
from mulligan.ops.snapshot import take_snapshot
from mulligan.ops.states import materialize


def _sql(db: str, *statements: tuple) -> None:
    conn = blog.connect(db)
    with conn:
        for sql, args in statements:
            conn.execute(sql, args)
    conn.close()


@pytest.fixture
def recovered(tmp_path):
    """A rollback the test makes itself, recovered for real; the incident is opened as the watcher opens it."""
    d = Drill(tmp_path / "drill")
    d.prepare_dir()
    d.create_app(users=10, posts=20, comments=30)
    d.protect()
    ws, target = d.ws, d.target
    base = take_snapshot(ws, target, tag="nightly")
    # What is about to be lost: 3 users, 6 rows.
    now = blog.now()
    _sql(d.db,
         ("INSERT INTO posts(author_id, title, body, created_at) VALUES (1, 'first lost post', 'x', ?)", (now,)),
         ("INSERT INTO posts(author_id, title, body, created_at) VALUES (1, 'second lost post', 'x', ?)", (now,)),
         ("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (3, 2, 'lost comment 1', ?)", (now,)),
         ("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (4, 2, 'lost comment 2', ?)", (now,)),
         ("INSERT INTO comments(post_id, author_id, body, created_at) VALUES (5, 2, 'lost comment 3', ?)", (now,)),
         ("INSERT INTO users(username, email, joined_at) VALUES ('carol', 'carol@example.com', ?)", (now,)))
    last_good = take_snapshot(ws, target, tag="last good")
    with materialize(ws.vault, target, base.id) as old:  # the old copy, restored over production outside Mulligan
        src, dst = apsw.Connection(old), apsw.Connection(d.db)
        with dst.backup("main", src, "main") as b:
            b.step(-1)
        src.close(), dst.close()
    changed_at = blog.now().replace(" ", "T") + "Z"
    # After the mistake a user writes on an id the lost post had.
    _sql(d.db, ("INSERT INTO posts(author_id, title, body, created_at) VALUES (4, 'written after', 'y', ?)", (blog.now(),)))
    d.incident = inc_ops.open_incident(
        ws.vault, target, kind="rollback", title="blog went back in time",
        detection={"signals": ["sqlite_sequence fell"], "detected_at": inc_ops.iso(inc_ops.utc_now()), "changed_at": changed_at},
        last_good={"time": last_good.time, "point": last_good.id},
        rolled_back_to={"snapshot_id": base.id, "time": base.time, "age_seconds": 1.0})
    d.assess()
    d.recover(apply=False)
    d.recover(apply=True)
    return d


def test_the_timeline_tells_the_events_in_the_order_they_happened(recovered):
    pm = pm_ops.build(recovered.refresh(), inc_ops.timeline_for(recovered.ws.vault, recovered.incident), [])
    order = [e["event"] for e in pm.timeline]
    story = ["snapshot taken (the state production was later rolled back to)", "last good capture",
             "production rolled back", "rollback detected", "impact computed", "recovery planned",
             "undo point taken", "recovery applied"]
    assert [order.index(e) for e in story] == sorted(order.index(e) for e in story)
    assert [e["time"] for e in pm.timeline] == sorted(e["time"] for e in pm.timeline)


def test_a_change_made_outside_mulligan_asks_for_guarded_restores_and_blames_no_one(recovered):
    res = recovered.mulligan("postmortem", recovered.incident["id"])
    md = res.stdout
    assert "the change was made outside Mulligan" in md
    assert "requires typing the target's name" in md
    factors = md.split("## Contributing factors")[1].split("## Action items")[0]
    assert getpass.getuser() not in factors and socket.gethostname() not in factors
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections == ["## Summary", "## Impact", "## Timeline (UTC)", "## Detection", "## Response and recovery",
                        "## What went well", "## What went poorly", "## Where we got lucky",
                        "## Contributing factors", "## Action items"]


def test_the_postmortem_is_written_to_files_as_markdown_and_html(recovered, tmp_path):
    iid = recovered.incident["id"]
    assert recovered.mulligan("postmortem", iid, "-o", str(tmp_path / "pm.md")).returncode == 0
    res = recovered.mulligan("postmortem", iid, "--format", "html", "-o", str(tmp_path / "pm.html"))
    assert res.returncode == 0 and res.stdout == "" and "wrote the postmortem draft" in res.stderr
    assert (tmp_path / "pm.md").read_text().startswith("# Postmortem (draft)")
    html = (tmp_path / "pm.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "data-loss window" in html


def test_the_team_summary_of_a_recovered_incident_gives_users_window_status_and_next_step(recovered):
    s = summary_ops.build(recovered.refresh())
    assert s.lines["users_affected"] == "3 users potentially lost data"
    assert "recovery applied: 6 lost rows written back" in s.lines["status"]
    assert s.lines["data_at_risk"].startswith("writes between ")
    assert "close the incident" in s.lines["next_step"]


def _incident(**extra) -> dict:
    inc = {"id": "inc-0000abcd", "target_id": "t-1", "target_name": "app", "kind": "rollback", "title": "app rolled back",
           "status": "open", "opened_at": "2026-11-21T10:15:05.000Z",
           "detection": {"signals": ["generation went down"], "detected_at": "2026-11-21T10:15:04.000Z",
                         "changed_at": "2026-11-21T10:15:02.000Z"},
           "last_good": {"time": "2026-11-21T10:15:01.000Z", "point": "@2026-11-21T10:15:01.000Z"},
           "rolled_back_to": {"snapshot_id": "aaaa1111", "time": "2026-11-20T17:02:00.000Z", "age_seconds": 61982},
           "timeline": [], "notes": [], "alerts": [], "impact": None, "recovery": None}
    inc.update(extra)
    return inc


def test_a_restore_through_mulligan_that_skipped_guards_is_named_and_yields_typed_name_action():
    entry = {"command": "restore", "outcome": "done", "time": "2026-11-21T10:15:03.000Z", "user": "sam", "host": "ops1",
             "pid": 42, "argv": "mulligan restore app --latest --in-place --yes --force-live",
             "target": {"id": "t-1", "name": "app"}}
    inc = _incident()
    pm = pm_ops.build(inc, inc_ops.assemble_timeline(inc, audit_entries=[entry]), [entry])
    change = next(e for e in pm.timeline if e["kind"] == "mistake")
    assert "mulligan restore app --latest --in-place --yes --force-live" in change["detail"]
    assert pm.facts["guard_flags"] == ["--yes", "--force-live"]
    assert any("Require the typed target name" in a["action"] for a in pm.actions)
    assert not any("sam" in f for f in pm.factors + pm.went_poorly)


def test_a_stale_capture_and_a_slow_detection_yield_alerts_on_both():
    inc = _incident(last_good={"time": "2026-11-21T08:00:00.000Z"},
                    detection={"signals": ["inode changed"], "detected_at": "2026-11-21T11:15:00.000Z",
                               "changed_at": "2026-11-21T10:15:02.000Z"})
    pm = pm_ops.build(inc, inc_ops.assemble_timeline(inc, audit_entries=[]), [])
    actions = " ".join(a["action"] for a in pm.actions)
    assert "Alert when the newest capture of a production target is older than 5 minutes" in actions
    assert "as a supervised service" in actions
    assert any("Detection took 60 min" in x for x in pm.went_poorly)


def test_an_incident_without_impact_or_recovery_says_what_is_not_known_yet():
    inc = _incident()
    pm = pm_ops.build(inc, inc_ops.assemble_timeline(inc), None)
    assert pm.facts["users_affected"] is None and pm.facts["rows_recovered"] is None
    assert "Who was affected was not assessed." in pm.impact
    assert any("No alert was sent" in x for x in pm.detection)
    assert any("webhook" in a["action"] for a in pm.actions)


def test_incident_impact_finds_who_lost_data_and_keeps_it_in_the_record(recovered):
    iid = recovered.incident["id"]
    res = recovered.mulligan("incident", "impact", iid)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("3 users potentially lost data")
    labels = {u["label"] for u in recovered.refresh()["impact"]["users"]}
    assert "carol" in labels and len(labels) == 3


def test_without_an_impact_report_the_users_come_from_the_recovery_rows(recovered):
    inc = dict(recovered.refresh(), impact=None)
    assert inc_ops.users_affected(inc) == 3
