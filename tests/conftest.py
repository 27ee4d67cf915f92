"""Shared fixtures: real SQLite files, a real vault in a temp folder, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import apsw
import pytest

from mulligan import config as cfg
from mulligan.cli.main import main as cli_main
from mulligan.ops import setup as setup_ops
from mulligan.ops.workspace import Workspace

MULLIGAN = [sys.executable, "-m", "mulligan"]


def make_db(path: Path | str, rows: int = 100, wal: bool = True, payload: int = 50) -> str:
    """A small app-like database: users and posts."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(5000)  # as every real application does: a running watch briefly takes the write lock
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT UNIQUE, email TEXT);"
        "CREATE TABLE IF NOT EXISTS posts(id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER REFERENCES users(id),"
        " body TEXT, created_at TEXT);"
    )
    with conn:
        for i in range(rows):
            conn.execute("INSERT INTO users(username, email) VALUES (?, ?)", (f"user{i}-{os.urandom(3).hex()}", f"u{i}@example.com"))
            conn.execute("INSERT INTO posts(user_id, body, created_at) VALUES (last_insert_rowid(), ?, datetime('now'))",
                         ("post " + "x" * payload,))
    conn.close()
    return str(path)


def dump(path: str) -> list:
    """Every row of every user table, for comparing databases by content."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    out = []
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_mulligan%' ORDER BY name")]
    for t in tables:
        out.append((t, conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()))
    conn.close()
    return out


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@dataclass
class Env:
    """A project folder with mulligan.toml and a vault."""

    dir: Path

    @property
    def config_path(self) -> Path:
        return self.dir / "mulligan.toml"

    @property
    def ws(self) -> Workspace:
        return Workspace.open(cfg.load(self.config_path))

    def run(self, *args: str, input: str | None = None, env: dict | None = None, timeout: float = 120) -> CliResult:
        """Run the real command in a subprocess (exit codes, stdout/stderr separation)."""
        e = dict(os.environ)
        e.pop("MULLIGAN_CONFIG", None)
        e.update(env or {})
        p = subprocess.run(MULLIGAN + list(args), cwd=self.dir, capture_output=True, text=True, input=input,
                           env=e, timeout=timeout)
        return CliResult(p.returncode, p.stdout, p.stderr)

    def call(self, *args: str) -> CliResult:
        """Run the CLI in-process (fast); stdout/stderr captured by capsys-free redirection."""
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(list(args))
        finally:
            os.chdir(cwd)
        return CliResult(code, out.getvalue(), err.getvalue())

    def protect(self, path: str, name: str = "app", env: str = "production"):
        return setup_ops.protect(self.ws, path, name, env)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (for --metrics-port, a proxy)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def project(tmp_path: Path) -> Env:
    setup_ops.init(tmp_path / "mulligan.toml")
    return Env(tmp_path)


@pytest.fixture
def whole_index_loads(monkeypatch) -> list[str]:
    """The keys of the index objects any vault of this process loads whole from now on
    (Vault.index); a command that reads a large index in part (Vault.lean) adds none."""
    from mulligan.vault import vault as vault_mod

    loaded: list[str] = []
    real = vault_mod.Vault._add_index
    monkeypatch.setattr(vault_mod.Vault, "_add_index", lambda self, key, data: (loaded.append(key), real(self, key, data)))
    return loaded


# ---- an S3 endpoint on 127.0.0.1 ------------------------------------------------------------
@dataclass
class S3Endpoint:
    """moto's S3 server, in a thread of the test process, speaking S3 over HTTP on loopback."""

    endpoint: str
    _buckets: int = 0

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def new_bucket(self) -> str:
        self._buckets += 1
        name = f"vault-{os.getpid()}-{self._buckets}"
        self.client().create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "vault") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}"


@pytest.fixture(scope="session")
def s3_server():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3Endpoint:
    """The endpoint, with credentials in the environment (the test's subprocesses inherit them)."""
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    return s3_server


class Outage:
    """A TCP proxy on 127.0.0.1 in front of a server, that can be cut off (every connection
    closed, new ones refused) and restored on the same port: a store that goes away. With
    ``rewrite``, each piece a client sends passes through it first (a server that drops a header)."""

    def __init__(self, target_port: int, rewrite=None, lose_reply=None):
        self.target_port = target_port
        self.rewrite = rewrite
        # lose_reply(piece) -> True: the server's answer to that request never reaches the
        # client (both connections closed instead): a write that landed, its answer lost.
        self.lose_reply = lose_reply
        self.lost_replies = 0
        self.port = free_port()
        self._conns: list = []
        self._listener = None

    def up(self) -> "Outage":
        import socket
        import threading

        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst

        def pump(a, b, change=None, state=None, to_client=False):
            try:
                while data := a.recv(1 << 16):
                    if state is not None and not to_client and self.lose_reply and self.lose_reply(data):
                        state["lose"] = True
                    if to_client and state.get("lose"):
                        self.lost_replies += 1
                        break
                    b.sendall(change(data) if change else data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def accept():
            while True:
                try:
                    client, _ = lst.accept()
                except OSError:
                    return
                server = socket.create_connection(("127.0.0.1", self.target_port))
                self._conns += [client, server]
                state: dict = {}
                threading.Thread(target=pump, args=(client, server, self.rewrite, state), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, None, state, True), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return self

    def down(self) -> None:
        import socket

        self._listener.close()
        for s in self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._conns = []
