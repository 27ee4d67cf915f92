"""recover."""

from __future__ import annotations

import os
import sys

import click

from ..errors import UsageError
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
    from ..ops import guards, incidents
    from ..ops.recover import RecoveryOptions, recover_target
    from ..report import recover as rep

    target = ctx.ws.target(name)
    ctx.audit_target = target
    ctx.audit = bool(apply_)
    if sql_out:
        _check_writable(sql_out)  # before anything is planned or applied, not after
    options = RecoveryOptions(triggers=triggers, again=again,
                              users_table=users_table or target.options.get("users_table"),
                              owner_columns=dict(target.options.get("owner_columns", {})))

    def confirm(plan) -> str:
        interactive = sys.stdin.isatty()
        if interactive and confirm_name is None:
            rep.render_recovery_text(plan, ctx.err, limit=limit)
        return guards.confirm(
            target, confirm_name=confirm_name, yes=yes, interactive=interactive,
            ask_name=lambda: click.prompt(f"Type the target's name to merge into {target.env} database {target.name!r}",
                                          default="no", err=True),
            ask_yes=lambda: click.confirm(f"Merge into {target.env} database {target.name!r}?", default=False, err=True),
        )

    res = recover_target(ctx.ws, target, base=base, lost=lost, current=current, incident_id=incident_id,
                         options=options, apply=apply_, confirm=confirm, say=ctx.say)
    data = rep.recovery_json(res)
    if apply_:
        ctx.audit_detail = {"confirmed_by": res.confirmed_by, "conflicts": len(data["conflicts"]),
                            **{k: data[k] for k in ("undo_point", "rows_recovered", "remapped", "totals")}}
    if incident_id:
        # a merge into a copy (--current FILE) is a rehearsal: the incident keeps it as a plan, never as applied
        into_target = current == "live" or os.path.abspath(current) == os.path.abspath(target.path)
        incidents.record_recovery(ctx.ws.vault, incidents.get(ctx.ws.vault, incident_id),
                                  data if into_target else data | {"applied": False}, applied=apply_ and into_target)
    _finish(ctx, rep, res, res.plan if apply_ else res, sql_out, limit, data)


def _finish(ctx: Ctx, rep, obj, plan, sql_out, limit, data: dict) -> None:
    for w in plan.warnings:
        ctx.warn(w)
    if sql_out:
        try:
            with open(sql_out, "w") as fh:
                fh.write(rep.recovery_sql(plan))
            ctx.say(f"SQL script written to {sql_out}")
        except OSError as exc:  # the report below still says what was done
            ctx.warn(f"could not write the SQL script to {sql_out}: {exc.strerror or exc}")
    if ctx.json:
        ctx.emit_json(data)
    else:
        rep.render_recovery_text(obj, ctx.out, limit=limit)


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--sql-out: no folder {folder}", unchanged="nothing was planned or written",
                         hint="give a path in an existing folder")
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        raise UsageError(f"--sql-out: cannot write {path}", unchanged="nothing was planned or written",
                         hint="give a path you can write")


def register(cli: click.Group) -> None:
    cli.add_command(recover)
