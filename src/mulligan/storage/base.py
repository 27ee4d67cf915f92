"""The storage interface: immutable objects by key.

Six methods, and ``sweep`` (optional: the default has nothing to sweep). Retries,
fault injection and caching are wrappers around a backend, never inside the vault. Every backend passes the same
conformance tests (tests/test_storage.py).

Rules every backend keeps:
- ``put`` is atomic: a reader sees the whole object or none of it.
- ``put(..., overwrite=False)`` on an existing key raises :class:`ObjectExists`, unless the
  object there holds exactly the bytes being written: then the put succeeds. A write that
  landed but whose answer was lost (a dropped connection, retried by the client) must not
  fail on its own first attempt, and nothing is replaced either way.
- ``get`` of a missing key raises :class:`ObjectMissing`.
- ``list`` yields ``(key, size)`` for keys under a prefix, in key order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterator

from ..errors import NotFound, StorageError


class ObjectMissing(NotFound):
    kind = "object-missing"


class ObjectExists(StorageError):
    kind = "object-exists"


class Storage(ABC):
    url: str = ""
    # How many ranged reads a restore keeps in flight: one ahead of the work on a local disk;
    # an object store answers each request after a round trip, which several hide.
    read_ahead: int = 1
    # Whether a forked child may read through this same object (parallel.py): true of files on
    # a disk; an object store's client holds threads and connections a child does not get.
    fork_safe: bool = False
    # Bytes a local vault leaves free on its disk ([vault] min_free; None: the default, 0: none).
    min_free: int | None = None

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def stat(self, key: str) -> int | None:
        """Size of the object, or None when it does not exist."""

    def room(self) -> tuple[int, int] | None:
        """(bytes free on the vault's disk, bytes kept free there); None where there is no disk
        of ours to fill (an object store) or it cannot be told."""
        return None

    def check_room(self, nbytes: int) -> None:
        """Raise StorageError when storing ``nbytes`` more of data would eat into the room kept
        free on the disk (a local vault: its disk is often the database's). Object stores: no-op."""

    def create_root(self) -> None:
        """Make the place a new vault lives in (a local folder). Only creating a vault does this:
        a put never makes it, so a vault deleted under a running writer is an error, not a
        fresh empty folder quietly filled with objects no vault describes."""

    def check_writes(self) -> None:
        """Before a vault is created here: raise StorageError if this store would break a rule
        above (a local folder keeps them by construction; an object store is asked)."""

    def sweep(self, older_than: float) -> tuple[int, int]:
        """Remove what interrupted writes left out of sight of the keys (a local folder's
        temporary files; an object store's unfinished uploads) that is older than
        ``older_than`` seconds, so that no write still running loses its half. Returns
        (how many, bytes)."""
        return 0, 0


_BACKENDS: dict[str, Callable[[str], Storage]] = {}


def register(scheme: str, factory: Callable[[str], Storage]) -> None:
    _BACKENDS[scheme] = factory


def open_storage(url: str) -> Storage:
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme not in _BACKENDS:
        raise StorageError(
            f"no storage backend for {scheme!r} URLs",
            hint=f"use one of: {', '.join(sorted(_BACKENDS))}",
        )
    return _BACKENDS[scheme](url)
