"""The wal-index header in the -shm file (sqlite.org/walformat.html).

SQLite keeps two copies of a 48-byte header at the start of -shm, in host byte
order; a reader trusts them when both copies are equal and the checksum holds.
``mxFrame`` is the last frame of the last commit SQLite itself validated, and
``nPage`` the database size in pages after it. Frames up to ``mxFrame`` need no
checksum walk of ours: that makes reading a large WAL a matter of frame headers.

The descriptor used here must be opened before, and closed after, any SQLite
connection of this process to the same database (closing a descriptor drops
the process's POSIX locks on that file).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from . import wal

_HDR = struct.Struct("=IIIBBHIIIIIIII")  # 48 bytes, native order
assert _HDR.size == 48


@dataclass(frozen=True)
class WalIndexHeader:
    version: int
    change: int
    page_size: int
    mx_frame: int
    n_page: int
    salts: tuple[int, int]


def _checksum(data: bytes) -> tuple[int, int]:
    n = len(data) // 4
    words = struct.unpack(f"={n}I", data)
    s1 = s2 = 0
    for i in range(0, n, 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def read(fd: int, attempts: int = 50) -> WalIndexHeader | None:
    """The header, or None when -shm holds no initialised, consistent header."""
    for _ in range(attempts):
        raw = os.pread(fd, 96, 0)
        if len(raw) < 96:
            return None
        if raw[:48] != raw[48:96]:
            continue  # a writer is updating it; read again
        (version, _unused, change, is_init, big_cksum, sz, mx, npage,
         _fc1, _fc2, salt1, salt2, ck1, ck2) = _HDR.unpack(raw[:48])
        if not is_init:
            return None
        if _checksum(raw[:40]) != (ck1, ck2):  # native byte order
            continue
        page_size = 65536 if sz == 1 else (sz & 0xFE00) + ((sz & 0x0001) << 16)
        salts = struct.unpack(">II", raw[32:40])  # copied byte for byte from the WAL header
        return WalIndexHeader(version, change, page_size, mx, npage, salts)
    return None


def scan_headers(wal_fd: int, header: "wal.WalHeader", mx_frame: int) -> list["wal.Commit"]:
    """Commits in frames 1..mx_frame, from frame headers only (SQLite validated these frames)."""
    ps = header.page_size
    fsize = wal.FRAME_HEADER + ps
    commits: list[wal.Commit] = []
    pending: dict[int, int] = {}
    per_read = max(1, (4 << 20) // fsize)
    frame = 1
    while frame <= mx_frame:
        count = min(per_read, mx_frame - frame + 1)
        raw = os.pread(wal_fd, fsize * count, wal.frame_offset(frame, ps))
        got = len(raw) // fsize
        for i in range(got):
            pgno, size, s1, s2 = struct.unpack_from(">4I", raw, i * fsize)
            if (s1, s2) != header.salts:
                return commits
            pending[pgno] = frame + i
            if size:
                commits.append(wal.Commit(frame=frame + i, db_pages=size, pages=pending))
                pending = {}
        if got < count:
            break
        frame += count
    return commits
