"""restore (--to a new database, or --in-place with guards), and the in-place flow undo shares."""

from __future__ import annotations

import sys

import click
from ..errors import GuardRefused, MulliganError, UsageError
from ..model import ENVIRONMENTS, RESTORED_ENV
from ..ops.points import gap_at, resolve_point
from ..ops.restore import restore_new
from ..report.tables import env_label
from ..runtime import tune_gc
from ..timeparse import human_age, parse_time, utc_now
from .context import Ctx, pass_ctx


@click.command()
@click.argument("name")
@click.option("--snapshot", "snapshot_id", metavar="ID", help="A snapshot id or a unique prefix of one.")
@click.option("--at", "at", metavar="TIME", help="ISO 8601, a time of today (09:40, local) or relative (-90m, '10 minutes ago'): the newest point at or before it.")
@click.option("--latest", is_flag=True, help="The newest restore point of the target's own history.")
@click.option("--to", "to", metavar="PATH", help="Write a NEW database at PATH.")
@click.option("--in-place", "in_place", is_flag=True, help="Replace the target's own database (guarded; an undo point is taken first).")
@click.option("--confirm", "confirm_name", metavar="NAME", help="With --in-place: the target's name, confirming without a prompt.")
@click.option("--yes", is_flag=True, help="With --in-place: skip the prompt (never enough for production).")
@click.option("--force-live", is_flag=True, help="With --in-place: replace even a database in live use.")
@click.option("--env", "env", type=click.Choice(ENVIRONMENTS + (RESTORED_ENV,)), help="With --to: environment stamped in the copy (default: restored).")
@click.option("--check", "check", type=click.Choice(["quick", "full", "none"]), default=None,
              help="With --to: quick_check (default), integrity_check, or none (a damaged point written anyway, "
                   "to salvage its rows; every page's hash is still checked).")
@click.option("--allow-cross-target", is_flag=True, help="Allow a restore point of another target.")
@click.option("--jobs", "jobs", type=click.IntRange(min=1), metavar="N",
              help="Processes checking and writing pages at once (default: 2 where there are 2 CPUs; 1 on an "
                   "object store or for a database under 16 MiB). Each further process holds ~35 MB.")
@pass_ctx
def restore(ctx: Ctx, name, snapshot_id, at, latest, to, in_place, confirm_name, yes, force_live, env, check,
            allow_cross_target, jobs):
    """Restore a point into a NEW database (--to PATH), or replace the target itself (--in-place)."""
    if to and in_place:
        raise UsageError("--to and --in-place exclude each other", hint="--to writes a new database; --in-place replaces the target")
    if not to and not in_place:
        raise UsageError("restore needs --to PATH (a new database)", hint="replacing the target itself needs --in-place")
    if not in_place and (confirm_name or yes or force_live):
        raise UsageError("--confirm, --yes and --force-live go with --in-place")
    if in_place and (env or check):
        # an in-place restore keeps the target's own identity and environment: never ignore what was asked
        raise UsageError("--env and --check go with --to", unchanged="nothing was written",
                         hint="an in-place restore keeps the target's identity and environment")
    ws = ctx.ws
    target = ws.target(name)
    ctx.audit_target = target
    tune_gc()  # a one-shot process allocating a few objects per page (runtime.py)
    ws.vault.lean_if_large()  # a restore over a long history holds no more than one index object
    if in_place:
        try:
            point = resolve_point(ws.vault, target, snapshot=snapshot_id, at=at, latest=latest,
                                  allow_cross_target=allow_cross_target)
        except GuardRefused as exc:
            ctx.audit_detail = {"reason": exc.message}
            raise
        return run_inplace(ctx, target, point, action="restore", confirm_name=confirm_name, yes=yes,
                           force_live=force_live, allow_cross_target=allow_cross_target, jobs=jobs)
    point = resolve_point(ws.vault, target, snapshot=snapshot_id, at=at, latest=latest,
                          allow_cross_target=allow_cross_target)
    with ctx.progress(f"restore {point.id}", point.page_count) as advance:
        res = restore_new(ws, point, to, env=env, check=check or "quick", jobs=jobs, progress=advance)
    if at or latest:
        gap = gap_at(ws.vault, target, parse_time(at) if at else utc_now())
        if gap:
            res.warnings.append(gap)
    for w in res.warnings:
        ctx.warn(w)
    if ctx.json:
        return ctx.emit_json(res.to_json())
    checked = "not checked (--check none)" if res.check == "none" else f"{res.check} ok"
    click.echo(f"restored {point.id} ({point.time}) of {point.target_name} to {res.path}; "
               f"{checked}; stamped as {res.identity.env} copy {res.identity.target_id}")


def run_inplace(ctx: Ctx, target, point, *, action: str, confirm_name, yes, force_live, allow_cross_target=False,
                jobs: int | None = None):
    """Plan, confirm, apply; every refusal shows the plan (stderr, or in the JSON error) and is audited."""
    from ..ops import guards, inplace  # only the in-place path needs them (start-up of restore --to)

    ws = ctx.ws
    plan = None
    try:
        with inplace.prepare(ws, target, point, action=action, force_live=force_live,
                             allow_cross_target=allow_cross_target, window=live_window(ctx), jobs=jobs) as plan:
            if not ctx.json:
                render_plan(ctx, plan.to_json())
            how = guards.confirm(
                target, confirm_name=confirm_name, yes=yes, interactive=sys.stdin.isatty(),
                ask_name=_unless_aborted(lambda: click.prompt(
                    f"Type the target's name to replace {target.env} database {target.name!r}", default="no", err=True)),
                ask_yes=_unless_aborted(lambda: click.confirm(
                    f"Replace {target.env} database {target.name!r}?", default=False, err=True)),
            )
            res = inplace.apply(ws, plan, confirmed_by=how)
    except MulliganError as exc:  # refused or failed: the plan is the evidence, in the log too
        if plan is not None:  # after the plan was shown: keep it with the error
            exc.details.setdefault("plan", plan.to_json())
        elif "plan" in exc.details and not ctx.json:
            render_plan(ctx, exc.details["plan"])
        ctx.audit_detail = {"reason": exc.message, **_audit_summary(exc.details.get("plan"))}
        raise
    ctx.audit_detail = {"point": point.id, "undo_point": res.undo_point.id, "generation": res.identity.generation,
                        "confirmed_by": how, "warnings": res.plan.warnings}
    if ctx.json:
        return ctx.emit_json(res.to_json())
    verb = "put back" if action == "undo" else "restored"
    click.echo(f"{verb} {point.id} ({point.time}) into {target.name} at {target.path} in place; "
               f"generation {res.identity.generation}; undo point {res.undo_point.id} "
               f"('mulligan undo {target.name}' puts it back)")


def live_window(ctx: Ctx) -> float:
    """[guards] live_window_seconds: how recent a foreign commit makes a database live (default 10)."""
    from ..ops.liveuse import LIVE_WINDOW

    try:
        return float(ctx.config.section("guards").get("live_window_seconds", LIVE_WINDOW))
    except (TypeError, ValueError):
        raise UsageError("[guards] live_window_seconds must be a number of seconds") from None


def _unless_aborted(ask):
    """Ctrl-C or end of input at the prompt is a "no" (a refusal, logged), not a crash."""
    def wrapped():
        try:
            return ask()
        except click.Abort:
            click.echo("", err=True)
            return None
    return wrapped


def _audit_summary(plan_json: dict | None) -> dict:
    if not plan_json:
        return {}
    return {"point": plan_json["point"]["id"], "refusals": plan_json["refusals"], "warnings": plan_json["warnings"],
            "loss": plan_json["loss"].get("totals"), "live": plan_json["live_use"]["live"]}


def render_plan(ctx: Ctx, plan: dict) -> None:
    """The plan, on standard error (shown even with -q: it is what the user confirms)."""
    from rich.markup import escape

    t, p, lw, loss = plan["target"], plan["point"], plan["last_write"], plan["loss"]
    ident = plan.get("identity") or {}
    out = ctx.err
    out.print(f"[bold]Plan: {escape(plan['action'])} in place[/]")
    out.print(f"  target      [bold]{escape(t['name'])}[/]  {env_label(t['env'])}  "
              f"(id {t['id']}, generation {ident.get('generation', '?')})")
    out.print(f"  path        {escape(t['path'])} on host {escape(t['host'])}")
    out.print(f"  last write  {human_age(lw['age_seconds'])} ago ({lw['time']}, {lw['file']})")
    label = "undo point" if p["kind"] == "undo" else "restore point"
    out.print(f"  restoring   {label} {p['id']} of {escape(p['target'])}, {p['time']} "
              f"({human_age(p['age_seconds'])} old)")
    out.print(f"  will lose   rows that differ between now and that point ({loss['method']}):")
    if not loss["tables"]:
        out.print("                (no table differs)")
    for row in loss["tables"]:
        if "lost" in row:
            out.print(f"                {escape(row['table']):<20} {row['lost']} rows lost, {row['changed']} changed, "
                      f"{row['returning']} back")
        else:
            out.print(f"                {escape(row['table']):<20} {row['rows_now']} rows now, {row['rows_then']} then")
    if plan.get("commits_since") is not None:
        out.print(f"              {plan['commits_since']} commit(s) by others since then, captured by watch")
    out.print(f"              {plan['newer_restore_points']} newer restore point(s) since then (they stay in the vault)")
    live = plan["live_use"]
    others = [h for h in live["holders"] if not h["mulligan"]]
    if not live["live"]:
        out.print("  live use    none seen" + (f" ({len(live['holders'])} Mulligan process(es) ignored)" if live["holders"] else ""))
    for h in others:
        out.print(f"  live use    [bold red]pid {h['pid']}[/] ({escape(h['command'])}) has the {', '.join(h['files'])} open")
    if live["recent_commit"]:
        rc = live["recent_commit"]
        out.print(f"  live use    [bold red]a commit by others {human_age(rc['age_seconds'])} ago[/] ({escape(rc['how'])})")
    for w in plan["warnings"]:
        out.print(f"  [bold yellow]warning[/]     {escape(w)}")
    for r in plan["refusals"]:
        out.print(f"  [bold red]refused[/]     {escape(r)}")
    if not plan["refusals"]:
        out.print(f"  undo        an undo point is taken first; 'mulligan undo {escape(t['name'])}' puts it back")


def register(cli: click.Group) -> None:
    cli.add_command(restore)
