"""Vault states served to SQLite page by page, without restoring them.

A :class:`VirtualImage` is a restore point's list of page chunk ids; a page is
fetched from the vault (through a :class:`ChunkCache` both sides of a diff
share, so a page they have in common is fetched once) only when it is read.
:func:`serve` registers an image with a read-only VFS and returns a URI to
ATTACH: SQLite then queries the state's rows as if it were a file (immutable,
no locks, no WAL: a WAL-mode header is served as rollback mode). The page-level
comparison (:mod:`.pages`) reads the same images by chunk id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable

import apsw

from .btree import PageMapError


class ChunkCache:
    """Pages of vault states by chunk id, shared by both sides (identical pages are fetched once)."""

    def __init__(self, load_many: Callable[[list[bytes]], Iterable[tuple[bytes, bytes]]], limit: int = 16384):
        self.load_many, self.limit = load_many, limit
        self.data: dict[bytes, bytes] = {}

    def get(self, cids: list[bytes]) -> list[bytes]:
        missing = [c for c in dict.fromkeys(cids) if c not in self.data]
        if missing:
            if len(self.data) + len(missing) > self.limit:
                self.data.clear()
            self.data.update(self.load_many(missing))
        return [self.data[c] for c in cids]


@dataclass
class VirtualImage:
    """A state held in a vault: its pages' chunk ids, fetched only when read."""

    path: str  # a name for messages and for the VFS
    page_size: int
    page_count: int
    page_ids: list[bytes]
    chunks: ChunkCache
    id_of: Callable[[bytes], bytes]

    @property
    def header(self) -> bytes:
        return self.page(1)[:100]

    @property
    def usable(self) -> int:
        return self.page_size - self.header[20]

    def page(self, n: int) -> bytes:
        if not 1 <= n <= self.page_count:
            raise PageMapError(f"page {n} is outside {self.path}")
        return self.chunks.get([self.page_ids[n - 1]])[0]

    def prefetch(self, pages) -> None:
        """Fetch pages about to be read in one pass over the vault's packs (when they fit the cache)."""
        wanted = [self.page_ids[n - 1] for n in pages if 1 <= n <= self.page_count]
        if len(wanted) <= self.chunks.limit // 2:
            self.chunks.get(wanted)

    def ids(self, id_of) -> list[bytes]:
        return self.page_ids

    def read(self, amount: int, offset: int) -> bytes:
        ps = self.page_size
        first, last = offset // ps + 1, min((offset + amount - 1) // ps + 1, self.page_count)
        if first > last:
            return b""
        data = b"".join(self.chunks.get(self.page_ids[first - 1 : last]))
        if first == 1 and data[18:20] == b"\x02\x02":  # WAL mode: read it as a plain file, there is no WAL
            data = data[:18] + b"\x01\x01" + data[20:]
        skip = offset - (first - 1) * ps
        return data[skip : skip + amount]

    def close(self) -> None:
        pass


# ---- serving vault states to SQLite ---------------------------------------------------
VFS_NAME = "mulligan-pages"
_served: dict[str, VirtualImage] = {}
_vfs: "apsw.VFS | None" = None


class _ServedFile:
    """A read-only SQLite file whose pages come from a VirtualImage."""

    def __init__(self, image: VirtualImage):
        self.image = image

    def xRead(self, amount: int, offset: int) -> bytes:
        return self.image.read(amount, offset)

    def xFileSize(self) -> int:
        return self.image.page_count * self.image.page_size

    def xDeviceCharacteristics(self) -> int:
        return apsw.SQLITE_IOCAP_IMMUTABLE

    def xSectorSize(self) -> int:
        return 4096

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xSync(self, flags: int) -> None:
        pass

    def xClose(self) -> None:
        pass

    def xWrite(self, data, offset: int) -> None:
        raise apsw.ReadOnlyError("a vault state is read-only")

    def xTruncate(self, size: int) -> None:
        raise apsw.ReadOnlyError("a vault state is read-only")


class _ServingVFS(apsw.VFS):
    def __init__(self) -> None:
        super().__init__(VFS_NAME, "")

    def xOpen(self, name, flags):
        key = name.filename() if isinstance(name, apsw.URIFilename) else name
        if key in _served:
            flags[1] = apsw.SQLITE_OPEN_READONLY
            return _ServedFile(_served[key])
        return super().xOpen(name, flags)


def serve(image: VirtualImage) -> str:
    """Make a vault state readable by SQLite; return the URI to ATTACH (until ``unserve``)."""
    global _vfs
    if _vfs is None:
        _vfs = _ServingVFS()
    key = f"/mulligan-state/{os.urandom(6).hex()}"
    _served[key] = image
    return f"file:{key}?vfs={VFS_NAME}&mode=ro&immutable=1"


def unserve(uri: str) -> None:
    _served.pop(uri.split("?", 1)[0][len("file:") :], None)
