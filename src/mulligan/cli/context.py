"""What every command receives: global options, lazily loaded config and vault, consoles."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import config as cfg

if TYPE_CHECKING:
    from rich.console import Console

    from ..ops.workspace import Workspace


def _console(stream) -> "Console":
    from rich.console import Console  # imported when first needed: start-up time matters

    tty = stream.isatty()
    return Console(file=stream, highlight=False, width=None if tty else 160, soft_wrap=not tty)


@dataclass
class Ctx:
    config_arg: str | None = None
    json: bool = False
    verbosity: int = 0
    audit: bool = True
    audit_target: object = None
    audit_detail: object = None
    _config: cfg.Config | None = None
    _ws: "Workspace | None" = None
    _out: "Console | None" = None
    _err: "Console | None" = None

    @property
    def out(self) -> "Console":
        if self._out is None:
            self._out = _console(sys.stdout)
        return self._out

    @property
    def err(self) -> "Console":
        if self._err is None:
            self._err = _console(sys.stderr)
        return self._err

    @property
    def config_path(self) -> Path:
        return cfg.locate(self.config_arg)

    @property
    def config(self) -> cfg.Config:
        if self._config is None:
            self._config = cfg.load(self.config_path)
        return self._config

    @property
    def ws(self) -> "Workspace":
        if self._ws is None:
            from ..ops.workspace import Workspace

            self._ws = Workspace.open(self.config)
        return self._ws

    def say(self, message: str) -> None:
        """Narration: standard error, silenced by -q."""
        if self.verbosity >= 0:
            self._narrate(message)

    def warn(self, message: str) -> None:
        self._narrate(message, "bold yellow", "warning: ")

    def debug(self, message: str) -> None:
        if self.verbosity > 0:
            self._narrate(message, "dim")

    def _narrate(self, message: str, style: str = "", prefix: str = "") -> None:
        """A line of plain text on standard error (paths and names are printed as they are,
        never read as markup); styled on a terminal, and written without loading rich
        when standard error is a file or a pipe (rich costs ~30 ms of start-up)."""
        if self._err is None and not sys.stderr.isatty():
            click.echo(prefix + message, err=True)
            return
        from rich.text import Text

        self.err.print(Text.assemble((prefix, style), message) if prefix else Text(message, style=style))

    def emit_json(self, obj) -> None:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    @contextmanager
    def progress(self, description: str, total: int | None):
        """A rich progress bar on standard error; yields advance(n, total)."""
        if self.verbosity < 0 or not sys.stderr.isatty():
            yield lambda n, t=None: None
            return
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
            console=self.err, transient=True,
        ) as prog:
            task = prog.add_task(description, total=total)

            def advance(n: int, t: int | None = None) -> None:
                if t is not None:
                    prog.update(task, total=t)
                prog.advance(task, n)

            yield advance


pass_ctx = click.make_pass_decorator(Ctx)
