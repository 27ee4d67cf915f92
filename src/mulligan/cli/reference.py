"""Generate docs/cli.md from the commands' own help (python -m mulligan.cli.reference)."""

from __future__ import annotations

import click

from .main import COMMAND_MODULES, cli


def _help(cmd: click.Command, path: list[str]) -> str:
    # -h works on every command (the group's context settings reach its subcommands): say so
    ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100,
                        help_option_names=cli.context_settings["help_option_names"])
    return cmd.get_help(ctx)


def render() -> str:
    ctx = click.Context(cli, info_name="mulligan")
    out = [
        "# Command reference",
        "",
        "Generated from the commands' help by `python -m mulligan.cli.reference > docs/cli.md`;",
        "a test fails when this file is stale.",
        "",
        "```",
        _help(cli, ["mulligan"]),
        "```",
        "",
    ]

    def walk(cmd: click.Command, path: list[str]) -> None:
        out.extend([f"## {' '.join(path)}", "", "```", _help(cmd, path), "```", ""])
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.list_commands(ctx)):
                walk(cmd.get_command(ctx, name), path + [name])

    for name in cli.list_commands(ctx):
        walk(cli.get_command(ctx, name), ["mulligan", name])
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    assert COMMAND_MODULES
    print(render(), end="")
