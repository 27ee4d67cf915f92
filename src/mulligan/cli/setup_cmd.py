"""init, protect, targets."""

from __future__ import annotations

import click

from ..model import ENVIRONMENTS
from ..ops import setup as setup_ops
from ..ops.targets import list_targets
from ..report.tables import env_label, table
from .context import Ctx, pass_ctx


@click.command()
@click.option("--vault", "vault_url", metavar="URL", help="Where the vault lives: a folder (default: .mulligan/vault beside the config) or s3://BUCKET/PREFIX.")
@pass_ctx
def init(ctx: Ctx, vault_url):
    """Create mulligan.toml and the vault (never clobbers an existing one)."""
    res = setup_ops.init(ctx.config_path, vault_url)
    if ctx.json:
        return ctx.emit_json(res.to_json())
    ctx.say(("created " if res.created_config else "kept ") + res.config_path)
    ctx.say(("created vault at " if res.created_vault else "kept vault at ") + res.vault_url)
    click.echo(f"config: {res.config_path}\nvault: {res.vault_url}")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Target name used in every other command.")
@click.option("--env", "env", required=True, type=click.Choice(ENVIRONMENTS), help="Environment stamped inside the database.")
@pass_ctx
def protect(ctx: Ctx, path, name, env):
    """Register a database as a target and stamp its identity inside it."""
    res = setup_ops.protect(ctx.ws, path, name, env)
    ctx.audit_target = res.target
    if ctx.json:
        return ctx.emit_json(res.to_json())
    if res.restamped_copy:
        ctx.warn("the file carried a restored-copy stamp; it now carries this target's identity")
    click.echo(f"protected {res.target.name} ({res.target.env}) at {res.target.path} as {res.target.id}")


@click.command()
@pass_ctx
def targets(ctx: Ctx):
    """List targets: name, environment, location, last capture age, open incidents."""
    rows = list_targets(ctx.ws)
    if ctx.json:
        return ctx.emit_json({"targets": rows})
    t = table("name", "env", "path", "last restore point", "age", "open incidents")
    for r in rows:
        t.add_row(r["name"], env_label(r["env"]), r["path"], r["last_point"] or "-", r["last_point_age"] or "never",
                  str(r["open_incidents"]))
    ctx.out.print(t)


def register(cli: click.Group) -> None:
    for c in (init, protect, targets):
        cli.add_command(c)
