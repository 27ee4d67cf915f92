"""An in-memory backend, for tests and scratch work."""

from __future__ import annotations

import threading
from typing import Iterator

from .base import ObjectExists, ObjectMissing, Storage, register

_SHARED: dict[str, dict[str, bytes]] = {}


class MemoryStorage(Storage):
    fork_safe = True  # a child reads the parent's objects as they were at the fork

    def __init__(self, name: str = ""):
        self.url = f"memory://{name}"
        self._objects = _SHARED.setdefault(name, {}) if name else {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectMissing(f"object {key} is missing") from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.get(key)[offset : offset + length]

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        with self._lock:
            if not overwrite and key in self._objects:
                if self._objects[key] == data:
                    return  # the same bytes: this write is already done
                raise ObjectExists(f"object {key} already exists")
            self._objects[key] = bytes(data)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        with self._lock:
            items = sorted((k, len(v)) for k, v in self._objects.items() if k.startswith(prefix))
        yield from items

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def stat(self, key: str) -> int | None:
        v = self._objects.get(key)
        return None if v is None else len(v)


register("memory", lambda url: MemoryStorage(url[len("memory://"):]))
