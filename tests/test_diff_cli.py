"""The diff command: files without configuration, vault states by id and time, formats, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import apsw

from conftest import make_db
from diffkit import build, derive, run
from mulligan.ops.snapshot import take_snapshot

MULLIGAN = [sys.executable, "-m", "mulligan"]


def pair(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB);"
                                 "INSERT INTO t VALUES (1, 'one', NULL), (2, 'two', x'00ff'), (3, 'three', NULL);"
                                 "CREATE TABLE u(id INTEGER PRIMARY KEY); INSERT INTO u VALUES (1)")
    b = derive(a, tmp_path / "b.db", "UPDATE t SET name = 'TWO' WHERE id = 2; DELETE FROM t WHERE id = 3;"
                                     "INSERT INTO t VALUES (4, 'four', x'01'); DELETE FROM u")
    return a, b


def mulligan(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MULLIGAN_CONFIG"}
    p = subprocess.run(MULLIGAN + list(args), cwd=cwd, capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_two_files_are_compared_without_any_configuration_and_differences_exit_zero(tmp_path):
    a, b = pair(tmp_path)
    code, out, err = mulligan("diff", a, b, cwd=tmp_path)
    assert code == 0, err
    assert not (tmp_path / "mulligan.toml").exists()
    assert "t" in out and "changed" in out
    assert "name: 'two' → 'TWO'" in out
    assert "+ id=4" in out and "- id=3" in out


def test_the_json_flag_and_format_json_give_the_documented_shape(tmp_path):
    a, b = pair(tmp_path)
    code, out, _ = mulligan("diff", a, b, "--json", cwd=tmp_path)
    assert code == 0
    doc = json.loads(out)
    assert json.loads(mulligan("diff", "--format", "json", a, b, cwd=tmp_path)[1]) == doc
    assert doc["summary"]["inserted"] == 1 and doc["summary"]["deleted"] == 2 and doc["summary"]["updated"] == 1
    t = next(t for t in doc["tables"] if t["name"] == "t")
    assert t["key"] == ["id"] and t["status"] == "changed"
    ins = next(r for r in t["rows"] if r["kind"] == "insert")
    assert ins == {"kind": "insert", "key": {"id": 4}, "before": None, "after": {"id": 4, "name": "four", "data": {"blob": "01"}}}
    upd = next(r for r in t["rows"] if r["kind"] == "update")
    assert upd["changed"] == ["name"] and upd["before"]["name"] == "two" and upd["after"]["name"] == "TWO"


def test_summary_gives_counts_only_and_table_narrows_the_comparison(tmp_path, capsys):
    from mulligan.cli.main import main

    a, b = pair(tmp_path)
    assert main(["diff", a, b, "--summary", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all("rows" not in t for t in doc["tables"])
    assert main(["diff", a, b, "--table", "u", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in doc["tables"]] == ["u"]
    assert main(["diff", a, b, "--summary"]) == 0
    out = capsys.readouterr().out
    assert "'TWO'" not in out and "total" in out


def test_format_sql_prints_a_script_that_turns_from_into_to(tmp_path):
    a, b = pair(tmp_path)
    code, out, _ = mulligan("diff", a, b, "--format", "sql", cwd=tmp_path)
    assert code == 0 and out.startswith("-- mulligan diff")
    conn = apsw.Connection(a)
    run(conn, out)
    conn.close()
    assert mulligan("diff", a, b, "--json", cwd=tmp_path)[1].count('"kind"') == 2  # only the two state descriptions


def test_a_wrong_number_of_arguments_is_a_usage_error(tmp_path):
    a, _ = pair(tmp_path)
    code, out, err = mulligan("diff", a, cwd=tmp_path)
    assert code == 2 and out == "" and "FROM TO" in err


def test_a_missing_file_is_reported_without_a_traceback(tmp_path):
    a, _ = pair(tmp_path)
    code, out, err = mulligan("diff", a, str(tmp_path / "nope.db"), cwd=tmp_path)
    assert code != 0 and out == "" and "Traceback" not in err


def test_a_snapshot_prefix_and_a_time_are_compared_with_the_live_database(project):
    db = make_db(project.dir / "app.db", rows=20)
    project.protect(db)
    ws = project.ws
    m = take_snapshot(ws, ws.target("app"))
    conn = apsw.Connection(db)
    run(conn, "DELETE FROM posts WHERE id <= 3; UPDATE users SET email = 'new@example.com' WHERE id = 5")
    conn.close()
    r = project.call("diff", "app", m.id[:8], "live", "--json")
    assert r.code == 0, r.err
    doc = r.json
    assert doc["from"]["snapshot"] == m.id and doc["to"]["kind"] == "live"
    counts = {t["name"]: (t["inserted"], t["updated"], t["deleted"]) for t in doc["tables"]}
    assert counts == {"posts": (0, 0, 3), "users": (0, 1, 0)}
    time.sleep(0.01)
    r2 = project.call("diff", "app", "@" + time.strftime("%Y-%m-%dT%H:%M:%S.999Z", time.gmtime()), "live", "--summary", "--json")
    assert r2.code == 0, r2.err
    assert r2.json["summary"]["deleted"] == 3
    r3 = project.call("diff", "app", "live", m.id)
    assert r3.code == 0 and "posts" in r3.out


def test_standard_output_carries_only_the_report_and_narration_goes_to_standard_error(tmp_path):
    a, b = pair(tmp_path)
    code, out, err = mulligan("-v", "diff", a, b, "--format", "sql", cwd=tmp_path)
    assert code == 0
    assert out.startswith("-- mulligan diff") and "compared in" not in out
    code, out, err = mulligan("diff", a, b, "-v", cwd=tmp_path)
    assert "compared in" in err and "compared in" not in out


def test_schema_only_changes_are_listed_without_a_row_table(tmp_path):
    a = build(tmp_path / "a.db", "CREATE TABLE k(id INTEGER PRIMARY KEY, a)")
    b = derive(a, tmp_path / "b.db", "CREATE INDEX ka ON k(a)")
    code, out, _ = mulligan("diff", a, b, cwd=tmp_path)
    assert code == 0 and "no row differs" in out and "added index ka" in out


def test_json_with_another_format_is_a_usage_error_in_json_not_sql_or_csv_on_stdout(tmp_path):
    a, b = pair(tmp_path)
    for command, fmt in (("diff", "sql"), ("diff", "text"), ("impact", "csv")):
        code, out, err = mulligan(command, a, b, "--format", fmt, "--json", cwd=tmp_path)
        assert code == 2, (command, fmt, out, err)
        assert json.loads(out)["error"] == "usage"
        assert len(err.strip().splitlines()) == 1 and "--json" in err
    code, out, _ = mulligan("diff", a, b, "--format", "json", "--json", cwd=tmp_path)
    assert code == 0 and json.loads(out)["summary"]["inserted"] == 1


def test_a_state_that_is_not_a_database_is_named_alone(tmp_path):
    a, b = pair(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 50)
    for command in ("diff", "impact"):
        code, out, err = mulligan(command, str(notes), b, cwd=tmp_path)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
        assert f"{notes} is not a SQLite database" in err and str(b) not in err


def test_a_damaged_database_is_an_integrity_failure_in_one_line(tmp_path):
    good = build(tmp_path / "good.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
                 "INSERT INTO t(v) SELECT printf('%.200c', 'x') FROM n")
    bad = tmp_path / "bad.db"
    data = bytearray(open(good, "rb").read())
    data[4096 * 3:4096 * 8] = b"\xff" * (4096 * 5)
    bad.write_bytes(bytes(data))
    for command in ("diff", "impact"):
        code, out, err = mulligan(command, good, str(bad), "--json", cwd=tmp_path)
        assert code == 4, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert json.loads(out)["error"] == "integrity"
