"""verify, prune."""

from __future__ import annotations

import click

from ..errors import EXIT_INTEGRITY
from ..ops.prune import prune as prune_op
from ..ops.verify import verify as verify_op
from ..report.tables import size, table
from ..timeparse import parse_duration
from .context import Ctx, pass_ctx


@click.command()
@click.argument("name", required=False)
@click.option("--restore-test", is_flag=True, help="Also restore the latest point into a scratch file and check it.")
@click.pass_context
def verify(cctx: click.Context, name, restore_test):
    """Check every object of the vault (exit 4 when something is missing or damaged)."""
    ctx: Ctx = cctx.obj
    with ctx.progress("verify", None) as advance:
        res = verify_op(ctx.ws, name, restore_test=restore_test, progress=advance)
    if ctx.json:
        ctx.emit_json(res.to_json())
    else:
        for n in res.notes:
            ctx.say(f"note: {n}")
        if res.ok:
            click.echo(f"vault ok: {res.manifests} restore points, {res.packs} packs, {res.chunks} chunks, "
                       f"{size(res.bytes_read)} read" + (", restore test ok" if res.restore_test else ""))
        else:
            t = table("object", "problem", title=f"{len(res.problems)} problem(s)")
            for p in res.problems:
                t.add_row(p["object"], p["problem"])
            ctx.out.print(t)
    if not res.ok:
        cctx.exit(EXIT_INTEGRITY)


@click.command()
@click.argument("name")
@click.option("--keep-within", metavar="DURATION", help="Keep every restore point of this recent window (7d, 36h).")
@click.option("--keep-last", type=int, metavar="N", help="Keep the N newest restore points.")
@click.option("--keep-hourly", type=int, metavar="N", help="Keep the newest point of each of the last N hours that have one.")
@click.option("--keep-daily", type=int, metavar="N", help="Keep the newest point of each of the last N days that have one.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@pass_ctx
def prune(ctx: Ctx, name, keep_within, keep_last, keep_hourly, keep_daily, dry_run):
    """Retention: remove restore points outside the rules, then unreferenced data."""
    ws = ctx.ws
    res = prune_op(ws, ws.target(name), keep_within=parse_duration(keep_within) if keep_within else None,
                   keep_last=keep_last, keep_hourly=keep_hourly, keep_daily=keep_daily, dry_run=dry_run)
    if ctx.json:
        return ctx.emit_json(res.to_json())
    t = table("id", "time (UTC)", "kind", "decision")
    for r in res.kept:
        t.add_row(r["id"], r["time"], r["kind"], f"keep ({r['reason']})")
    for r in res.removed:
        t.add_row(r["id"], r["time"], r["kind"], "would remove" if dry_run else "removed")
    ctx.out.print(t)
    if res.data_removal == "deferred":
        ctx.warn("a snapshot or capture was running: unreferenced data will be removed by the next prune")
    elif not dry_run:
        ctx.say(f"removed {res.packs_removed} packs, freed {size(res.bytes_freed)}")
        if res.temp_files_removed:
            ctx.say(f"removed {res.temp_files_removed} temporary files left by writes that never finished, "
                    f"freed {size(res.temp_bytes_freed)}")


def register(cli: click.Group) -> None:
    cli.add_command(verify)
    cli.add_command(prune)
