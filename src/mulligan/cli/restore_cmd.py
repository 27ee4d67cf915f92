"""restore."""

from __future__ import annotations

import click

from ..errors import UsageError
from ..model import ENVIRONMENTS, RESTORED_ENV
from ..ops.points import resolve_point
from ..ops.restore import restore_new
from .context import Ctx, pass_ctx


@click.command()
@click.argument("name")
@click.option("--snapshot", "snapshot_id", metavar="ID", help="A snapshot id or a unique prefix of one.")
@click.option("--at", "at", metavar="TIME", help="ISO 8601 or relative (-90m): the newest point at or before it.")
@click.option("--latest", is_flag=True, help="The newest restore point of the target's own history.")
@click.option("--to", "to", metavar="PATH", help="Write a NEW database at PATH.")
@click.option("--env", "env", type=click.Choice(ENVIRONMENTS + (RESTORED_ENV,)), help="Environment stamped in the copy (default: restored).")
@click.option("--check", "check", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
              help="quick_check or integrity_check on the restored database.")
@click.option("--allow-cross-target", is_flag=True, help="Allow a restore point of another target.")
@pass_ctx
def restore(ctx: Ctx, name, snapshot_id, at, latest, to, env, check, allow_cross_target):
    """Restore a point into a NEW database (--to PATH)."""
    if not to:
        raise UsageError("restore needs --to PATH (a new database)", hint="replacing the target itself needs --in-place")
    ws = ctx.ws
    target = ws.target(name)
    point = resolve_point(ws.vault, target, snapshot=snapshot_id, at=at, latest=latest,
                          allow_cross_target=allow_cross_target)
    with ctx.progress(f"restore {point.id}", point.page_count) as advance:
        res = restore_new(ws, point, to, env=env, full_check=check == "full", progress=advance)
    for w in res.warnings:
        ctx.warn(w)
    if ctx.json:
        return ctx.emit_json(res.to_json())
    click.echo(f"restored {point.id} ({point.time}) of {point.target_name} to {res.path}; "
               f"{res.check} ok; stamped as {res.identity.env} copy {res.identity.target_id}")


def register(cli: click.Group) -> None:
    cli.add_command(restore)
