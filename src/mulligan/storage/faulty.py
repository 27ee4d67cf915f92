"""A deliberately failing backend wrapper, for fault-injection tests."""

from __future__ import annotations

from typing import Callable, Iterator

from ..errors import StorageError
from .base import Storage


class FaultyStorage(Storage):
    """Wraps a backend; ``fail_put`` decides per key whether a put fails, ``lose_answer``
    whether a put is done but then reported failed (its answer lost on the way back),
    ``corrupt_get`` whether a get returns flipped bytes."""

    def __init__(
        self,
        inner: Storage,
        fail_put: Callable[[str], bool] | None = None,
        corrupt_get: Callable[[str], bool] | None = None,
        lose_answer: Callable[[str], bool] | None = None,
    ):
        self.inner = inner
        self.url = inner.url
        self.read_ahead = inner.read_ahead
        self.fork_safe = inner.fork_safe
        self.fail_put = fail_put or (lambda key: False)
        self.corrupt_get = corrupt_get or (lambda key: False)
        self.lose_answer = lose_answer or (lambda key: False)
        self.puts: list[str] = []

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        return _flip(data) if self.corrupt_get(key) else data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        data = self.inner.get_range(key, offset, length)
        return _flip(data) if self.corrupt_get(key) else data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        if self.fail_put(key):
            raise StorageError(f"injected failure writing {key}")
        self.inner.put(key, data, overwrite=overwrite)
        self.puts.append(key)
        if self.lose_answer(key):
            raise StorageError(f"injected loss of the answer to writing {key}")

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def room(self) -> tuple[int, int] | None:
        return self.inner.room()

    def check_room(self, nbytes: int) -> None:
        self.inner.check_room(nbytes)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def stat(self, key: str) -> int | None:
        return self.inner.stat(key)

    def sweep(self, older_than: float) -> tuple[int, int]:
        return self.inner.sweep(older_than)


def _flip(data: bytes) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)
