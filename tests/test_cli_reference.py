"""The generated command reference and the lazy command index stay true."""

import importlib
from pathlib import Path

import click

from mulligan.cli import main as cli_main
from mulligan.cli.reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_every_command_is_listed_in_the_lazy_index_under_its_own_module():
    for module in cli_main.COMMAND_MODULES:
        group = click.Group()
        importlib.import_module(f"mulligan.cli.{module}").register(group)
        for name in group.commands:
            assert cli_main.COMMAND_INDEX.get(name) == module or name == "incidents", (name, module)
    assert set(cli_main.COMMAND_INDEX.values()) <= set(cli_main.COMMAND_MODULES)


def test_the_product_contract_commands_all_exist():
    wanted = {"init", "protect", "targets", "snapshot", "snapshots", "restore", "undo", "diff", "impact", "recover",
              "watch", "status", "incidents", "incident", "postmortem", "verify", "prune", "audit", "guard", "demo"}
    assert wanted <= set(cli_main.COMMAND_INDEX)


def test_docs_cli_md_is_generated_from_the_current_help():
    assert DOC.exists(), "run: python -m mulligan.cli.reference > docs/cli.md"
    assert DOC.read_text() == render(), "docs/cli.md is stale: python -m mulligan.cli.reference > docs/cli.md"


def test_the_reference_shows_the_help_options_the_commands_accept():
    from mulligan.cli.main import main

    text = render()
    assert "--help " not in text.replace("-h, --help", "")  # every command takes -h too
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["diff", "-h"]) == 0
    assert "-h, --help" in out.getvalue()
    assert render() == text  # running a command in-process first does not change the reference
