"""The drill: each step of the story, run for real against the sample blog.

A :class:`Drill` owns a folder with the app's database, ``mulligan.toml``, the vault,
the users' write log and, at the end, the postmortem. Its steps call what a user
would: the ops API for setup and assessment, the real ``mulligan watch`` and
``mulligan recover`` commands as processes. Tests drive the same steps with their own
writes; :func:`run_drill` (``mulligan demo``) tells the whole story with simulated users.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw

from .. import config as cfg
from ..errors import MulliganError
from ..ops import incidents as inc_ops
from ..ops import setup as setup_ops
from ..ops.snapshot import take_snapshot
from ..ops.workspace import Workspace
from . import blog
from .channel import TeamChannel

MARKER = ".mulligan-demo"
TARGET = "blog"


class DrillFailed(MulliganError):
    """A step of the drill did not happen as the story needs."""


def _env() -> dict:
    e = dict(os.environ)
    e.pop("MULLIGAN_CONFIG", None)
    src = str(Path(__file__).resolve().parents[2])  # so the child processes import this very package
    e["PYTHONPATH"] = src + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


class Drill:
    def __init__(self, directory: Path, channel: TeamChannel | None = None):
        self.dir = directory.absolute()
        self.db = str(self.dir / "blog.db")
        self.backup = str(self.dir / "backups" / "blog-nightly.db")
        self.control = self.dir / "users"
        self.log = self.control / "writes.jsonl"
        self.channel = channel
        self.procs: dict[str, subprocess.Popen] = {}
        self.nightly = None
        self.mistake_at: str | None = None
        self.incident: dict | None = None

    # -- the project -------------------------------------------------------

    def prepare_dir(self) -> None:
        """An empty folder, or one holding only an earlier demo (which is replaced)."""
        if self.dir.exists() and any(self.dir.iterdir()):
            if not (self.dir / MARKER).exists():
                raise DrillFailed(f"{self.dir} is not empty and holds no earlier demo",
                                  unchanged="nothing in it was touched", hint="give --dir a new or empty folder")
            shutil.rmtree(self.dir)
        (self.dir / "backups").mkdir(parents=True)
        self.control.mkdir()
        (self.dir / MARKER).write_text("made by 'mulligan demo'; the next demo run in this folder replaces it\n")

    def create_app(self, **sizes) -> None:
        blog.create(self.db, **sizes)

    def protect(self) -> None:
        setup_ops.init(self.dir / "mulligan.toml")
        if self.channel is not None:
            with open(self.dir / "mulligan.toml", "a") as fh:
                fh.write(f'\n[alerts]\nwebhook = "{self.channel.url}"\n')
        setup_ops.protect(self.ws, self.db, TARGET, "production")

    @property
    def ws(self) -> Workspace:
        return Workspace.open(cfg.load(self.dir / "mulligan.toml"))

    @property
    def target(self):
        return self.ws.target(TARGET)

    def mulligan(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """The real command line, as a user would type it."""
        return subprocess.run([sys.executable, "-m", "mulligan", "--config", str(self.dir / "mulligan.toml"), *args],
                              cwd=self.dir, capture_output=True, text=True, timeout=timeout, env=_env())

    # -- processes -----------------------------------------------------------

    def start_watch(self, timeout: float = 15) -> None:
        from ..cli.main import cli

        if cli.get_command(None, "watch") is None:
            raise DrillFailed("this build of Mulligan has no 'watch' command, so nothing can notice the rollback",
                              hint="continuous capture and detection (ops/capture, ops/detect, cli/watch_cmd) are missing")
        log = open(self.dir / "watch.log", "w")
        self.procs["watch"] = subprocess.Popen(
            [sys.executable, "-m", "mulligan", "--config", str(self.dir / "mulligan.toml"), "watch", TARGET],
            cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, env=_env())
        ws, tid = self.ws, self.target.id
        deadline = time.monotonic() + timeout
        while not ws.vault.manifests(tid):
            if self.procs["watch"].poll() is not None:
                raise DrillFailed(f"'mulligan watch' stopped (exit {self.procs['watch'].returncode}); see {self.dir / 'watch.log'}")
            if time.monotonic() > deadline:
                raise DrillFailed(f"'mulligan watch' took no first capture within {timeout:.0f} s; see watch.log")
            time.sleep(0.1)

    def start_users(self, *, seed: int = 1, pace: float = 0.03) -> None:
        self.procs["users"] = subprocess.Popen(
            [sys.executable, "-m", "mulligan.demo.writer", self.db, "--log", str(self.log),
             "--control", str(self.control), "--seed", str(seed), "--pace", str(pace)],
            cwd=self.dir, env=_env(), stderr=open(self.control / "writer.err", "w"))

    def wait_for_capture(self, since: str, timeout: float = 20) -> str:
        """Until the watcher has stored a commit it saw at or after ``since`` (UTC ISO); its time."""
        from ..ops.status import target_status

        ws, target = self.ws, self.target
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = target_status(ws, target)["last_capture"]
            if last and last >= since:
                return last
            time.sleep(0.05)
        raise DrillFailed(f"the watcher stored nothing seen after {since} within {timeout:.0f} s; see watch.log")

    def pause_users(self) -> None:
        if "users" not in self.procs:
            return
        (self.control / "pause").touch()
        deadline = time.monotonic() + 10
        while not (self.control / "paused").exists():
            if time.monotonic() > deadline or self.procs["users"].poll() is not None:
                raise DrillFailed("the simulated users did not pause", hint=f"see {self.control / 'writer.err'}")
            time.sleep(0.01)

    def resume_users(self) -> None:
        (self.control / "pause").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the users, then the watcher; never leaves a process behind."""
        users = self.procs.pop("users", None)
        if users is not None:
            (self.control / "stop").touch()
            self.resume_users()
            _wait_or_kill(users, 10)
        watch = self.procs.pop("watch", None)
        if watch is not None:
            watch.send_signal(signal.SIGINT)
            _wait_or_kill(watch, 15)

    def writes(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    # -- the story ---------------------------------------------------------------

    def nightly_backup(self):
        """The team's nightly job: a plain copy of the file, and Mulligan's snapshot of the same moment."""
        self.pause_users()
        try:
            self.nightly = take_snapshot(self.ws, self.target, tag="nightly")
            src = apsw.Connection(self.db)
            dst = apsw.Connection(self.backup)
            with dst.backup("main", src, "main") as b:
                b.step(-1)
            dst.close()
            src.close()
        finally:
            self.resume_users()
        return self.nightly

    def restore_over_production(self) -> str:
        """The mistake, made the way the story's engineer made it: the old copy written into the live
        file with SQLite's backup API (what ``sqlite3 blog.db ".restore backups/blog-nightly.db"`` does),
        outside Mulligan, while the app keeps writing."""
        from ..timeparse import iso, utc_now

        src = apsw.Connection(self.backup, flags=apsw.SQLITE_OPEN_READONLY)
        dst = apsw.Connection(self.db)
        dst.set_busy_timeout(10_000)
        try:
            for _ in range(200):
                try:
                    with dst.backup("main", src, "main") as b:
                        b.step(-1)
                    break
                except apsw.BusyError:
                    time.sleep(0.02)
            else:
                raise DrillFailed("the live database stayed locked; the mistake could not be made")
        finally:
            dst.close()
            src.close()
        self.mistake_at = iso(utc_now())
        return self.mistake_at

    def wait_for_incident(self, timeout: float = 30) -> dict:
        ws, tid = self.ws, self.target.id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [i for i in inc_ops.list_incidents(ws.vault, tid) if i.get("kind") == "rollback"]
            if found:
                self.incident = found[-1]
                return self.incident
            if "watch" in self.procs and self.procs["watch"].poll() is not None:
                raise DrillFailed("'mulligan watch' stopped before it noticed anything; see watch.log")
            time.sleep(0.1)
        raise DrillFailed(f"no incident was opened within {timeout:.0f} s of the rollback",
                          hint=f"see {self.dir / 'watch.log'}")

    def report_the_mistake(self) -> dict:
        """What a person adds to the record: how production was replaced. The watcher knows that it
        happened and when it saw it, not who or what did it."""
        self.incident = inc_ops.add_note(
            self.ws.vault, self.refresh(),
            f"Production was replaced by restoring {os.path.relpath(self.backup, self.dir)} over "
            f"{os.path.basename(self.db)} with sqlite3 .restore (SQLite's backup API), outside Mulligan, from a "
            "terminal believed to be on the test server.")
        return self.incident

    def refresh(self) -> dict:
        self.incident = inc_ops.get(self.ws.vault, self.incident["id"])
        return self.incident

    def assess(self) -> dict:
        """Impact between the state production went back to and the last good one; kept in the incident."""
        from ..ops.impact import impact
        from ..report.diff import impact_json

        inc = self.refresh()
        base, lost = inc_ops.recovery_states(inc)
        res = impact(self.ws, self.target, base, lost)
        record = impact_json(res)
        self.incident = inc_ops.record_impact(self.ws.vault, inc, record, base=base, lost=lost)
        return self.incident["impact"]

    def recover(self, *, apply: bool) -> dict:
        args = ["--json", "recover", TARGET, "--incident", self.incident["id"]]
        if apply:
            args += ["--apply", "--confirm", TARGET]
        p = self.mulligan(*args, timeout=120)
        if p.returncode != 0:
            raise DrillFailed(f"'mulligan {' '.join(args)}' failed (exit {p.returncode}): {p.stderr.strip()[-400:]}")
        self.refresh()
        return json.loads(p.stdout)

    def send_summary(self):
        from ..ops import summary as summary_ops

        inc = self.refresh()
        s = summary_ops.build(inc)
        webhook = cfg.load(self.dir / "mulligan.toml").section("alerts").get("webhook")
        if webhook:
            summary_ops.send(webhook, s.text)
            self.incident = inc_ops.record_alert(self.ws.vault, inc, channel="team webhook", ok=True,
                                                 detail="incident summary")
        return s

    def close_and_write_postmortem(self) -> tuple[Path, Path, object]:
        from ..cli.incident_cmd import build_postmortem, render_postmortem

        ws = self.ws
        inc = self.refresh()
        if inc.get("status") != "closed":
            inc = inc_ops.close(ws.vault, inc)
        pm = build_postmortem(ws, inc)
        md, html = self.dir / "postmortem.md", self.dir / "postmortem.html"
        md.write_text(render_postmortem(pm, "md"), encoding="utf-8")
        html.write_text(render_postmortem(pm, "html"), encoding="utf-8")
        self.incident = inc
        return md, html, pm


def _wait_or_kill(p: subprocess.Popen, seconds: float) -> None:
    try:
        p.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

