"""recover."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from ..errors import GuardRefused, UsageError
from .context import Ctx, pass_ctx


@click.command()
@click.argument("name")
@click.option("--base", "base", metavar="STATE", help="The state production was rolled back to (a snapshot, @TIME or a file).")
@click.option("--lost", "lost", metavar="STATE", help="The last good state before the mistake.")
@click.option("--incident", "incident_id", metavar="ID", help="Take BASE and LOST from an incident, and record the recovery in it.")
@click.option("--current", "current", metavar="STATE", default="live", show_default=True,
              help="Where to merge into: the live database, or a file (to rehearse on a copy).")
@click.option("--apply", "apply_", is_flag=True, help="Write the merge (guarded; an undo point is taken first).")
@click.option("--confirm", "confirm_name", metavar="NAME", help="The target's name, to apply non-interactively.")
@click.option("--yes", is_flag=True, help="Apply without asking (never enough for production).")
@click.option("--sql-out", "sql_out", metavar="FILE", type=click.Path(dir_okay=False), help="Also write the plan as a SQL script.")
@click.option("--triggers/--no-triggers", default=False, show_default=True, help="Let the database's triggers fire during replay.")
@click.option("--users-table", metavar="T", help="The table of users, to say whose each lost row is.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Conflicts and key-map rows shown in text.")
@pass_ctx
def recover(ctx: Ctx, name, base, lost, incident_id, current, apply_, confirm_name, yes, sql_out, triggers,
            users_table, limit):
    """Merge the writes lost by a rollback back into the live database (three-way).

    What only LOST changed is replayed, what only CURRENT changed is kept, rows
    both changed merge cell by cell; lost rows whose ids were reused get new
    ids and their children follow. Without --apply this shows the plan and
    writes nothing. Exit status is 0 with or without conflicts (--json lists
    them); 3 when a guard refuses.
    """
    from ..ops import incidents
    from ..ops.recover import ApplyHooks, RecoveryOptions, apply_recovery, plan_recovery
    from ..ops.states import materialize
    from ..report import recover as rep

    ws = ctx.ws
    target = ws.target(name)
    ctx.audit_target = target
    ctx.audit = bool(apply_)
    inc = None
    if incident_id:
        inc = incidents.get(ws.vault, incident_id)
        inc_base, inc_lost = incidents.recovery_states(inc)
        base, lost = base or inc_base, lost or inc_lost
    if not base or not lost:
        raise UsageError("recover needs --base STATE and --lost STATE, or --incident ID",
                         hint="BASE is the state that was restored by mistake, LOST the last good state before it")
    options = RecoveryOptions(
        triggers=triggers,
        users_table=users_table or target.options.get("users_table"),
        owner_columns=dict(target.options.get("owner_columns", {})),
    )
    with ExitStack() as stack:
        ctx.say(f"reading BASE ({base}) and LOST ({lost})")
        base_path = stack.enter_context(materialize(ws.vault, target, base))
        lost_path = stack.enter_context(materialize(ws.vault, target, lost))
        current_path = target.path if current == "live" else stack.enter_context(materialize(ws.vault, target, current))
        into_target = current_path == target.path
        if not apply_:
            plan = plan_recovery(base_path, lost_path, current_path, options)
            _finish(ctx, rep, plan, plan, sql_out, limit)
            if inc is not None:
                incidents.record_recovery(ws.vault, inc, _for_incident(rep.recovery_json(plan), base, lost), applied=False)
            return None
        hooks = ApplyHooks(
            confirm=lambda plan: _confirm(ctx, rep, target, plan, confirm_name, yes, limit),
            take_undo_point=(lambda: _undo_point(ctx, ws, target)) if into_target else None,
        )
        result = apply_recovery(base_path, lost_path, current_path, options, hooks)
        data = rep.recovery_json(result)
        ctx.audit_detail = {k: data[k] for k in ("undo_point", "rows_recovered", "remapped", "totals")}
        ctx.audit_detail["conflicts"] = len(data["conflicts"])
        _finish(ctx, rep, result, result.plan, sql_out, limit)
        if inc is not None:
            incidents.record_recovery(ws.vault, inc, _for_incident(data, base, lost), applied=True)
    return None


def _finish(ctx: Ctx, rep, obj, plan, sql_out, limit) -> None:
    for w in plan.warnings:
        ctx.warn(w)
    if sql_out:
        with open(sql_out, "w") as fh:
            fh.write(rep.recovery_sql(plan))
        ctx.say(f"SQL script written to {sql_out}")
    if ctx.json:
        ctx.emit_json(rep.recovery_json(obj))
    else:
        rep.render_recovery_text(obj, ctx.out, limit=limit)


def _for_incident(data: dict, base: str, lost: str) -> dict:
    keep = dict(data)
    keep["base"], keep["lost"] = base, lost
    return keep


def _undo_point(ctx: Ctx, ws, target) -> str:
    from ..ops.snapshot import take_snapshot
    from ..vault import KIND_UNDO

    ctx.say("taking an undo point before writing")
    return take_snapshot(ws, target, kind=KIND_UNDO, tag="before recover").id


def _confirm(ctx: Ctx, rep, target, plan, confirm_name, yes, limit) -> None:
    """The guard of a write into a target: its identity, then its name typed (production) or a yes.

    Kept to one call so the shared guards (ops/guards.py) can take its place.
    """
    from ..ops.snapshot import check_identity

    if plan.current == target.path:
        check_identity(ctx.ws, target)
    refuse = dict(unchanged="nothing was written", hint=f"run the plan first, then add --confirm {target.name}")
    if confirm_name is not None:
        if confirm_name != target.name:
            raise GuardRefused(f"--confirm {confirm_name!r} does not match the target's name {target.name!r}", **refuse)
        return
    if yes and not target.is_production:
        return
    if not sys.stdin.isatty():
        why = "production needs its name" if target.is_production else "a write into a target needs"
        raise GuardRefused(f"recover --apply into {target.name} ({target.env}): {why} confirmed with --confirm NAME"
                           + ("" if target.is_production else " or --yes"), **refuse)
    rep.render_recovery_text(plan, ctx.err, limit=limit)
    if target.is_production:
        typed = click.prompt(f"Type the target's name ({target.name}, PRODUCTION) to write this merge into it",
                             default="", show_default=False, err=True)
        if typed.strip() != target.name:
            raise GuardRefused("the name typed does not match the target's", **refuse)
    elif not click.confirm(f"Write this merge into {target.name} ({target.env})?", default=False, err=True):
        raise GuardRefused("not confirmed", **refuse)


def register(cli: click.Group) -> None:
    cli.add_command(recover)
