"""Alerts: the log always, a webhook (retried, never blocking), staleness of capture."""

from __future__ import annotations

import io
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

import apsw
import pytest

from mulligan.ops.alerts import Alerter, Log
from test_watch_kit import Hook, Watch, configure, make_app_db

pytestmark = pytest.mark.timeout(60)


def test_a_webhook_that_fails_at_first_is_retried_until_it_takes_the_alert():
    hook = Hook(fail_first=2).start()
    out = io.StringIO()
    a = Alerter({"webhook": hook.url}, Log(out))
    rec = a.alert("rollback", "production went back in time", {"incident": {"id": "inc-1"}})
    assert rec["channels"] == ["log", "webhook"]
    got = hook.wait("rollback", 8)
    hook.stop()
    assert got is not None and got[1]["text"] == "production went back in time"
    assert got[1]["incident"]["id"] == "inc-1"
    assert "ALERT rollback" in out.getvalue() and "after 2 retries" in out.getvalue()


def test_a_hanging_webhook_never_blocks_the_caller():
    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            time.sleep(3)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    a = Alerter({"webhook": f"http://127.0.0.1:{srv.server_address[1]}/"}, Log(io.StringIO()))
    t0 = time.monotonic()
    for _ in range(5):
        a.alert("stale-capture", "x")
    assert time.monotonic() - t0 < 0.1
    srv.shutdown()


def test_stale_capture_alerts_when_a_target_cannot_be_captured(project):
    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    hook = Hook().start()
    configure(project, hook, alerts={"stale_after": "1s"})
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    t0 = time.time()
    w = Watch(project, "app", ready="capture failed")
    got = hook.wait("stale-capture", 6)
    w.term()
    hook.stop()
    assert got is not None, w.text()
    assert got[0] - t0 < 4
    assert "stale" in got[1]["text"] and "app" in got[1]["text"] and got[1]["error"]
    assert "ALERT stale-capture" in w.text()


class _SMTP(threading.Thread):
    """A minimal SMTP server on 127.0.0.1 that keeps the messages it receives."""

    def __init__(self):
        super().__init__(daemon=True)
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []

    def run(self):
        conn, _ = self.sock.accept()
        f = conn.makefile("rwb")

        def say(line: str):
            f.write((line + "\r\n").encode())
            f.flush()

        say("220 test ESMTP")
        data, in_data = [], False
        for raw in f:
            line = raw.decode().rstrip("\r\n")
            if in_data:
                if line == ".":
                    self.messages.append("\n".join(data))
                    in_data = False
                    say("250 ok")
                else:
                    data.append(line)
                continue
            cmd = line.split(" ")[0].upper()
            if cmd in ("EHLO", "HELO"):
                say("250 test")
            elif cmd == "DATA":
                in_data = True
                say("354 go on")
            elif cmd == "QUIT":
                say("221 bye")
                break
            else:
                say("250 ok")
        conn.close()


def test_an_alert_is_mailed_through_smtp_when_configured():
    srv = _SMTP()
    srv.start()
    a = Alerter({"smtp": f"127.0.0.1:{srv.port}", "email_to": "oncall@example.com"}, Log(io.StringIO()))
    rec = a.alert("rollback", "production went back in time", {"incident": {"id": "inc-2"}})
    assert "email" in rec["channels"]
    srv.join(10)
    assert srv.messages and "production went back in time" in srv.messages[0] and "inc-2" in srv.messages[0]


def test_drain_on_shutdown_waits_for_a_delivery_in_flight():
    """watch calls drain() before it exits (SIGTERM right after a rollback alert): the queue is
    empty as soon as the delivery thread has taken the alert, but the POST is still under way.
    drain must wait for it, or the process exits and the team never hears of the rollback."""
    got = []

    class SlowOk(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            time.sleep(0.6)
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), SlowOk)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        a = Alerter({"webhook": f"http://127.0.0.1:{srv.server_address[1]}/"}, Log(io.StringIO()))
        a.alert("rollback", "production went back in time")
        time.sleep(0.1)  # the delivery thread has taken it off the queue
        a.drain(5.0)
        assert a.sent == 1 and len(got) == 1
    finally:
        srv.shutdown()


def test_status_check_and_alert_notice_a_watcher_that_died(project):
    """The watcher alerts when it cannot capture, but not when it is killed (the OOM killer, a
    host crash) or hangs: a timer running ``status --alert`` does. Exit 1 when stale, 0 when a
    watch captures; the alert goes through the configured webhook."""
    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    hook = Hook().start()
    configure(project, hook, capture={"status_interval": "0.5s"}, alerts={"stale_after": "4s"})
    try:
        w = Watch(project, "app")
        ok = project.run("status", "--check")
        assert ok.code == 0, ok.err
        w.proc.kill()  # no last heartbeat: it still says "running", and grows old
        w.proc.wait()
        time.sleep(4.5)
        checked = project.run("status", "--check")
        assert checked.code == 1 and "capture is stale for 1 of 1 targets: app" in checked.err, checked.err
        assert not hook.received  # --check alone sends nothing
        alerted = project.run("--json", "status", "--alert")
        assert alerted.code == 1 and alerted.json["targets"][0]["stale"]
        got = hook.wait("stale-capture", 2)
        assert got is not None, alerted.err
        assert "'app'" in got[1]["text"] and "heartbeat" in got[1]["text"] and got[1]["target"] == "app"
        # a timer runs it again: the same stale capture is not alerted twice
        again = project.run("status", "--alert")
        assert again.code == 1 and "went out at" in again.err, again.err
        time.sleep(0.3)
        assert len(hook.received) == 1
        # captured again, then stale again: news again
        w = Watch(project, "app")
        with apsw.Connection(db) as conn:
            conn.execute("INSERT INTO notes(body) VALUES ('after the restart')")
        time.sleep(1.0)
        assert project.run("status", "--alert").code == 0
        w.proc.kill()
        w.proc.wait()
        time.sleep(4.5)
        assert project.run("status", "--alert").code == 1
        time.sleep(0.3)
        assert len([b for _, b in hook.received if b.get("kind") == "stale-capture"]) == 2
    finally:
        hook.stop()


def test_status_alert_from_a_machine_that_may_only_read_the_vault_still_alerts(project):
    """The record of an alert sent cannot be written (a read-only vault): the alert goes out all
    the same, and the next run sends it again rather than never."""
    from mulligan.errors import StorageError
    from mulligan.ops.status import alert_stale, status

    project.protect(make_app_db(project.dir / "app.db"))
    ws = project.ws

    def refused(*a, **k):
        raise StorageError("permission denied")

    ws.vault.storage.put = refused
    out = io.StringIO()
    a = Alerter({}, Log(out))
    rows = status(ws)
    assert alert_stale(ws, rows, a) == [("app", None)]
    assert alert_stale(ws, rows, a) == [("app", None)]
    assert out.getvalue().count("ALERT stale-capture") == 2
