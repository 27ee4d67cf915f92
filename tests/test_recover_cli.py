"""`mulligan recover` from the command line: plan by default, guarded apply, SQL script, JSON."""

from __future__ import annotations

import json

import apsw
import pytest

from mulligan.ops import audit
from test_recover_scenario import build_states
from test_recover_support import Db, copy_db, file_digest


@pytest.fixture
def app(project, tmp_path):
    (tmp_path / "states").mkdir()
    base, lost, current, _ = build_states(tmp_path / "states")
    project.protect(current, name="app", env="production")
    return project, base, lost, current


def test_the_plan_is_the_default_and_writes_nothing(app):
    env, base, lost, current = app
    before = file_digest(current)
    res = env.run("recover", "app", "--base", base, "--lost", lost)
    assert res.code == 0, res.err
    assert "Recovery plan" in res.out and "unique" in res.out
    assert "no Mulligan identity stamp" in res.err  # BASE and LOST are plain files: a warning, not a refusal
    assert file_digest(current) == before


def test_json_lists_every_lost_row_and_every_conflict(app):
    env, base, lost, current = app
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["kind"] == "recovery-plan" and data["applied"] is False
    assert {c["kind"] for c in data["conflicts"]} >= {"unique", "parent-conflict"}
    assert {"lost": [5], "now": data["key_map"]["users"][0]["now"]} in data["key_map"]["users"]
    erin = [r for r in data["rows"] if r["table"] == "users" and r["lost_key"] == [5]][0]
    assert erin["status"] == "remapped" and erin["owner"]["label"] == "erin"


def test_apply_on_production_without_the_name_is_refused_with_exit_3(app):
    env, base, lost, current = app
    before = file_digest(current)
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply")
    assert res.code == 3, res.err
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--yes")
    assert res.code == 3, res.err
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "other")
    assert res.code == 3, res.err
    assert file_digest(current) == before


def test_apply_with_the_name_takes_an_undo_point_writes_and_audits(app):
    env, base, lost, current = app
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "app", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["kind"] == "recovery-result" and data["applied"] is True
    assert data["undo_point"]
    assert data["rows_recovered"] > 0
    users = Db(current).tables["users"]
    assert any(u["username"] == "erin" for u in users.values())
    entries = [e for e in audit.read(env.ws.vault, "app").entries if e["command"] == "recover"]
    assert [e["outcome"] for e in entries] == ["done"]
    assert entries[0]["detail"]["undo_point"] == data["undo_point"]
    undo = [m for m in env.ws.vault.manifests(env.ws.target("app").id) if m.id == data["undo_point"]]
    assert undo and undo[0].kind == "undo"


def test_a_refused_apply_is_in_the_audit_log_and_a_plan_is_not(app):
    env, base, lost, current = app
    env.run("recover", "app", "--base", base, "--lost", lost)
    env.run("recover", "app", "--base", base, "--lost", lost, "--apply")
    entries = [e for e in audit.read(env.ws.vault, "app").entries if e["command"] == "recover"]
    assert [e["outcome"] for e in entries] == ["refused"]


def test_the_sql_script_does_what_apply_does(app, tmp_path):
    env, base, lost, current = app
    script = tmp_path / "plan.sql"
    rehearsal = copy_db(current, tmp_path / "rehearsal.db")
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--sql-out", str(script))
    assert res.code == 0, res.err
    conn = apsw.Connection(rehearsal)
    conn.execute(script.read_text())
    conn.close()
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "app")
    assert res.code == 0, res.err
    assert Db(rehearsal).tables == Db(current).tables
    assert Db(rehearsal).seq == Db(current).seq


def test_recover_can_rehearse_on_a_copy_given_as_current(app, tmp_path):
    env, base, lost, current = app
    copy = copy_db(current, tmp_path / "copy.db")
    live = file_digest(current)
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--current", copy, "--apply", "--confirm", "app")
    assert res.code == 0, res.err
    assert file_digest(current) == live
    assert any(u["username"] == "erin" for u in Db(copy).tables["users"].values())


def test_recover_without_base_and_lost_is_a_usage_error(app):
    env, *_ = app
    res = env.run("recover", "app")
    assert res.code == 2


def test_apply_is_refused_when_the_file_at_the_targets_path_is_not_the_target(app, tmp_path):
    env, base, lost, current = app
    copy_db(base, current)  # someone put an unstamped file where the target should be
    before = file_digest(current)
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "app")
    assert res.code == 3, res.err
    assert "identity stamp" in res.err
    assert file_digest(current) == before


def test_recover_with_an_incident_takes_its_states_and_records_the_outcome_in_it(app):
    from mulligan.ops import incidents

    env, base, lost, current = app
    ws = env.ws
    inc = incidents.open_incident(ws.vault, ws.target("app"), kind="manual", title="restored over prod",
                                  base=base, lost=lost)
    res = env.run("recover", "app", "--incident", inc["id"])
    assert res.code == 0, res.err
    planned = incidents.get(env.ws.vault, inc["id"])["recovery"]
    assert planned["applied"] is False and planned["remapped"] > 0
    res = env.run("recover", "app", "--incident", inc["id"], "--apply", "--confirm", "app")
    assert res.code == 0, res.err
    rec = incidents.get(env.ws.vault, inc["id"])["recovery"]
    assert rec["applied"] is True and rec["undo_point"]
    assert any(r["status"] == "remapped" and r["owner"] for r in rec["rows"])


@pytest.mark.parametrize("large_index", [False, True])
def test_the_whole_day_with_vault_states_restore_over_production_then_recover(project, tmp_path, monkeypatch,
                                                                                large_index, whole_index_loads):
    """Large index: past LEAN_READ_INDEX_BYTES the states are read with the index read in part,
    no index object held whole, and the recovery is the same."""
    from mulligan.ops.snapshot import take_snapshot
    from mulligan.vault import vault as vault_mod
    from test_recover_scenario import BASE_ROWS, CURRENT_WRITES, LOST_WRITES, SCHEMA, write

    app_db = str(tmp_path / "app.db")
    write(app_db, SCHEMA)
    write(app_db, BASE_ROWS)
    project.protect(app_db, name="app", env="production")
    ws = project.ws
    target = ws.target("app")
    base_id = take_snapshot(ws, target, tag="nightly").id
    old_copy = copy_db(app_db, tmp_path / "nightly.db")  # what the engineer will restore by mistake
    write(app_db, LOST_WRITES)
    lost_id = take_snapshot(ws, target).id
    copy_db(old_copy, app_db)  # the mistake: the nightly goes back over production (stamp and all)
    write(app_db, CURRENT_WRITES)  # users keep writing

    whole_index_loads.clear()
    if large_index:
        monkeypatch.setattr(vault_mod, "LEAN_READ_INDEX_BYTES", 0)
    res = project.call("recover", "app", "--base", base_id[:10], "--lost", lost_id, "--apply", "--confirm", "app", "--json")
    assert res.code == 0, res.err
    assert whole_index_loads == [] or not large_index
    assert "no Mulligan identity stamp" not in res.err  # vault states carry the stamp
    data = json.loads(res.out)
    assert data["applied"] and data["remapped"] >= 4
    users = {u["username"] for u in Db(app_db).tables["users"].values()}
    assert {"alice", "bob", "carol", "frank", "dave", "erin"} <= users
    assert Db(app_db).fk_violations == []


def test_a_second_apply_of_the_same_recovery_exits_3_and_the_plan_warns(app):
    env, base, lost, current = app
    assert env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "app").code == 0
    undo_points = [m.id for m in env.ws.vault.manifests(env.ws.target("app").id) if m.kind == "undo"]
    again = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "app")
    assert again.code == 3 and "already merged" in again.err
    assert [m.id for m in env.ws.vault.manifests(env.ws.target("app").id) if m.kind == "undo"] == undo_points
    plan = env.run("recover", "app", "--base", base, "--lost", lost, "--json")
    assert plan.code == 0 and plan.json["already_applied"]["writes"] > 0


def test_a_plan_with_nothing_lost_says_so(app):
    env, base, lost, current = app
    res = env.run("recover", "app", "--base", base, "--lost", base)
    assert res.code == 0 and "Nothing to recover" in res.out


def test_an_unwritable_sql_out_is_refused_before_anything_is_applied(app, tmp_path):
    env, base, lost, current = app
    before = file_digest(current)
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--apply", "--confirm", "app",
                  "--sql-out", str(tmp_path / "no-such-folder" / "plan.sql"), "--json")
    assert res.code == 2, res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert json.loads(res.out)["error"] == "usage"
    assert file_digest(current) == before


def test_base_and_lost_given_with_an_incident_that_records_neither_are_used(app):
    env, base, lost, current = app
    inc = env.run("incident", "open", "app", "--title", "rolled back by hand", "--json").json["id"]
    summary = env.run("incident", "summary", inc, "--json").json
    assert f"mulligan incident impact {inc} --base STATE --lost STATE" in summary["next_step"]
    res = env.run("incident", "impact", inc, "--base", base, "--lost", lost, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["base"] == base
    # the next step the summary names now works: BASE and LOST come from the impact in the record
    summary = env.run("incident", "summary", inc, "--json").json
    assert f"mulligan recover app --incident {inc}." in summary["next_step"]
    res = env.run("recover", "app", "--incident", inc, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["base"] == base
    other = env.run("incident", "open", "app", "--title", "another", "--json").json["id"]
    res = env.run("recover", "app", "--incident", other, "--base", base, "--lost", lost, "--json")
    assert res.code == 0, res.err  # given states win over a record that has none
    assert json.loads(res.out)["kind"] == "recovery-plan"


def test_apply_into_a_restore_point_given_as_current_is_refused_not_reported_done(app):
    env, base, lost, current = app
    point = env.run("snapshot", "app", "--json").json["id"]
    live = file_digest(current)
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--current", point, "--apply", "--confirm", "app",
                  "--json")
    assert res.code == 2, res.out + res.err
    assert json.loads(res.out)["error"] == "usage" and "read-only" in res.err
    assert file_digest(current) == live
    res = env.run("recover", "app", "--base", base, "--lost", lost, "--current", point, "--json")  # a plan is fine
    assert res.code == 0, res.err


def test_a_rehearsal_on_a_copy_is_kept_in_the_incident_as_a_plan_not_as_applied(app, tmp_path):
    env, base, lost, current = app
    copy = copy_db(current, tmp_path / "copy.db")
    inc = env.run("incident", "open", "app", "--title", "t", "--base", base, "--lost", lost, "--json").json["id"]
    res = env.run("recover", "app", "--incident", inc, "--current", copy, "--apply", "--confirm", "app")
    assert res.code == 0, res.err
    record = env.run("incident", "show", inc, "--json").json["incident"]
    assert record["recovery"]["applied"] is False
    assert not any(e["event"] == "recovery applied" for e in record["timeline"])
