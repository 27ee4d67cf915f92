"""Alerts: always to the log; to a webhook and by email when configured.

Configuration (``[alerts]`` in mulligan.toml)::

    webhook = "https://hooks.slack.com/services/..."   # JSON with a Slack-compatible "text"
    smtp = "mail.example.com:587"                       # optional
    email_to = "oncall@example.com"
    email_from = "mulligan@example.com"
    smtp_user = "..."; smtp_password_env = "MULLIGAN_SMTP_PASSWORD"   # optional, STARTTLS when set
    stale_after = "60s"                                 # capture older than this alerts

Delivery runs on a background thread with retries: a slow or failing webhook
never holds up capture. Each alert is returned as a small record (kept in the
incident) and its delivery outcome is logged.
"""

from __future__ import annotations

import json
import os
import queue
import smtplib
import sys
import threading
import time
import urllib.request
from email.message import EmailMessage

from ..runtime import hostname
from ..timeparse import iso, parse_duration

RETRIES = (0.5, 1, 2, 4, 8, 16)


class Log:
    """One line per event on standard error; syslog level prefixes under systemd."""

    LEVELS = {"error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}

    def __init__(self, stream=None, verbosity: int = 0):
        self.stream = stream or sys.stderr
        self.verbosity = verbosity
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))
        self._lock = threading.Lock()

    def __call__(self, level: str, message: str) -> None:
        if level == "debug" and self.verbosity <= 0:
            return
        if level == "info" and self.verbosity < 0:
            return
        prefix = f"<{self.LEVELS.get(level, 6)}>" if self.journal else f"{iso(time.time())} {level.upper():7} "
        with self._lock:
            try:
                self.stream.write(f"{prefix}{message}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


class Alerter:
    def __init__(self, section: dict | None, log: Log):
        section = section or {}
        self.webhook = section.get("webhook")
        self.smtp = section.get("smtp")
        self.email_to = section.get("email_to")
        self.email_from = section.get("email_from", f"mulligan@{hostname()}")
        self.smtp_user = section.get("smtp_user")
        self.smtp_password_env = section.get("smtp_password_env", "MULLIGAN_SMTP_PASSWORD")
        self.stale_after = parse_duration(str(section.get("stale_after", "60s"))).total_seconds()
        self.log = log
        self.sent = 0
        self.failed = 0
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if (self.webhook or self.smtp) and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mulligan-alerts", daemon=True)
            self._thread.start()

    def alert(self, kind: str, text: str, payload: dict | None = None, level: str = "error") -> dict:
        """Log now; queue delivery; return the record to keep with the incident."""
        self.log(level, f"ALERT {kind}: {text}")
        channels = ["log"] + (["webhook"] if self.webhook else []) + (["email"] if self.smtp and self.email_to else [])
        rec = {"time": iso(time.time()), "kind": kind, "text": text, "channels": channels}
        if len(channels) > 1:
            self.start()
            self._q.put((kind, text, payload or {}))
        return rec

    def drain(self, timeout: float = 5.0) -> None:
        """Give queued deliveries, and the one in flight, a moment on shutdown."""
        end = time.monotonic() + timeout
        # unfinished_tasks counts an alert until its delivery is done (task_done), not only
        # while it waits in the queue: the POST under way at SIGTERM is waited for too.
        while self._q.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.05)

    # ---- delivery ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            kind, text, payload = self._q.get()
            try:
                if self.webhook:
                    self._deliver("webhook", lambda: self._post(kind, text, payload))
                if self.smtp and self.email_to:
                    self._deliver("email", lambda: self._mail(kind, text, payload))
            finally:
                self._q.task_done()

    def _deliver(self, channel: str, fn) -> None:
        for i, wait in enumerate((0,) + RETRIES):
            if wait:
                time.sleep(wait)
            try:
                fn()
                self.sent += 1
                self.log("info", f"alert delivered by {channel}" + (f" after {i} retries" if i else ""))
                return
            except Exception as exc:  # network errors of every kind: retry, then log
                last = exc
        self.failed += 1
        self.log("error", f"alert could not be delivered by {channel} after {len(RETRIES)} retries: {last}")

    def _post(self, kind: str, text: str, payload: dict) -> None:
        body = json.dumps({"text": text, "kind": kind, "source": "mulligan", **payload}, default=str).encode()
        req = urllib.request.Request(self.webhook, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            if resp.status >= 300:
                raise OSError(f"webhook answered HTTP {resp.status}")

    def _mail(self, kind: str, text: str, payload: dict) -> None:
        host, _, port = self.smtp.partition(":")
        msg = EmailMessage()
        msg["Subject"] = f"[mulligan] {kind}: {text[:120]}"
        msg["From"] = self.email_from
        msg["To"] = self.email_to
        msg.set_content(text + "\n\n" + json.dumps(payload, indent=2, default=str))
        with smtplib.SMTP(host, int(port or 25), timeout=10) as s:
            password = os.environ.get(self.smtp_password_env)
            if self.smtp_user and password:
                s.starttls()
                s.login(self.smtp_user, password)
            s.send_message(msg)
