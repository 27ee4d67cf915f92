"""The audit log: every guarded case leaves an entry; an edited or removed entry is detected."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import make_db
from test_guards import holder
from test_inplace import quiet_target, settle


@pytest.fixture
def app(project):
    project.db = quiet_target(project, later=2)
    return project


def entries(project, *args):
    r = project.run("--json", "audit", *args)
    assert r.code == 0, r.err
    return r.json["entries"]


def audit_dir(project):
    return project.dir / ".mulligan" / "vault" / "audit"


def test_every_guarded_case_leaves_an_audit_entry(app):
    other = make_db(app.dir / "other.db", rows=2)
    app.protect(other, "other", "development")
    assert app.call("snapshot", "other").code == 0
    settle(other)
    app_snap = entries(app)[1]["detail"]  # the snapshot entry: no detail
    assert app_snap is None
    snap_id = app.ws.vault.latest(app.ws.target("app").id).id

    cases = [
        (("restore", "app", "--latest", "--in-place"), 3),                       # no typed name, no terminal
        (("restore", "app", "--latest", "--in-place", "--yes"), 3),              # --yes alone
        (("restore", "app", "--latest", "--in-place", "--confirm", "ap"), 3),    # wrong name
        (("restore", "other", "--snapshot", snap_id, "--in-place", "--yes"), 3),  # another target's snapshot
        (("restore", "app", "--latest", "--in-place", "--confirm", "app"), 0),
        (("undo", "app", "--confirm", "app"), 0),
    ]
    for args, code in cases:
        r = app.run(*args, input="")
        assert r.code == code, (args, r.err)
    with holder(app.db):
        assert app.run("restore", "app", "--latest", "--in-place", "--confirm", "app").code == 3
    shutil.copy(app.db, other)
    settle(other)
    assert app.run("restore", "other", "--latest", "--in-place", "--yes").code == 3

    log = [e for e in entries(app) if e["command"] in ("restore", "undo")]
    assert [e["outcome"] for e in log] == ["refused"] * 4 + ["done", "done", "refused", "refused"]
    reasons = [e["detail"]["reason"] for e in log if e["outcome"] == "refused"]
    assert "needs its name typed" in reasons[0]
    assert "--yes alone" in reasons[1]
    assert "does not match" in reasons[2]
    assert "belongs to target 'app'" in reasons[3]
    assert "in live use" in reasons[4] and "pid" in reasons[4]
    assert "says it is target 'app'" in reasons[5]
    done = log[4]
    assert done["target"]["name"] == "app" and done["target"]["env"] == "production"
    assert done["detail"]["confirmed_by"] == "--confirm" and done["detail"]["undo_point"]
    assert all(e["user"] and e["host"] and e["pid"] and e["argv"].startswith("mulligan ") for e in log)
    # the plan's facts travel with the refusal
    assert log[0]["detail"]["point"] == snap_id and log[0]["detail"]["refusals"] == []
    assert log[6]["detail"]["live"] is True and log[6]["detail"]["refusals"]


def test_audit_of_one_target_lists_only_its_entries(app):
    make_db(app.dir / "b.db", rows=1)
    app.protect(str(app.dir / "b.db"), "b", "test")
    assert app.call("snapshot", "b").code == 0
    names = {e["target"]["name"] for e in entries(app, "b")}
    assert names == {"b"}
    r = app.run("audit", "app")
    assert r.code == 0 and "snapshot app" in r.out and "hash chain ok" in r.err


def test_an_edited_audit_entry_is_detected_by_audit_and_by_verify(app):
    assert app.run("restore", "app", "--latest", "--in-place", "--yes", input="").code == 3
    refused = sorted(audit_dir(app).iterdir())[-1]
    entry = json.loads(refused.read_text())
    assert entry["outcome"] == "refused"
    entry["outcome"] = "done"  # someone hides the near-miss
    refused.write_text(json.dumps(entry, sort_keys=True))
    r = app.run("audit")
    assert r.code == 4
    assert "edited after it was written" in r.err
    assert app.run("--json", "audit").json["chain_ok"] is False
    r = app.run("--json", "verify")
    assert r.code == 4
    assert any("audit log" in p["problem"] for p in r.json["problems"])


def test_a_removed_audit_entry_breaks_the_chain(app):
    assert app.call("snapshot", "app").code == 0
    first = sorted(audit_dir(app).iterdir())[0]
    first.unlink()
    r = app.run("audit")
    assert r.code == 4
    assert "missing" in r.err


def test_read_only_commands_leave_no_entry(app):
    n = len(entries(app))
    assert app.run("guard", app.db).code == 3
    assert app.run("audit").code == 0
    assert len(entries(app)) == n


def test_appending_reads_the_head_not_the_whole_log_and_survives_a_stale_or_missing_head():
    import os
    import threading

    from mulligan.ops import audit
    from mulligan.vault import Vault

    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    for i in range(3):
        audit.record(v, command="snapshot", outcome="done", argv=["mulligan", "snapshot", str(i)])
    listing = v.storage.list
    v.storage.list = lambda prefix="": (_ for _ in ()).throw(AssertionError(f"listed {prefix}"))
    try:
        assert audit.record(v, command="snapshot", outcome="done")["seq"] == 4  # from the head alone
        v.storage.put(audit.HEAD, json.dumps({"seq": 1}).encode(), overwrite=True)  # stale
        assert audit.record(v, command="snapshot", outcome="done")["seq"] == 5
    finally:
        v.storage.list = listing
    v.storage.delete(audit.HEAD)  # a vault written before the head existed
    assert audit.record(v, command="snapshot", outcome="done")["seq"] == 6
    v.storage.put(audit.HEAD, json.dumps({"seq": 99}).encode(), overwrite=True)  # names no entry
    assert audit.record(v, command="snapshot", outcome="done")["seq"] == 7
    threads = [threading.Thread(target=audit.record, kwargs={"vault": v, "command": "c", "outcome": "done"})
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = audit.read(v)
    assert check.ok, check.problems
    assert [e["seq"] for e in check.entries] == list(range(1, 16))


def test_two_appenders_that_write_the_same_entry_at_the_same_instant_both_keep_theirs(monkeypatch):
    """Same seq, same second, same process and command: the two entries would be the same bytes,
    and a put of bytes already under the key succeeds (a retried write whose answer was lost).
    Each entry carries bytes of its own, so the second appender is refused and takes the next place."""
    import os
    import threading

    from mulligan.ops import audit
    from mulligan.vault import Vault

    v = Vault.create(f"memory://{os.urandom(6).hex()}")
    audit.record(v, command="snapshot", outcome="done")
    monkeypatch.setattr(audit, "utc_now", lambda t=audit.utc_now(): t)
    both_read = threading.Barrier(2)
    tail = audit._tail
    waited = set()

    def tail_then_wait(vault):
        found = tail(vault)
        if threading.get_ident() not in waited:  # the first try of each appender reads the same tail
            waited.add(threading.get_ident())
            both_read.wait(timeout=5)
        return found

    monkeypatch.setattr(audit, "_tail", tail_then_wait)
    written = []
    threads = [threading.Thread(target=lambda: written.append(audit.record(v, command="c", outcome="done")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["seq"] for e in written) == [2, 3]
    check = audit.read(v)
    assert check.ok, check.problems
    assert [e["seq"] for e in check.entries] == [1, 2, 3]
