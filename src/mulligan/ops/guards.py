"""Guards that stand between a user and a replaced database (docs/restoring-safely.md).

The identity check (``identity_problems``), the confirmation rules
(``confirm``), and ``inspect_file`` (``mulligan guard PATH``). Whether a
database is in live use is judged in :mod:`.liveuse`; its names are importable
from here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import GuardRefused, MulliganError, NotADatabase, NotFound
from ..model import Identity, Target
from ..vault import Vault
from .liveuse import (LIVE_WINDOW, Holder, LiveUse, live_use, looks_like_mulligan, open_holders,
                      recent_foreign_commit, record_own_commit, record_own_write, same_commit, state_digest)

__all__ = ["GuardReport", "confirm", "identity_problems", "inspect_file",
           "LIVE_WINDOW", "Holder", "LiveUse", "live_use", "looks_like_mulligan", "open_holders",
           "recent_foreign_commit", "record_own_commit", "record_own_write", "same_commit", "state_digest"]


# ---- identity and confirmation ----------------------------------------------------
def identity_problems(target: Target, ident: Identity | None) -> list[str]:
    """Reasons the database at the target's path may not be the target the configuration names."""
    if ident is None:
        return [f"{target.path} carries no identity stamp, so Mulligan cannot tell it is target {target.name!r}"]
    if ident.target_id != target.id:
        return [f"the database at {target.path} says it is target {ident.name!r} ({ident.env}, id {ident.target_id}), "
                f"but the configuration says {target.name!r} ({target.env}, id {target.id})"]
    if ident.env != target.env:
        return [f"the database at {target.path} says it is {ident.env}, the configuration says {target.env}"]
    if ident.kind != "original":
        return [f"the database at {target.path} is stamped as a restored copy, not the original {target.name!r}"]
    return []


def confirm(target: Target, *, confirm_name: str | None, yes: bool, interactive: bool,
            ask_name=None, ask_yes=None) -> str:
    """Apply the confirmation rules; return how the change was confirmed or raise GuardRefused.

    Production: the target's name, typed at a prompt (default no) or given as
    ``--confirm NAME``; ``--yes`` alone never suffices. Other environments:
    ``--yes``, ``--confirm NAME``, or a yes at the prompt.
    """
    unchanged = f"{target.path} was not changed"
    if confirm_name is not None:
        if confirm_name != target.name:
            raise GuardRefused(f"--confirm {confirm_name!r} does not match the target's name {target.name!r}",
                               unchanged=unchanged, hint=f"check which database you mean; the target is {target.name!r}")
        return "--confirm"
    if target.is_production:
        if yes:
            raise GuardRefused(f"--yes alone never replaces a production database ({target.name!r})", unchanged=unchanged,
                               hint=f"type the name at the prompt, or pass --confirm {target.name}")
        if not interactive or ask_name is None:
            raise GuardRefused(f"replacing production database {target.name!r} needs its name typed, and there is no terminal",
                               unchanged=unchanged, hint=f"pass --confirm {target.name} to confirm from a script")
        typed = ask_name()
        if typed is None:
            raise GuardRefused("the prompt was left without a name", unchanged=unchanged,
                               hint="nothing happens unless the target's exact name is typed")
        typed = typed.strip()
        if typed != target.name:
            raise GuardRefused(f"the name typed ({typed!r}) is not {target.name!r}", unchanged=unchanged,
                               hint="nothing happens unless the target's exact name is typed")
        return "typed name"
    if yes:
        return "--yes"
    if not interactive or ask_yes is None:
        raise GuardRefused(f"replacing {target.name!r} needs a confirmation, and there is no terminal", unchanged=unchanged,
                           hint=f"pass --yes (or --confirm {target.name}) to confirm from a script")
    if not ask_yes():
        raise GuardRefused("not confirmed at the prompt", unchanged=unchanged)
    return "prompt"


# ---- guard PATH ----------------------------------------------------------------
@dataclass
class GuardReport:
    """What a database file is, and whether changing it would pass the guards."""

    path: str
    is_database: bool
    identity: Identity | None = None
    target: Target | None = None  # the configuration's target at this path, if any
    live: LiveUse | None = None
    problems: list[str] = field(default_factory=list)  # why a change would be refused
    notes: list[str] = field(default_factory=list)

    @property
    def env(self) -> str | None:
        if self.identity is not None:
            return self.identity.env
        return self.target.env if self.target else None

    @property
    def name(self) -> str | None:
        if self.target is not None:
            return self.target.name
        return self.identity.name if self.identity else None

    @property
    def exit_code(self) -> int:
        if not self.is_database:
            return 1
        return 3 if self.problems else 0

    def to_json(self) -> dict:
        return {"path": self.path, "database": self.is_database, "name": self.name, "env": self.env,
                "production": self.env == "production", "live": bool(self.live and self.live.live),
                "identity": self.identity.to_json() if self.identity else None,
                "configured_target": self.target.name if self.target else None,
                "live_use": self.live.to_json() if self.live else None,
                "safe_to_change": self.is_database and not self.problems, "problems": self.problems,
                "notes": self.notes, "exit_code": self.exit_code}


def inspect_file(path: str, config=None, *, window: float = LIVE_WINDOW) -> GuardReport:
    """Tell a script what the database at ``path`` is before it touches it (the Python side of ``guard``).

    ``config`` is a mulligan.config.Config (or None): with it, the target
    registered at that path and Mulligan's knowledge of its state are used.
    The calling process counts as Mulligan's own and is not listed; do not call
    this in a process that holds SQLite connections to the file (it opens and
    closes the file, which drops that process's POSIX locks on it).
    """
    from ..engines.sqlite import identity as ident_mod
    from ..engines.sqlite.engine import open_conn
    from ..engines.sqlite.reader import sniff

    path = os.path.abspath(path)
    report = GuardReport(path, is_database=False)
    try:
        sniff(path)
    except (NotADatabase, NotFound) as exc:
        report.notes.append(exc.message)
        return report
    report.is_database = True
    vault = None
    if config is not None:
        real = os.path.realpath(path)  # a symlink on either side still names the same file
        report.target = next((t for t in config.targets.values() if os.path.realpath(t.path) == real), None)
        try:
            vault = Vault.open(config.vault_url)
        except MulliganError as exc:
            report.notes.append(f"the vault could not be opened ({exc.message}): Mulligan's own writes cannot be told apart")
    holders, notes = open_holders(path, vault)
    report.notes.extend(notes)
    conn = open_conn(path, readonly=True)  # a read-only connection never checkpoints on close
    try:
        report.identity = ident_mod.read(conn)
    except MulliganError:
        raise
    except Exception as exc:  # apsw errors: a damaged or locked file
        report.notes.append(f"the identity stamp could not be read: {exc}")
    finally:
        conn.close()
    target_id = report.target.id if report.target else (report.identity.target_id if report.identity else None)
    report.live = LiveUse(holders, recent_foreign_commit(path, vault, target_id, window), [])
    if report.env == "production":
        report.problems.append(f"{path} is the production database {report.name!r}")
    if report.live.live:
        report.problems.append(f"{path} is in live use: {report.live.evidence()}")
    if report.target is not None:
        report.problems.extend(identity_problems(report.target, report.identity))
    elif report.identity is None:
        report.notes.append("the database is not protected by Mulligan (no identity stamp): its environment is unknown")
    return report
