"""diff, impact."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError
from .context import Ctx, pass_ctx

STATE_HELP = "FROM and TO: live, a snapshot id or unique prefix, @TIME, or a path to a SQLite file."


def _format(ctx: Ctx, fmt: str | None) -> str:
    """--json is --format json; --json with another format is a contradiction, not a guess."""
    if ctx.json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} do not go together", hint="--json is the same as --format json")
    return fmt or ("json" if ctx.json else "text")


def _split(ctx: Ctx, args: tuple[str, ...], command: str):
    """[NAME] FROM TO -> (workspace or None, target or None, FROM, TO)."""
    if len(args) == 3:
        ws = ctx.ws
        return ws, ws.target(args[0]), args[1], args[2]
    if len(args) == 2:
        return None, None, args[0], args[1]
    raise UsageError(f"{command} takes [NAME] FROM TO", hint=f"e.g. 'mulligan {command} app <snapshot-id> live', "
                     f"or 'mulligan {command} old.db new.db'")


@click.command()
@click.argument("args", nargs=-1, metavar="[NAME] FROM TO")
@click.option("--table", "tables", multiple=True, metavar="T", help="Only this table (repeatable).")
@click.option("--summary", is_flag=True, help="Counts per table only, no rows.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sql"]), default=None,
              help="text (default), json (docs/json.md) or sql (a script turning FROM into TO).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Rows shown per table (text: 20 by default; json: all unless given).")
@pass_ctx
def diff(ctx: Ctx, args, tables, summary, fmt, limit):
    """Row-level differences between two states of a database.

    NAME may be left out when FROM and TO are both files; then no configuration
    is needed. Exit status is 0 whether or not there are differences.
    """
    from ..ops.diff import diff as diff_op
    from ..report import diff as rep

    fmt = _format(ctx, fmt)
    ws, target, a, b = _split(ctx, args, "diff")
    if fmt == "sql":
        if summary:
            raise UsageError("--summary and --format sql do not go together", hint="the SQL script needs every row")
        keep = None
    elif summary:
        keep = 0
    else:
        keep = limit if limit is not None else (20 if fmt == "text" else None)
    res = diff_op(ws, target, a, b, tables=list(tables) or None, limit=keep, rebuild=fmt == "sql")
    if fmt == "json":
        return ctx.emit_json(rep.diff_json(res, rows=not summary))
    if fmt == "sql":
        sys.stdout.write(rep.diff_sql(res))
        return None
    rep.render_diff_text(res, ctx.out, rows=not summary)
    skipped = sum(t.method == "skipped" for t in res.tables)
    ctx.debug(f"compared in {res.seconds:.3f} s; {skipped} of {len(res.tables)} tables skipped unread (identical pages)"
              if res.diff.pages_compared else f"compared in {res.seconds:.3f} s, every row read")


@click.command()
@click.argument("args", nargs=-1, metavar="[NAME] FROM TO")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default=None,
              help="text (default), json (docs/json.md) or csv (one line per user and table).")
@click.option("--users-table", metavar="T", help="The table of users (default: configured, else auth_user, users or accounts).")
@pass_ctx
def impact(ctx: Ctx, args, fmt, users_table):
    """Which users' data differs between two states, and how much.

    Rows are attributed to their owner: a configured owner column, else the
    foreign keys leading to the users table. Rows without an owner are counted too.
    """
    from ..ops.impact import impact as impact_op
    from ..report import diff as rep

    fmt = _format(ctx, fmt)
    ws, target, a, b = _split(ctx, args, "impact")
    res = impact_op(ws, target, a, b, users_table=users_table)
    if fmt == "json":
        return ctx.emit_json(rep.impact_json(res))
    if fmt == "csv":
        sys.stdout.write(rep.impact_csv(res))
        return None
    rep.render_impact_text(res, ctx.out)


diff.help = (diff.help or "") + "\n\n" + STATE_HELP
impact.help = (impact.help or "") + "\n\n" + STATE_HELP


def register(cli: click.Group) -> None:
    cli.add_command(diff)
    cli.add_command(impact)
