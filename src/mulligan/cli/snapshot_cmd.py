"""snapshot, snapshots."""

from __future__ import annotations

import click

from ..ops.snapshot import take_snapshot
from ..report.tables import size, table
from ..runtime import tune_allocator, tune_gc
from .context import Ctx, pass_ctx


def manifest_row(m) -> dict:
    return {
        "id": m.id, "target": m.target_name, "time": m.time, "kind": m.kind, "tag": m.tag,
        "logical_size": m.logical_size, "new_bytes": m.new_bytes, "new_chunks": m.new_chunks,
        "new_objects": m.new_objects, "page_size": m.page_size, "page_count": m.page_count,
        "journal_mode": m.meta.get("journal_mode"), "writer_pause_ms": m.meta.get("writer_pause_ms"),
    }


@click.command()
@click.argument("name")
@click.option("--tag", help="A label kept with the snapshot.")
@pass_ctx
def snapshot(ctx: Ctx, name, tag):
    """Take one consistent snapshot of a live database."""
    ws = ctx.ws
    target = ws.target(name)
    ctx.audit_target = target
    tune_allocator()  # a one-shot process streaming pages through large buffers (runtime.py)
    tune_gc()
    with ctx.progress(f"snapshot {name}", None) as advance:
        m = take_snapshot(ws, target, tag=tag, progress=advance)
    row = manifest_row(m)
    if ctx.json:
        return ctx.emit_json(row)
    if row["writer_pause_ms"] is not None:
        ctx.warn(f"{target.path} is in {row['journal_mode']} journal mode: writers waited "
                 f"{row['writer_pause_ms']:.0f} ms for the snapshot; WAL mode avoids that pause")
    click.echo(f"snapshot {m.id} of {name} at {m.time}: {size(m.logical_size)} logical, "
               f"{size(m.new_bytes)} newly stored in {m.new_objects} objects")


@click.command()
@click.argument("name")
@pass_ctx
def snapshots(ctx: Ctx, name):
    """List restore points of a target."""
    ws = ctx.ws
    target = ws.target(name)
    rows = [manifest_row(m) for m in ws.vault.manifests(target.id)]
    from ..ops.capture_store import coverage

    cov = coverage(ws.vault, target)
    if ctx.json:
        return ctx.emit_json({"target": name, "snapshots": rows, "coverage": cov})
    t = table("id", "time (UTC)", "kind", "tag", "logical size", "newly stored")
    for r in rows:
        t.add_row(r["id"], r["time"], r["kind"], r["tag"] or "", size(r["logical_size"]), size(r["new_bytes"]))
    ctx.out.print(t)
    if cov["from"]:
        click.echo(f"every commit captured from {cov['from']} to {cov['to']}"
                   + (f", except {len(cov['gaps'])} gap(s):" if cov["gaps"] else " (no gaps)"))
        for g in cov["gaps"]:
            click.echo(f"  gap {g['from']} → {g['to']}: {g['reason']}")


def register(cli: click.Group) -> None:
    cli.add_command(snapshot)
    cli.add_command(snapshots)
