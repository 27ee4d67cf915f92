"""Block digests: what lets an incremental snapshot skip hashing pages that did not change.

A page's chunk id is a hash of 4 KiB, and BLAKE3 is ~5x slower per byte on
inputs that small than on 32 KiB ones (fewer of its 1 KiB chunks to hash side by
side, plus a call per page). A snapshot therefore also hashes each run of
``BLOCK_PAGES`` consecutive pages as one input and keeps those block digests
with the page ids it recorded. The next snapshot of the same target hashes the
blocks again, and where a block's digest is unchanged it takes the block's page
ids from the previous snapshot instead of hashing each page: identical bytes
have identical ids, so the manifest is exactly the one full hashing would give.

The digests live in a local cache file (like the files cache of a file backup
tool), never in the vault: they are a speed-up, not part of any restore point.
A cache is used only when it is intact (a BLAKE3 checksum over the whole file)
and the snapshot it describes still exists in the vault with the same root,
which is what guarantees the reused ids name stored chunks (a manifest's chunks
are kept as long as it is). Anything else (a missing, damaged or foreign cache,
another page size) means the pages are hashed one by one, as without a cache.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3

from .codec import ID_LEN

BLOCK_PAGES = 8
MAGIC = b"MBD1"
_HDR = struct.Struct("<4sII")  # magic, page size, pages per block
_SUM = 32


@dataclass(frozen=True)
class BlockDigests:
    """The page ids of one snapshot and the digests of its whole blocks."""

    snapshot_id: str
    root: str
    page_size: int
    ids: bytes  # ID_LEN bytes per page, in page order
    digests: bytes  # ID_LEN bytes per whole block of BLOCK_PAGES pages
    block_pages: int = BLOCK_PAGES

    @property
    def page_count(self) -> int:
        return len(self.ids) // ID_LEN

    def encode(self) -> bytes:
        names = f"{self.snapshot_id}\n{self.root}".encode()
        body = b"".join([
            _HDR.pack(MAGIC, self.page_size, self.block_pages),
            struct.pack("<III", len(names), len(self.ids), len(self.digests)),
            names, self.ids, self.digests,
        ])
        return body + blake3.blake3(body).digest()

    @classmethod
    def decode(cls, data: bytes) -> "BlockDigests | None":
        """The digests in ``data``, or None if it is not an intact digest file."""
        if len(data) < _HDR.size + 12 + _SUM:
            return None
        body, checksum = data[:-_SUM], data[-_SUM:]
        if blake3.blake3(body).digest() != checksum:
            return None
        magic, page_size, block_pages = _HDR.unpack_from(body, 0)
        n_names, n_ids, n_digests = struct.unpack_from("<III", body, _HDR.size)
        pos = _HDR.size + 12
        if magic != MAGIC or pos + n_names + n_ids + n_digests != len(body) or n_ids % ID_LEN or n_digests % ID_LEN:
            return None
        try:
            snapshot_id, root = body[pos : pos + n_names].decode().split("\n")
        except ValueError:
            return None
        pos += n_names
        return cls(snapshot_id, root, page_size, body[pos : pos + n_ids],
                   body[pos + n_ids : pos + n_ids + n_digests], block_pages)


def load(path: Path) -> BlockDigests | None:
    try:
        return BlockDigests.decode(path.read_bytes())
    except OSError:
        return None


def save(path: Path, digests: BlockDigests) -> bool:
    """Write the cache file whole (temporary file, then rename); False if it could not be written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(digests.encode())
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
