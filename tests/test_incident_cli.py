"""The incident record from the command line: open, list, show, note, summary (--send), close."""

from __future__ import annotations

import pytest

from conftest import make_db
from mulligan.demo.channel import TeamChannel
from mulligan.errors import UsageError
from mulligan.ops import incidents as inc_ops


@pytest.fixture
def app(project):
    db = make_db(project.dir / "app.db", rows=5)
    project.protect(db, "app", "production")
    return project


@pytest.fixture
def channel():
    """A real HTTP endpoint standing in for the team channel's webhook; it keeps what it is sent."""
    with TeamChannel() as ch:
        yield ch


def open_incident(project, title="orders look wrong") -> str:
    res = project.call("--json", "incident", "open", "app", "--title", title)
    assert res.code == 0, res.err
    return res.json["id"]


def test_an_incident_opened_by_hand_is_listed_and_shown_with_its_timeline(app):
    iid = open_incident(app)
    listed = app.call("incidents", "--json").json["incidents"]
    assert [(i["id"], i["status"], i["kind"]) for i in listed] == [(iid, "open", "manual")]
    shown = app.call("incident", "show", iid, "--json").json
    assert shown["incident"]["title"] == "orders look wrong"
    assert [e["event"] for e in shown["timeline"]] == ["incident opened"]


def test_notes_join_the_timeline_in_the_order_they_were_written(app):
    iid = open_incident(app)
    assert app.call("incident", "note", iid, "checked", "the", "logs").code == 0
    assert app.call("incident", "note", iid[:8], "asked support").code == 0
    timeline = app.call("incident", "show", iid, "--json").json["timeline"]
    assert [(e["event"], e["detail"]) for e in timeline][1:] == [("note", "checked the logs"), ("note", "asked support")]
    assert [e["time"] for e in timeline] == sorted(e["time"] for e in timeline)


def test_incident_commands_are_written_to_the_audit_log(app):
    iid = open_incident(app)
    app.call("incident", "close", iid)
    from mulligan.ops.audit import read

    entries = read(app.ws.vault).entries
    argvs = [e["argv"] for e in entries if e["command"] == "incident"]
    assert any("incident open app" in a for a in argvs) and any(f"incident close {iid}" in a for a in argvs)


def test_closing_an_incident_twice_is_refused_in_one_line(app):
    iid = open_incident(app)
    assert app.call("incident", "close", iid).code == 0
    res = app.run("incident", "close", iid)
    assert res.code == 2
    assert res.err.startswith("mulligan: incident") and "already closed" in res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1


def test_an_unknown_incident_is_an_error_without_a_traceback(app):
    res = app.run("incident", "show", "inc-nope")
    assert res.code == 1 and res.out == ""
    assert "no incident 'inc-nope'" in res.err and "Traceback" not in res.err


def test_the_summary_says_what_is_unknown_and_the_next_step(app):
    iid = open_incident(app)
    res = app.call("incident", "summary", iid)
    assert res.code == 0
    lines = res.out.strip().splitlines()
    assert lines[0].startswith(f"Incident {iid} on app")
    assert [l.split(":")[0] for l in lines[1:]] == ["What happened", "Data at risk", "Users affected", "Status", "Next step"]
    assert "Users affected: not assessed yet" in res.out
    assert f"mulligan incident impact {iid} --base STATE --lost STATE" in res.out  # a manual incident does not know its states


def test_summary_send_posts_slack_compatible_json_to_the_configured_webhook(app, channel):
    with open(app.config_path, "a") as fh:
        fh.write(f'\n[alerts]\nwebhook = "{channel.url}"\n')
    iid = open_incident(app)
    res = app.run("incident", "summary", iid, "--send")
    assert res.code == 0, res.err
    assert channel.messages == [{"text": res.out.strip()}]
    assert channel.content_types == ["application/json"]
    inc = inc_ops.get(app.ws.vault, iid)
    assert [(a["channel"], a["ok"]) for a in inc["alerts"]] == [("team webhook", True)]
    assert "alert sent to team webhook" in [e["event"] for e in app.call("incident", "show", iid, "--json").json["timeline"]]


def test_summary_send_without_a_webhook_is_a_usage_error(app):
    iid = open_incident(app)
    res = app.run("incident", "summary", iid, "--send")
    assert res.code == 2 and "no webhook configured" in res.err and "[alerts] webhook" in res.err


def test_summary_send_to_an_unreachable_webhook_fails_in_one_line_and_records_the_failed_alert(app):
    with open(app.config_path, "a") as fh:
        fh.write('\n[alerts]\nwebhook = "http://127.0.0.1:9/nothing-listens-here"\n')
    iid = open_incident(app)
    res = app.run("incident", "summary", iid, "--send")
    assert res.code == 1
    assert "cannot reach the webhook" in res.err and "Traceback" not in res.err
    assert "Users affected" in res.out  # the text is still there to paste by hand
    inc = inc_ops.get(app.ws.vault, iid)
    assert [a["ok"] for a in inc["alerts"]] == [False]


def test_recover_takes_base_and_lost_from_the_record(app):
    from mulligan.ops.snapshot import take_snapshot

    base = take_snapshot(app.ws, app.ws.target("app")).id
    res = app.call("--json", "incident", "open", "app", "--title", "rolled back", "--kind", "rollback",
                   "--base", base[:8], "--lost", "live")
    inc = inc_ops.get(app.ws.vault, res.json["id"])
    assert inc_ops.recovery_states(inc) == (base[:8], "live")


def test_an_incident_naming_a_state_that_does_not_exist_is_not_opened(app):
    res = app.run("incident", "open", "app", "--title", "t", "--base", "feedbeef")
    assert res.code == 1 and "no restore point has an id starting with 'feedbeef'" in res.err
    assert app.call("incidents", "--json").json["incidents"] == []


def test_recover_states_fall_back_to_the_detected_snapshot_and_last_good_point():
    inc = {"id": "inc-1", "rolled_back_to": {"snapshot_id": "feed0001"}, "last_good": {"time": "2026-11-21T10:00:00.000Z"}}
    assert inc_ops.recovery_states(inc) == ("feed0001", "@2026-11-21T10:00:00.000Z")
    with pytest.raises(UsageError, match="does not record BASE"):
        inc_ops.recovery_states({"id": "inc-2", "last_good": {"point": "abcd"}})
