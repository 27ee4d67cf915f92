"""The `mulligan` command: parse, call one op, render. Errors map to exit codes here."""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import EXIT_ERROR, EXIT_USAGE, GuardRefused, IntegrityError, MulliganError, UsageError
from .context import Ctx

# Commands that change state are written to the audit log with their outcome.
# A command sets ctx.audit = False when a given run changes nothing (a plan, a dry run),
# and ctx.audit_target to the Target it acted on.
AUDITED = {"protect", "snapshot", "restore", "undo", "prune", "recover", "watch", "incident"}

# Each module defines click commands and register(group).
COMMAND_MODULES = [
    "setup_cmd",
    "snapshot_cmd",
    "restore_cmd",
    "vault_cmd",
    "watch_cmd",
    "incident_cmd",
    "diff_cmd",
    "recover_cmd",
    "guard_cmd",
]

# Which module defines each command, so a run imports only what it uses (start-up
# time matters for a command scripts call every second). tests/test_cli_reference.py
# fails when this disagrees with the modules.
COMMAND_INDEX = {
    "init": "setup_cmd", "protect": "setup_cmd", "targets": "setup_cmd",
    "snapshot": "snapshot_cmd", "snapshots": "snapshot_cmd",
    "restore": "restore_cmd",
    "verify": "vault_cmd", "prune": "vault_cmd",
    "watch": "watch_cmd", "status": "watch_cmd", "incidents": "watch_cmd",
    "incident": "incident_cmd", "postmortem": "incident_cmd", "demo": "incident_cmd",
    "diff": "diff_cmd", "impact": "diff_cmd",
    "recover": "recover_cmd",
    "undo": "guard_cmd", "guard": "guard_cmd", "audit": "guard_cmd",
}


class LazyGroup(click.Group):
    """Imports a command's module on first use; --help imports them all."""

    _loaded: set[str] = set()

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            importlib.import_module(f"{__package__}.{module}").register(self)

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in COMMAND_INDEX:
            self._load(COMMAND_INDEX[cmd_name])
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        for m in COMMAND_MODULES:
            self._load(m)
        return sorted(self.commands)


_GLOBAL_FLAGS = {"--json": ("json", True), "-v": ("verbosity", 1), "--verbose": ("verbosity", 1),
                 "-q": ("verbosity", -1), "--quiet": ("verbosity", -1)}


def split_globals(argv: list[str]) -> tuple[dict, list[str]]:
    """Take the global options out of argv wherever they stand (before '--')."""
    opts: dict = {"json": False, "verbosity": 0, "config_arg": None}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in _GLOBAL_FLAGS:
            key, val = _GLOBAL_FLAGS[a]
            opts[key] = (opts[key] + val) if key == "verbosity" else val
        elif a == "-vv":
            opts["verbosity"] += 2
        elif a == "--config":
            if i + 1 >= len(argv):
                raise click.UsageError("--config needs a path")
            opts["config_arg"] = argv[i + 1]
            i += 1
        elif a.startswith("--config="):
            opts["config_arg"] = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return opts, rest


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(version=__version__, prog_name="mulligan")
@click.option("--config", "config_arg", metavar="PATH", help="Configuration file (else MULLIGAN_CONFIG, else ./mulligan.toml).")
@click.option("--json", "json_", is_flag=True, help="Machine-readable JSON on standard output.")
@click.option("-v", "--verbose", count=True, help="More narration on standard error.")
@click.option("-q", "--quiet", is_flag=True, help="No narration, only the report.")
@click.pass_context
def cli(ctx: click.Context, config_arg, json_, verbose, quiet) -> None:
    """Mulligan: a second chance for your production database.

    Global options (--config, --json, -v, -q) may stand before or after the command.
    Exit codes: 0 ok, 1 error, 2 usage, 3 refused by a guard, 4 integrity failure.
    """
    if ctx.obj is None:
        ctx.obj = Ctx(config_arg=config_arg, json=json_, verbosity=-1 if quiet else verbose)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, rest = split_globals(argv)
    except click.UsageError as exc:
        sys.stderr.write(f"mulligan: {exc.message}\n")
        return EXIT_USAGE
    ctx_obj = Ctx(**opts)
    command = next((a for a in rest if not a.startswith("-")), None)
    try:
        # Without standalone mode, click returns the code of ctx.exit(N) instead of raising.
        rv = cli.main(args=rest, prog_name="mulligan", obj=ctx_obj, standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        _audit(ctx_obj, command, "done" if code == 0 else "failed", None if code == 0 else f"exit {code}", argv)
        return code
    except MulliganError as exc:
        _audit(ctx_obj, command, "refused" if isinstance(exc, GuardRefused) else "failed", exc.one_line(), argv)
        if ctx_obj.json:
            ctx_obj.emit_json(exc.to_json())
        sys.stderr.write(f"mulligan: {exc.one_line()}\n")
        return exc.exit_code
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            _audit(ctx_obj, command, "failed", f"exit {exc.exit_code}", argv)
        return exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("mulligan: aborted; nothing was changed\n")
        return EXIT_ERROR
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # `mulligan` alone: the help, on standard error
        return exc.exit_code
    except click.ClickException as exc:
        # Click's own errors (a missing argument, an unknown option or command, a bad
        # choice) follow the contract too: one line on standard error, JSON with --json.
        message = exc.format_message().rstrip(".")
        message = message[:1].lower() + message[1:]
        sub = getattr(exc, "ctx", None)
        hint = f"see '{sub.command_path} --help'" if sub is not None else ""
        err = (UsageError if exc.exit_code == EXIT_USAGE else MulliganError)(message, hint=hint)
        err.exit_code = exc.exit_code
        if ctx_obj.json:
            ctx_obj.emit_json(err.to_json())
        sys.stderr.write(f"mulligan: {err.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("mulligan: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # The system said no (a missing folder for -o, a full disk under standard output):
        # one line, exit 4 for damage and 1 otherwise. never a traceback.
        where = f" ({exc.filename})" if exc.filename else ""
        text = str(exc.strerror or exc)
        err = MulliganError(f"{text[:1].lower()}{text[1:]}{where}")
        _audit(ctx_obj, command, "failed", err.one_line(), argv)
        if ctx_obj.json:
            try:
                ctx_obj.emit_json(err.to_json())
            except OSError:
                pass
        sys.stderr.write(f"mulligan: {err.one_line()}\n")
        return EXIT_ERROR
    except Exception as exc:
        if type(exc).__module__ != "apsw":  # a bug: the traceback is what a report needs
            raise
        # SQLite refused something no op translated (a damaged page, a full disk mid-write):
        # one line, exit 4 for damage and 1 otherwise.
        if type(exc).__name__ == "CorruptError":  # a damaged database is an integrity failure (exit 4)
            err = IntegrityError(f"SQLite: {exc}", hint="check it with PRAGMA integrity_check")
        else:
            err = MulliganError(f"SQLite: {exc}")
        _audit(ctx_obj, command, "failed", err.one_line(), argv)
        if ctx_obj.json:
            ctx_obj.emit_json(err.to_json())
        sys.stderr.write(f"mulligan: {err.one_line()}\n")
        return err.exit_code


def _audit(ctx: Ctx, command: str | None, outcome: str, detail, argv: list[str]) -> None:
    if command not in AUDITED or not ctx.audit:
        return
    if ctx._ws is None:
        try:
            ctx.ws  # noqa: B018 - opens the vault if the configuration allows
        except MulliganError:
            return
    from ..ops import audit

    target = ctx.audit_target
    if target is None:
        names = [a for a in argv if not a.startswith("-")]
        name = names[1] if len(names) > 1 else None
        try:
            target = ctx.config.targets.get(name) if name else None
        except MulliganError:
            target = None
    try:
        audit.record(ctx.ws.vault, command=command, outcome=outcome, target=target, detail=ctx.audit_detail or detail,
                     argv=["mulligan", *argv])
    except Exception as exc:  # the audit log must never hide the command's own result
        sys.stderr.write(f"mulligan: warning: could not append to the audit log: {exc}\n")


def run() -> None:
    sys.exit(main())
