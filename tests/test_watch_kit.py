"""Helpers for the watch tests: a real application process, a real watcher process,
a local webhook receiver. (No tests here; the watch tests import it.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import apsw

from conftest import MULLIGAN, Env, free_port  # noqa: F401  (free_port: the watch tests import it from here)

_STARTED: list[subprocess.Popen] = []


def _reap() -> None:
    """Processes a failed test left running (its assertion came before term()/stop())."""
    for p in _STARTED:
        if p.poll() is None:
            p.kill()


import atexit  # noqa: E402

atexit.register(_reap)

APP = textwrap.dedent('''
    import apsw, os, signal, sys, time
    path, logpath, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    conn = apsw.Connection(path)
    conn.set_busy_timeout(5000)
    log = open(logpath, "a", buffering=1)
    stop = False
    def on_term(*a):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    n = 0
    while not stop:
        n += 1
        with conn:  # a write transaction that begins with a write (see docs/capture.md)
            conn.execute("UPDATE users SET name = name WHERE id = 1")
            if n % 10 == 1:
                conn.execute("INSERT INTO users(name) VALUES (?)", (f"u{n}",))
                conn.execute("INSERT INTO notes(body) VALUES (?)", (f"note {n}",))
            uid = conn.execute("SELECT max(id) FROM users").fetchone()[0]
            conn.execute("INSERT INTO posts(user_id, body) VALUES (?, ?)", (uid, "p" * 200))
            pid = conn.last_insert_rowid()
        log.write(f"{pid} {time.time():.6f}\\n")
        if rate:
            time.sleep(1.0 / rate)
    conn.close()
''')


def make_app_db(path: Path) -> str:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(
        "CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);"
        "CREATE TABLE posts(id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER, body TEXT);"
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
    )
    with conn:
        conn.execute("INSERT INTO users(name) VALUES ('first')")
        for i in range(50):
            conn.execute("INSERT INTO posts(user_id, body) VALUES (1, ?)", ("seed " * 40,))
    conn.close()
    return str(path)


class App:
    """The application: commits continuously and logs each commit's id and time."""

    def __init__(self, db: str, logpath: Path, rate: float = 100):
        script = Path(logpath).with_suffix(".app.py")
        script.write_text(APP)
        self.logpath = Path(logpath)
        self.proc = subprocess.Popen([sys.executable, str(script), db, str(logpath), str(rate)],
                                     stdout=subprocess.PIPE, text=True)
        _STARTED.append(self.proc)
        assert self.proc.stdout.readline().strip() == "ready"

    def log(self) -> list[tuple[int, float]]:
        out = []
        for line in self.logpath.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((int(parts[0]), float(parts[1])))
        return out

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Hook:
    """A webhook receiver on 127.0.0.1 that records each POST with its arrival time."""

    received: list = field(default_factory=list)
    fail_first: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> "Hook":
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hook.fail_first > 0:
                    hook.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def wait(self, kind: str, timeout: float = 6.0) -> tuple[float, dict] | None:
        end = time.time() + timeout
        while time.time() < end:
            for t, body in self.received:
                if body.get("kind") == kind:
                    return t, body
            time.sleep(0.02)
        return None

    def stop(self):
        if self.server:
            self.server.shutdown()


def configure(env: Env, hook: Hook | None = None, capture: dict | None = None, alerts: dict | None = None) -> None:
    text = env.config_path.read_text()
    lines = ["", "[capture]"]
    for k, v in (capture or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    lines += ["", "[alerts]"]
    if hook:
        lines.append(f"webhook = {json.dumps(hook.url)}")
    for k, v in (alerts or {}).items():
        lines.append(f"{k} = {json.dumps(v)}")
    env.config_path.write_text(text + "\n".join(lines) + "\n")


class Watch:
    """``mulligan watch`` as a real process."""

    def __init__(self, env: Env, *args: str, ready: str = "capturing"):
        self.errpath = env.dir / f"watch-{time.time_ns()}.log"
        e = dict(os.environ)
        e.pop("MULLIGAN_CONFIG", None)
        self.err = open(self.errpath, "w")
        self.proc = subprocess.Popen(MULLIGAN + ["-v", "watch", *args], cwd=env.dir, stdout=subprocess.DEVNULL,
                                     stderr=self.err, env=e)
        _STARTED.append(self.proc)
        assert self.wait_for(ready, 15), self.text()

    def text(self) -> str:
        return self.errpath.read_text()

    def wait_for(self, needle: str, timeout: float = 10) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if needle in self.text():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.02)
        return False

    def term(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(20)
        self.err.close()
        return rc

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.err.close()


def ids_in(path: str, table: str = "posts") -> list[int]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
    finally:
        conn.close()


def seq_of(path: str, table: str) -> int:
    conn = apsw.Connection(path)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        return row[0] if row else 0
    finally:
        conn.close()


def watcher_in_thread(ws, target, flush_interval: float):
    """A Watcher run in a thread of the test process (to reach into it), once its capture has a
    base: (watcher, thread). The caller stops it: ``w.stop(); th.join()``."""
    import io

    from mulligan.ops.alerts import Alerter, Log
    from mulligan.ops.capture import CaptureOptions
    from mulligan.ops.capture_watch import Watcher

    log = Log(io.StringIO())
    w = Watcher(ws, [target], CaptureOptions(flush_interval=flush_interval), Alerter({}, log), log)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (w.slots[0].capture and w.slots[0].capture.base):
        time.sleep(0.05)
    if not (w.slots[0].capture and w.slots[0].capture.base):
        w.stop()
        th.join(30)
        raise AssertionError("the watcher did not start capturing within 20 s")
    return w, th


def capture_in_process(project, start: bool = True, **options):
    """A target "app" (make_app_db) and its TargetCapture in the test process, logging into a
    StringIO: (capture, database path, log text). Nothing is polled until the test steps it."""
    import io

    from mulligan.ops.alerts import Alerter, Log
    from mulligan.ops.capture import CaptureOptions, TargetCapture

    db = make_app_db(project.dir / "app.db")
    project.protect(db)
    ws = project.ws
    out = io.StringIO()
    log = Log(out)
    cap = TargetCapture(ws, ws.target("app"), CaptureOptions(**options), Alerter({}, log), log)
    if start:
        cap.start()
    return cap, db, out
