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
@click.option("--again", is_flag=True, help="Apply although the same lost changes were merged before (writes them twice).")
@click.option("--users-table", metavar="T", help="The table of users, to say whose each lost row is.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Conflicts and key-map rows shown in text.")
@pass_ctx
def recover(ctx: Ctx, name, base, lost, incident_id, current, apply_, confirm_name, yes, sql_out, triggers,
            again, users_table, limit):
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
        again=again,
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
        ctx.say(f"merging into {current_path}: planned again under its write lock, checked, one transaction")
        result = apply_recovery(base_path, lost_path, current_path, options, hooks)
        if into_target:
            _record_own_write(ctx, ws, target, result.undo_point)
        data = rep.recovery_json(result)
        ctx.audit_detail = {**(ctx.audit_detail or {}),
                            **{k: data[k] for k in ("undo_point", "rows_recovered", "remapped", "totals")},
                            "conflicts": len(data["conflicts"])}
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
    from ..ops.inplace import UNDO_TAG
    from ..ops.snapshot import take_snapshot
    from ..vault import KIND_UNDO

    ctx.say("taking an undo point before writing")
    return take_snapshot(ws, target, kind=KIND_UNDO, tag=UNDO_TAG).id


def _confirm(ctx: Ctx, rep, target, plan, confirm_name, yes, limit) -> None:
    """The guards of an in-place change, except live use (users writing on is expected here)."""
    from ..ops import guards

    if plan.current == target.path:
        problems = guards.identity_problems(target, ctx.ws.engine(target).read_identity(target.path))
        if problems:
            raise GuardRefused(problems[0], unchanged="nothing was written and no undo point was taken")
    interactive = sys.stdin.isatty()
    if interactive and confirm_name is None:
        rep.render_recovery_text(plan, ctx.err, limit=limit)
    ctx.audit_detail = {"confirmed_by": guards.confirm(
        target, confirm_name=confirm_name, yes=yes, interactive=interactive,
        ask_name=lambda: click.prompt(f"Type the target's name to merge into {target.env} database {target.name!r}",
                                      default="no", err=True),
        ask_yes=lambda: click.confirm(f"Merge into {target.env} database {target.name!r}?", default=False, err=True),
    )}


def _record_own_write(ctx: Ctx, ws, target, undo_point) -> None:
    """The merge is Mulligan's own commit: it must never count as live use afterwards."""
    from ..ops import guards

    try:
        guards.record_own_write(ws.vault, target, by="recover", detail={"undo_point": undo_point})
    except Exception as exc:  # bookkeeping after the commit must not hide that the merge is done
        ctx.warn(f"could not record the merge as Mulligan's own write: {exc}")


def register(cli: click.Group) -> None:
    cli.add_command(recover)
