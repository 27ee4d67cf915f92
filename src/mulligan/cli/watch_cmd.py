"""watch, status, incidents."""

from __future__ import annotations

import os
import signal

import click

from ..errors import EXIT_ERROR, ConfigError, MulliganError, StorageError, UsageError
from ..ops import incidents as inc_mod
from ..ops.alerts import Alerter, Log
from ..ops.capture import CaptureOptions
from ..ops.capture_watch import Watcher
from ..ops.status import alert_stale
from ..ops.status import status as status_op
from ..report.tables import env_label, table
from ..timeparse import human_age, parse_duration
from .context import Ctx, pass_ctx


@click.command()
@click.argument("names", nargs=-1)
@click.option("--metrics-port", type=int, metavar="N", help="Serve Prometheus metrics on 127.0.0.1:N.")
@click.option("--poll", "poll", metavar="DURATION", help="How often to look for new commits (default 100ms).")
@click.option("--flush", "flush", metavar="DURATION", help="How often to store them (default 0.5s on a local vault, 5s on object stores).")
@click.pass_context
def watch(cctx: click.Context, names, metrics_port, poll, flush):
    """Continuous capture, rollback detection and alerts (a foreground daemon).

    Captures every committed transaction of each target (all targets when no NAME
    is given), stamped with the time it was seen. SIGTERM, SIGHUP or Ctrl-C stores
    what was seen and exits. Logs go to standard error, one line per event.
    """
    ctx: Ctx = cctx.obj
    ws = ctx.ws
    targets = [ws.target(n) for n in names] if names else list(ws.config.targets.values())
    if not targets:
        raise UsageError("no target to watch", hint="register one with 'mulligan protect PATH --name NAME --env ENV'")
    files: dict[str, str] = {}
    for t in targets:  # one watcher per database, within one watch too
        other = files.setdefault(os.path.realpath(t.path), t.name)
        if other != t.name:
            raise ConfigError(f"targets {other!r} and {t.name!r} name the same database file ({t.path})",
                              hint="remove one of them from mulligan.toml; a database is one target")
    ctx.audit = False  # the watcher writes its own audit entries (start, incidents, counter raises)
    section = ws.config.section("capture")
    options = CaptureOptions.from_config(section, local_vault="://" not in ws.config.vault_url)
    if poll:
        options.poll_interval = _seconds(poll)
    if flush:
        options.flush_interval = _seconds(flush)
    options.check()
    log = Log(verbosity=ctx.verbosity)
    alerter = Alerter(ws.config.section("alerts"), log)
    watcher = Watcher(ws, targets, options, alerter, log)

    def on_signal(signum, _frame):
        log("info", f"{signal.Signals(signum).name} received: storing what was seen, then exiting")
        watcher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGHUP"):  # a closed terminal, a service manager's reload: stop cleanly too
        signal.signal(signal.SIGHUP, on_signal)
    if metrics_port is not None:
        port = watcher.serve_metrics(metrics_port)
        log("info", f"metrics on http://127.0.0.1:{port}/metrics")
    watcher.run()
    if watcher.unstored:
        # The process manager and the person reading its status see that the stop lost history.
        raise StorageError(
            f"watch stopped with commits of {', '.join(watcher.unstored)} seen but not stored: the vault could not be written",
            unchanged="the database holds those commits; the next watch starts a new base and records the gap",
            hint="check the vault (the log above says what failed), then start watch again",
        )


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return parse_duration(text).total_seconds()


@click.command()
@click.argument("name", required=False)
@click.option("--stale-after", metavar="DURATION",
              help="A watcher whose heartbeat is older than this is reported stale (default: [alerts] stale_after, "
                   "else 60s).")
@click.option("--check", is_flag=True,
              help="Exit 1 when a target's capture is stale (no running watch, or one capturing nothing): for cron "
                   "or a monitoring system.")
@click.option("--alert", "send_alert", is_flag=True,
              help="Also send a stale-capture alert for each stale target through [alerts] (webhook, email), as watch "
                   "does: a timer running this notices a watcher that died or hung. Once per stale capture (again "
                   "after it was captured again). Implies --check.")
@click.pass_context
def status(cctx: click.Context, name, stale_after, check, send_alert):
    """Health: last capture, lag, coverage, stale captures, open incidents."""
    ctx: Ctx = cctx.obj
    section = ctx.ws.config.section("alerts")
    after = parse_duration(stale_after or str(section.get("stale_after", "60s"))).total_seconds()
    rows = status_op(ctx.ws, name, after)
    stale = [r["name"] for r in rows if r["stale"]]
    if send_alert:
        alerter = Alerter(section, Log(verbosity=ctx.verbosity))
        for target, when in alert_stale(ctx.ws, rows, alerter):  # also forgets the alerts of recovered ones
            if when:
                ctx.say(f"{target}: the stale-capture alert for this stale capture went out at {when}")
        alerter.drain(40.0)  # the retries of a delivery take up to 31.5 s
    if ctx.json:
        ctx.emit_json({"targets": rows})
        if (check or send_alert) and stale:
            cctx.exit(EXIT_ERROR)
        return
    t = table("name", "env", "watch", "last capture", "age", "lag", "coverage", "gaps", "open incidents")
    for r in rows:
        cov = r["coverage"]
        age = r["last_capture_age_seconds"]
        t.add_row(r["name"], env_label(r["env"]),
                  ("[bold red]capturing nothing[/]" if not r["watch"]["capturing"] else "running")
                  + f" (pid {r['watch']['pid']})" if r["watch"]["running"] else "[bold red]not running[/]",
                  r["last_capture"] or "never", human_age(age) if age is not None else "-",
                  f"{r['lag_seconds']:.2f} s" if r["lag_seconds"] is not None else "-",
                  f"{cov['from'] or '-'} → {cov['to'] or '-'}", str(len(cov["gaps"])),
                  ", ".join(i["id"] for i in r["open_incidents"]) or "0")
    ctx.out.print(t)
    for r in rows:
        for p in r["problems"]:
            ctx.warn(f"{r['name']}: {p}")
    if (check or send_alert) and stale:
        raise MulliganError(f"capture is stale for {len(stale)} of {len(rows)} targets: {', '.join(stale)}",
                            unchanged="nothing was changed", hint="start 'mulligan watch' (or see why it captures "
                                                                  "nothing in its log)")


def incident_row(i: dict) -> dict:
    lg = i.get("last_good") or {}
    rb = i.get("rolled_back_to") or None
    return {
        "id": i["id"], "target": i.get("target_name"), "target_id": i.get("target_id"), "kind": i.get("kind"),
        "status": i.get("status"), "title": i.get("title"), "opened_at": i.get("opened_at"),
        "closed_at": i.get("closed_at"),
        "last_good": {"time": lg.get("time"), "point": lg.get("point")},
        "last_good_time": lg.get("time"),
        "rolled_back_to": rb,
        "rolled_back_to_snapshot": rb.get("snapshot_id") if rb else None,
        "counters": i.get("counters"),
        "signals": (i.get("detection") or {}).get("signals", []),
    }


@click.command()
@click.argument("name", required=False)
@click.option("--open", "only_open", is_flag=True, help="Only incidents still open.")
@pass_ctx
def incidents(ctx: Ctx, name, only_open):
    """List incidents (rollbacks detected by watch, and manual ones)."""
    ws = ctx.ws
    tid = ws.target(name).id if name else None
    rows = [incident_row(i) for i in inc_mod.list_incidents(ws.vault, tid)]
    if only_open:
        rows = [r for r in rows if r["status"] == "open"]
    if ctx.json:
        return ctx.emit_json({"incidents": rows})
    t = table("id", "target", "kind", "status", "opened (UTC)", "last good", "rolled back to")
    for r in rows:
        rb = r["rolled_back_to"]
        t.add_row(r["id"], r["target"] or "", r["kind"] or "", r["status"] or "", r["opened_at"] or "",
                  r["last_good_time"] or "-",
                  f"{rb['snapshot_id']} ({rb['time']})" if rb else "-")
    ctx.out.print(t)


def register(cli: click.Group) -> None:
    for c in (watch, status, incidents):
        cli.add_command(c)
