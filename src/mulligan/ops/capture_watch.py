"""The ``watch`` loop: every target captured, retried when it fails, watched for staleness.

One thread does the polling for every target (SQLite work is a few syscalls per
poll); alert delivery and the metrics endpoint have their own threads so
neither can hold up capture. ``stop()`` (SIGTERM) makes the loop take a last
poll of every target, store it and exit.

While it runs, the watcher holds a writer lease in the vault (it steps aside when a
prune wants to remove data: see vault/locks.py) whose purpose starts with ``watch`` and carries the pid: guards use
:func:`watcher_pids` to tell the watcher's own connections from live use.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import GuardRefused, MulliganError, NotFound, StorageError, UsageError
from ..model import Target
from ..runtime import hostname
from ..timeparse import human_age, iso
from ..vault.locks import Lease, live_leases, writer_lease
from .alerts import Alerter, Log
from .capture import CaptureOptions, TargetCapture
from .capture_store import status_key
from .targets import open_incident_count
from .workspace import Workspace

WATCH_PURPOSE = "watch"
# How often a watcher that cannot store its lease (the vault cannot be written) tries again.
START_RETRY = 5.0
# How often the loop looks for a prune lease (a listing and a read): prune waits up to
# YIELD_WAIT (10 s) for writers to step aside, so once a second is ample.
PRUNE_CHECK_EVERY = 1.0


def watcher_pids(ws: Workspace, host: str | None = None) -> list[dict]:
    """Live watch processes registered in the vault: [{pid, host, targets, heartbeat}]."""
    out = []
    for lease in live_leases(ws.vault.storage, "writer"):
        if str(lease.get("purpose", "")).startswith(WATCH_PURPOSE):
            if host is None or lease.get("host") == host:
                out.append(lease)
    return out


@dataclass
class Slot:
    target: Target
    capture: TargetCapture | None = None
    last_try: float = 0.0
    last_ok: float = field(default_factory=time.time)  # wall clock, for people
    ok_at: float = field(default_factory=time.monotonic)  # the same moment, for measuring staleness
    error: str | None = None
    stale: bool = False
    heartbeat_at: float = float("-inf")  # monotonic: the last heartbeat written while capture fails
    vault_failing: bool = False  # the failure is the vault's: no heartbeat is tried meanwhile
    missing: bool = False  # the failure is that no database is at the path


class Watcher:
    def __init__(self, ws: Workspace, targets: list[Target], options: CaptureOptions, alerter: Alerter, log: Log,
                 retry_every: float = 2.0):
        self.ws, self.options, self.alerter, self.log = ws, options, alerter, log
        self.slots = [Slot(t) for t in targets]
        self.retry_every = retry_every
        self._stop = threading.Event()
        self.lease: Lease | None = None
        self._lapses_seen = 0
        self._overdue = False
        self.metrics_server: ThreadingHTTPServer | None = None
        self._prune_checked = float("-inf")
        self._last_trouble: str | None = None  # the last vault problem logged outside a target
        self.unstored: list[str] = []  # targets whose last commits could not be stored at the stop

    def stop(self) -> None:
        self._stop.set()

    # ---- the loop -------------------------------------------------------------------
    def run(self) -> None:
        names = ",".join(s.target.name for s in self.slots)
        storage = self.ws.vault.storage
        if live_leases(storage, "prune"):
            self.log("notice", "a prune is removing data from the vault: capture starts when it is done")
        # Like any writer, wait for a prune that is removing data before loading the chunk index.
        self.lease = self._take_lease(f"{WATCH_PURPOSE} {names}")
        if self.lease is None:  # stopped while waiting for the vault: nothing was started
            self.alerter.drain(3.0)
            self._stop_metrics()
            self.log("info", "watch stopped")
            return
        rival = self._rival()
        if rival is not None:
            self.lease.release()
            raise GuardRefused(
                f"{rival['names']} {'is' if ',' not in rival['names'] else 'are'} already captured by another watch "
                f"on this host (pid {rival['pid']}): one watcher per database",
                unchanged="nothing was captured by this process; the running watcher goes on",
                hint="leave that one running ('mulligan status' shows it), or stop it first",
            )
        from . import audit

        for slot in self.slots:
            try:
                audit.record(self.ws.vault, command="watch", outcome="started", target=slot.target,
                             detail={"options": self.options.__dict__})
            except Exception:  # noqa: BLE001 - the audit log must not keep capture from starting
                pass
        self.log("info", f"watch started (pid {os.getpid()}) for {names}; poll every "
                         f"{self.options.poll_interval * 1000:.0f} ms, store every {self.options.flush_interval:g} s")
        try:
            busy = False  # a target is partway through a large commit: step again at once
            while not self._stop.is_set():
                t0 = time.monotonic()
                # Not partway through a large commit: a prune waits (as it would for the commit's
                # read), and the lease is looked at once it is whole.
                if not busy:
                    self._mind_lease()
                if not busy and t0 - self._prune_checked >= PRUNE_CHECK_EVERY:
                    self._prune_checked = t0
                    try:
                        if self._yield_to_prune():
                            continue
                    except MulliganError as exc:
                        # The vault cannot be reached (the targets' flushes say so too, and the
                        # stale alert follows): keep reading the databases. Skipping a look is safe:
                        # a prune removes nothing while this watcher's lease is live and not yielded.
                        self._vault_trouble(exc)
                busy = False
                for slot in self.slots:
                    busy |= self._step(slot)
                if not busy:
                    spent = time.monotonic() - t0
                    self._stop.wait(max(0.0, self.options.poll_interval - spent))
        finally:
            for slot in self.slots:
                if slot.capture is not None:
                    try:
                        slot.capture.stop()
                        stored = ("everything before the large commit is stored" if slot.capture.left_unread
                                  else "everything seen is stored")
                        self.log("info", f"{slot.target.name}: stopped; {slot.capture.stats.commits} commits captured, "
                                         f"{stored}")
                    except MulliganError as exc:
                        self.unstored.append(slot.target.name)
                        self.log("error", f"{slot.target.name}: could not store the last commits: {exc.one_line()}")
                    except Exception as exc:  # noqa: BLE001 - one target's failure must not stop the others' flush
                        self.unstored.append(slot.target.name)
                        self.log("error", f"{slot.target.name}: could not store the last commits: "
                                          f"{exc.__class__.__name__}: {exc}")
                elif slot.heartbeat_at != float("-inf"):
                    self._failing_heartbeat(slot, time.monotonic(), running=False)  # not "running" any more
            self.alerter.drain(3.0)
            from .detect import record

            for slot in self.slots:
                try:
                    record(self.ws.vault, slot.target, "stopped",
                           {"commits": slot.capture.stats.commits if slot.capture else 0})
                except MulliganError as exc:
                    self._vault_trouble(exc)
            self.lease.release()
            self._stop_metrics()
            self.log("info", "watch stopped")

    def _stop_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()  # free the port, not only stop serving

    def _rival(self) -> dict | None:
        """Another live watch process on this host capturing one of our targets, if any: two
        would each keep a chain of the same commits, checkpoint and stamp the same database,
        and take the other's identity stamps for changes by someone else. The older lease wins
        (two started at once: each sees the other, and only the later one steps aside)."""
        from .liveuse import looks_like_mulligan

        ours = {s.target.name for s in self.slots}
        me = (self.lease.since, os.getpid())
        for lease in watcher_pids(self.ws, hostname()):
            if lease.get("key") == self.lease.key:
                continue
            names = set(str(lease.get("purpose", "")).partition(" ")[2].split(","))
            pid = int(lease.get("pid") or 0)
            if not names & ours or pid == os.getpid() or (float(lease.get("since", 0)), pid) > me:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            except OSError:
                continue  # gone: a watcher killed before it could drop its lease
            if looks_like_mulligan(argv) and "watch" in argv:
                return {"pid": pid, "names": ", ".join(sorted(names & ours))}
        return None

    def _vault_trouble(self, exc: MulliganError) -> None:
        message = exc.one_line(retrying=True)
        if self._last_trouble is None or _gist(message) != _gist(self._last_trouble):
            self._last_trouble = message
            self.log("warning", f"the vault could not be read: {message}")

    def _yield_to_prune(self) -> bool:
        """A prune wants to remove data: store what every target holds, mark the lease yielded,
        wait for the prune to end (the read transactions stay held, so no commit is missed),
        then forget the cached index and store again every page that is no longer in the vault."""
        storage = self.ws.vault.storage
        if not live_leases(storage, "prune") or self.lease is None:
            return False
        self.log("notice", "a prune is removing data from the vault: capture stores what it holds and waits")
        for slot in self.slots:
            if slot.capture is not None:
                slot.capture.flush()
                slot.capture.repack.settle()
        self.lease.set_yielded(True)
        stopping_since = None
        while live_leases(storage, "prune"):
            # Even when asked to stop, give the prune time to finish: the last flush on the way
            # out must not deduplicate against a pack the prune is deleting.
            if self._stop.is_set():
                stopping_since = stopping_since or time.monotonic()
                if time.monotonic() - stopping_since > 30:
                    break
            time.sleep(0.2)
        self.lease.set_yielded(False)
        if self._stop.is_set():
            vault = self.ws.vault
            vault._index, vault._loaded_index_keys = None, set()
            return True
        self._reread("the prune is over")
        return True

    def _take_lease(self, purpose: str) -> Lease | None:
        """The writer lease, taken when the vault accepts it. A vault that cannot be written (its
        disk full: perhaps with the very copy restored over a database; its store unreachable)
        does not end the watcher, which a service manager would restart until it gave up, and
        would then be down once the vault works again: it says so, alerts once for each target
        (stale-capture: nothing is captured and no rollback is watched for meanwhile), and tries
        again every START_RETRY seconds. None: stopped while waiting."""
        failing: str | None = None
        while True:
            try:
                lease = writer_lease(self.ws.vault.storage, purpose, stop=self._stop)
            except StorageError as exc:
                if self._stop.is_set():
                    raise
                if failing != _gist(exc.one_line()):
                    self.log("error", f"watch cannot start: {exc.one_line(retrying=True)}")
                    if failing is None:
                        for slot in self.slots:
                            t = slot.target
                            self.alerter.alert(
                                "stale-capture",
                                f"capture of {t.env} database {t.name!r} ({t.path}) cannot start: "
                                f"{exc.message}; nothing is captured and no rollback is watched for until the "
                                f"vault takes writes (watch tries again every {START_RETRY:g} s)",
                                {"target": t.name, "last_ok": None, "error": exc.message})
                    failing = _gist(exc.one_line())
                if self._stop.wait(START_RETRY):
                    return None
                continue
            if failing is not None:
                self.log("notice", "the vault takes writes again: watch starts")
            return lease

    def _reread(self, why: str) -> None:
        vault = self.ws.vault
        vault._index, vault._loaded_index_keys = None, set()
        self.log("notice", f"{why}: reading every database again to store pages no longer in the vault")
        for slot in self.slots:
            cap = slot.capture
            if cap is None:
                continue
            try:
                cap.after_lease_lapse()
            except Exception as exc:  # noqa: BLE001 - the slot restarts from scratch instead
                self._failed(slot, f"{exc.__class__.__name__}: {exc}")
                if slot.capture is not None:
                    try:
                        slot.capture.stop()
                    except Exception:  # noqa: BLE001
                        pass
                    slot.capture = None

    def _mind_lease(self) -> None:
        """Our lease could not be renewed for a while (vault unreachable, process paused): a prune
        may take it for dead and remove data our cached index still names. While it is overdue,
        capture goes on (and so does the watch for a rollback: an outage of the vault is no time
        to stop it), deduplicating only against what this watcher stores from then on
        (``Vault.dedup_known``), with no repack; once the lease lands again, wait out any prune,
        forget every cached index entry and read each database again, storing every page that is
        no longer in the vault."""
        lease = self.lease
        if lease is None:
            return
        vault = self.ws.vault
        if lease.lapsed():
            if not self._overdue:
                self._overdue = True
                vault.dedup_known = False
                self.log("warning", "the watcher's lease in the vault is overdue (the vault cannot be written?): "
                                    "pages are stored whole until it is renewed; rollbacks are still watched for")
            return
        if lease.lapses == self._lapses_seen:
            return
        while live_leases(vault.storage, "prune") and not self._stop.is_set():
            time.sleep(0.2)
        self._lapses_seen, self._overdue = lease.lapses, False
        vault.dedup_known = True
        self._reread("the watcher's lease was overdue, so a prune may have removed data")

    def _step(self, slot: Slot) -> bool:
        """One step of a target; True when it is partway through a large commit."""
        now = time.monotonic()
        try:
            if slot.capture is None:
                # A database that was missing is tried again as soon as one is at the path (a
                # stat each poll): a file copied there after a deletion is compared, and a
                # rollback alerted, within the poll, not the next retry.
                appeared = slot.missing and os.path.exists(slot.target.path)
                if now - slot.last_try < self.retry_every and not appeared:
                    self._failing_heartbeat(slot, now)
                    self._check_stale(slot, now)
                    return False
                slot.last_try = now
                cap = TargetCapture(self.ws, slot.target, self.options, self.alerter, self.log)
                cap.start()
                slot.capture = cap
                slot.missing = False
            more = slot.capture.step(now)
            slot.last_ok, slot.ok_at = time.time(), time.monotonic()
            if more:
                return True  # the rest of this step (saying it works again) once the commit is whole
            if slot.stale or slot.error is not None:
                self.log("notice", f"{slot.target.name}: capture is working again")
                slot.capture.stats.error = None
                slot.capture.write_status()  # status says so now, not at the next interval
            slot.error = None
            slot.stale = False
        except MulliganError as exc:
            self._failed(slot, exc.one_line(retrying=True), vault=isinstance(exc, StorageError))
            slot.missing = isinstance(exc, NotFound) and not os.path.exists(slot.target.path)
        except OSError as exc:
            self._failed(slot, f"{exc.__class__.__name__}: {exc}", reopen=True)
        except Exception as exc:  # noqa: BLE001 - one target's bug must not stop the others' capture
            import apsw

            if isinstance(exc, apsw.Error):
                self._failed(slot, f"SQLite: {exc}", reopen=True)
            else:
                self._failed(slot, f"{exc.__class__.__name__}: {exc}", reopen=True)
        if slot.error is not None:
            self._failing_heartbeat(slot, time.monotonic())
        self._check_stale(slot, time.monotonic())
        return False

    def _failing_heartbeat(self, slot: Slot, now: float, running: bool = True) -> None:
        """While a target's capture fails (to start, or at each step), the watcher still says it
        runs, and why it captures nothing: without this, ``status`` said "watch is not running"
        while it was running and retrying (a step that fails writes no heartbeat of its own)."""
        if running and (slot.error is None or slot.vault_failing
                        or now - slot.heartbeat_at < self.options.status_interval):
            return  # a vault that fails would hold the loop for each heartbeat tried (an object store's timeouts)
        slot.heartbeat_at = now
        if slot.capture is not None:
            slot.capture.write_status(stopping=not running)  # its error says why it captures nothing
            return
        t, wall = slot.target, time.time()
        try:
            self.ws.vault.put_json(status_key(t.id), {
                "target": t.name, "target_id": t.id, "pid": os.getpid(), "host": hostname(),
                "heartbeat": iso(wall), "heartbeat_ts": wall, "heartbeat_every": self.options.status_interval,
                "running": running, "capturing": False,
                "error": slot.error, "last_ok": iso(slot.last_ok)})
        except MulliganError:
            pass  # the vault is what fails: status says the heartbeat is old

    def _failed(self, slot: Slot, message: str, reopen: bool = False, vault: bool = False) -> None:
        """``reopen``: an error nothing of ours described (SQLite, the OS): stop this capture
        (storing what it saw) and start it again. A MulliganError describes its own state, and
        the next step tries again (it may say "...outside SQLite": the words are not the kind)."""
        # Logged once per kind of failure: an unreachable store fails every flush, each naming
        # another object (hex names and durations differ; the failure does not).
        if slot.error is None or _gist(message) != _gist(slot.error):
            self.log("error", f"{slot.target.name}: capture failed: {message}")
        slot.error, slot.vault_failing = message, vault
        if slot.capture is not None:
            slot.capture.stats.error = message
            if slot.capture.tailer is None or reopen:
                try:
                    slot.capture.stop()
                except Exception:
                    pass
                slot.capture = None
                slot.last_try = time.monotonic() - self.retry_every + 0.2  # first retry soon

    def _check_stale(self, slot: Slot, now: float) -> None:
        age = now - slot.ok_at
        if not slot.stale and age > self.alerter.stale_after:
            slot.stale = True
            t = slot.target
            text = (f"capture of {t.env} database {t.name!r} ({t.path}) is stale: nothing captured for "
                    f"{human_age(age)}" + (f"; last error: {slot.error}" if slot.error else ""))
            self.alerter.alert("stale-capture", text, {"target": t.name, "last_ok": iso(slot.last_ok),
                                                       "error": slot.error})

    # ---- metrics ----------------------------------------------------------------------
    def metrics(self) -> str:
        lines = []
        def add(name, help_, kind, values):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for target, v in values:
                lines.append(f'{name}{{target="{target}"}} {v}')
        caps = [(s.target.name, s.capture) for s in self.slots]
        add("mulligan_capture_lag_seconds", "Age of the oldest commit seen but not yet stored in the vault.", "gauge",
            [(n, round(c.lag(), 3) if c else "NaN") for n, c in caps])
        add("mulligan_capture_last_ok_age_seconds", "Seconds since capture last worked.", "gauge",
            [(s.target.name, round(time.monotonic() - s.ok_at, 3)) for s in self.slots])
        add("mulligan_commits_captured_total", "Commits captured since watch started.", "counter",
            [(n, c.stats.commits if c else 0) for n, c in caps])
        add("mulligan_bytes_stored_total", "Bytes written to the vault since watch started.", "counter",
            [(n, c.stats.bytes_stored if c else 0) for n, c in caps])
        add("mulligan_checkpoints_total", "Checkpoints run by the watcher.", "counter",
            [(n, c.stats.checkpoints if c else 0) for n, c in caps])
        add("mulligan_repacks_total", "Repack passes finished (current pages stored again in page order).",
            "counter", [(n, c.stats.repacks if c else 0) for n, c in caps])
        open_inc = []
        for s in self.slots:
            unsaved = len(s.capture.det.unsaved) if s.capture else 0  # opened while the vault refused writes
            try:
                open_inc.append((s.target.name, open_incident_count(self.ws, s.target.id) + unsaved))
            except MulliganError:
                open_inc.append((s.target.name, unsaved or "NaN"))
        add("mulligan_incidents_open", "Open incidents (those not yet stored in the vault included).", "gauge",
            open_inc)
        add("mulligan_alerts_failed_total", "Alerts that could not be delivered.", "counter",
            [(s.target.name, self.alerter.failed) for s in self.slots])
        return "\n".join(lines) + "\n"

    def serve_metrics(self, port: int) -> int:
        watcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = watcher.metrics().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        try:
            self.metrics_server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror or exc}",
                             unchanged="watch did not start; nothing was captured",
                             hint="choose another --metrics-port, or stop what listens there") from None
        threading.Thread(target=self.metrics_server.serve_forever, name="mulligan-metrics", daemon=True).start()
        return self.metrics_server.server_address[1]


def _gist(message: str) -> str:
    """A failure's message without what changes from one try to the next (object names and
    their folders, times): one flush fails on a pack, the next on an index object."""
    return re.sub(r"[\w.-]+(?:/[\w.-]+)*/[0-9a-f]{8,}|[0-9a-f]{8,}|\d+(\.\d+)?(ms|s)\b", "#", message)
