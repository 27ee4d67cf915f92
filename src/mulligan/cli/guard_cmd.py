"""undo, guard, audit: the commands that make the mistake hard and leave a trace of it."""

from __future__ import annotations

import os
import sys

import click
from rich.markup import escape

from ..errors import EXIT_INTEGRITY, MulliganError
from ..ops import audit as audit_ops
from ..ops import guards, inplace
from ..report.tables import env_label, table
from ..runtime import tune_gc
from .context import Ctx, pass_ctx
from .restore_cmd import live_window, run_inplace


@click.command()
@click.argument("name")
@click.option("--confirm", "confirm_name", metavar="NAME", help="The target's name, confirming without a prompt.")
@click.option("--yes", is_flag=True, help="Skip the prompt (never enough for production).")
@click.option("--force-live", is_flag=True, help="Put the undo point back even into a database in live use.")
@pass_ctx
def undo(ctx: Ctx, name, confirm_name, yes, force_live):
    """Put back the state saved before the last in-place change (guarded like restore --in-place)."""
    ws = ctx.ws
    target = ws.target(name)
    ctx.audit_target = target
    tune_gc()  # a one-shot process allocating a few objects per page (runtime.py)
    ws.vault.lean_if_large()  # as restore --in-place: over a long history, one index object at a time
    point = inplace.last_undo_point(ws, target)
    run_inplace(ctx, target, point, action="undo", confirm_name=confirm_name, yes=yes, force_live=force_live)


@click.command()
@click.argument("path", type=click.Path(dir_okay=True))
@click.pass_context
def guard(cctx: click.Context, path):
    """Tell a script what a database file is before it touches it.

    Exit 0 when changing it would pass the guards, 3 when it is production, in
    live use, or not the file the configuration names, 1 when it is not a database.
    """
    ctx: Ctx = cctx.obj
    conf = _config_if_any(ctx)
    report = guards.inspect_file(path, conf, window=live_window(ctx) if conf is not None else guards.LIVE_WINDOW)
    if ctx.json:
        ctx.emit_json(report.to_json())
        # the answer is on standard output; a refusal or an error is also one line on standard error
        if not report.is_database:
            sys.stderr.write(f"mulligan: {'; '.join(report.notes) or 'not a database'}\n")
        elif report.problems:
            sys.stderr.write(f"mulligan: refused: {'; '.join(report.problems)}\n")
    elif not report.is_database:
        click.echo(f"{report.path}: not a database ({'; '.join(report.notes)})")
        sys.stderr.write(f"mulligan: {'; '.join(report.notes) or 'not a database'}\n")
    else:
        live = report.live.live if report.live else False
        click.echo(f"{report.path}: {report.name or 'unprotected database'} ({report.env or 'environment unknown'}), "
                   f"{'IN LIVE USE' if live else 'not in live use'}; "
                   + ("changing it would be refused" if report.problems else "changing it would pass the guards"))
        for p in report.problems:
            ctx.err.print(f"  [bold red]refused[/] {escape(p)}")
        for n in report.notes:
            ctx.say(f"  note: {n}")
    cctx.exit(report.exit_code)


def _config_if_any(ctx: Ctx):
    """guard works without a configuration too (it then knows only what the file says)."""
    if ctx.config_arg is None and not os.environ.get("MULLIGAN_CONFIG") and not ctx.config_path.exists():
        return None
    try:
        return ctx.config
    except MulliganError as exc:
        ctx.warn(f"configuration not used: {exc.message}")
        return None


@click.command()
@click.argument("name", required=False)
@click.pass_context
def audit(cctx: click.Context, name):
    """The audit log, with its hash chain checked (exit 4 when it was edited or cut)."""
    ctx: Ctx = cctx.obj
    ws = ctx.ws
    if name is not None:
        ws.target(name)
    res = audit_ops.read(ws.vault, name)
    if ctx.json:
        ctx.emit_json({"target": name, "chain_ok": res.ok, "problems": res.problems, "entries": res.entries})
    else:
        t = table("#", "time (UTC)", "who", "command", "target", "outcome", "detail")
        for e in res.entries:
            tgt = e.get("target") or {}
            outcome = e["outcome"]
            style = {"refused": "bold yellow", "failed": "bold red"}.get(outcome)
            t.add_row(str(e["seq"]), e["time"], f"{e['user']}@{e['host']} pid {e['pid']}", escape(e["argv"]),
                      (escape(tgt.get("name", "")) + " " + env_label(tgt.get("env", ""))).strip() if tgt else "",
                      f"[{style}]{outcome}[/]" if style else outcome, escape(_detail_text(e.get("detail"))))
        ctx.out.print(t)
        if res.ok:
            ctx.say(f"hash chain ok ({len(res.entries)} entries shown)")
        for p in res.problems:
            ctx.err.print(f"[bold red]audit log damaged:[/] {escape(p)}")
    if not res.ok:
        cctx.exit(EXIT_INTEGRITY)


def _detail_text(detail) -> str:
    if detail is None:
        return ""
    if isinstance(detail, dict):
        if detail.get("reason"):
            return str(detail["reason"])
        return ", ".join(f"{k}={v}" for k, v in detail.items() if v not in (None, [], {}))
    return str(detail)


def register(cli: click.Group) -> None:
    for c in (undo, guard, audit):
        cli.add_command(c)


