"""The engine interface: everything engine-specific lives behind it.

The ops layer asks an engine to read a consistent state as pages, to stamp and
read the identity inside a database, and to write a state into a new database.
SQLite implements it in engines/sqlite; PostgreSQL follows the same shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Iterable, Sequence

from ..model import Identity


class Engine(ABC):
    name: str

    @abstractmethod
    def check(self, location: str) -> dict:
        """Raise NotADatabase/NotFound if ``location`` is not a usable database; return facts."""

    @abstractmethod
    def read_identity(self, location: str) -> Identity | None: ...

    @abstractmethod
    def write_identity(self, location: str, identity: Identity) -> None: ...

    @abstractmethod
    def consistent_state(self, location: str) -> AbstractContextManager:
        """A context manager yielding an object with page_size, page_count, meta, batches()."""

    @abstractmethod
    def write_new(
        self, location: str, page_size: int, page_count: int, shards: Sequence[Iterable[list[tuple[int, bytes]]]],
        progress=None,
    ) -> None:
        """Write batches of (page number from 1, page bytes) into a new database at ``location``
        (which must not exist). The batches come in ``shards``, each page in one, which may be
        written at the same time by processes of their own (``Vault.page_batch_shards``)."""

    @abstractmethod
    def check_integrity(self, location: str, full: bool = False) -> list[str]:
        """Problems found (empty when the database is sound)."""


def engine_for(name: str) -> Engine:
    if name == "sqlite":
        from .sqlite.engine import SqliteEngine

        return SqliteEngine()
    from ..errors import ConfigError

    raise ConfigError(f"no engine named {name!r}", hint="supported engines: sqlite")
