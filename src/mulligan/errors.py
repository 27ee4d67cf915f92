"""One exception root for every expected failure.

Each error says what happened (``message``), what was left unchanged
(``unchanged``) and what to do (``hint``), and carries the exit code the
command line returns for it. The CLI prints these as one line, never a
traceback.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTEGRITY = 4


_RUN_AGAIN = re.compile(r"(,? then)? ?run the command again[;,]?")


class MulliganError(Exception):
    """Root of every error Mulligan expects and reports."""

    exit_code = EXIT_ERROR
    kind = "error"

    def __init__(self, message: str, *, hint: str = "", unchanged: str = "", details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.unchanged = unchanged
        self.details = details or {}

    def one_line(self, retrying: bool = False) -> str:
        """Message, what was left unchanged, hint. With ``retrying`` (a daemon that tries again
        by itself, as watch does) the hint says so instead of telling to run the command again."""
        parts = [self.message.rstrip(".") + "."]
        if self.unchanged:
            parts.append(self.unchanged.rstrip(".") + ".")
        hint = self.hint
        if retrying:
            hint = _RUN_AGAIN.sub("", hint).strip(" ,;")
            if "by itself" not in hint:  # some hints say so already ("watch retries by itself")
                hint = f"{hint}; it is tried again by itself" if hint else "it is tried again by itself"
        if hint:
            parts.append(hint.rstrip(".") + ".")
        return " ".join(parts)

    def to_json(self) -> dict:
        return {
            "error": self.kind,
            "message": self.message,
            "unchanged": self.unchanged,
            "hint": self.hint,
            "exit_code": self.exit_code,
            **({"details": self.details} if self.details else {}),
        }


class UsageError(MulliganError):
    """The command was given something it cannot use (exit 2)."""

    exit_code = EXIT_USAGE
    kind = "usage"


class ConfigError(MulliganError):
    """The configuration is missing or wrong."""

    kind = "config"


class NotFound(MulliganError):
    """A target, snapshot, object or file that was asked for does not exist."""

    kind = "not-found"


class NotADatabase(MulliganError):
    """A file that should be a SQLite database is not one."""

    kind = "not-a-database"


class DatabaseBusy(MulliganError):
    """The database is locked by another process for longer than we wait."""

    kind = "busy"


class StorageError(MulliganError):
    """The vault's storage failed (disk full, permission, network)."""

    kind = "storage"


class GuardRefused(MulliganError):
    """A guard refused the operation (exit 3). Nothing was changed."""

    exit_code = EXIT_REFUSED
    kind = "refused"


class IntegrityError(MulliganError):
    """The vault or a database is damaged (exit 4)."""

    exit_code = EXIT_INTEGRITY
    kind = "integrity"


class UnsupportedFormat(IntegrityError):
    """The vault uses a format version or feature this Mulligan does not know."""

    kind = "unsupported-format"
