"""Reading a SQLite write-ahead log: header, frames, the checksum chain.

Format (sqlite.org/fileformat2.html#walformat): a 32-byte header (magic,
version, page size, checkpoint sequence, salt-1, salt-2, checksum-1,
checksum-2), then frames of a 24-byte header (page number, database size in
pages after commit or 0, salt-1, salt-2, checksum-1, checksum-2) and one page.
A frame is valid when its salts equal the header's and the running checksum
over every earlier frame and this one matches; a commit frame has a non-zero
size. Only frames up to the last valid commit frame are part of the database.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

WAL_HEADER = 32
FRAME_HEADER = 24
MAGIC_LE = 0x377F0682
MAGIC_BE = 0x377F0683


@dataclass
class WalHeader:
    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    cksum1: int
    cksum2: int

    @property
    def big_endian(self) -> bool:
        return self.magic == MAGIC_BE

    @property
    def salts(self) -> tuple[int, int]:
        return (self.salt1, self.salt2)


@dataclass
class Commit:
    """One committed transaction: its last frame and the pages it wrote."""

    frame: int  # 1-based index of the commit frame
    db_pages: int  # database size in pages after this commit
    pages: dict[int, int] = field(default_factory=dict)  # page number -> frame index (latest in this commit)


@dataclass
class WalScan:
    header: WalHeader | None
    commits: list[Commit]
    # Where scanning stopped, so a later scan can continue from there.
    next_frame: int = 1
    cksum: tuple[int, int] = (0, 0)

    @property
    def last_commit_frame(self) -> int:
        return self.commits[-1].frame if self.commits else 0


def _checksum(data: bytes, s1: int, s2: int, big_endian: bool) -> tuple[int, int]:
    n = len(data) // 4
    words = struct.unpack((">" if big_endian else "<") + f"{n}I", data)
    for i in range(0, n, 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def read_header(fd: int) -> WalHeader | None:
    raw = os.pread(fd, WAL_HEADER, 0)
    if len(raw) < WAL_HEADER:
        return None
    fields = struct.unpack(">8I", raw)
    if fields[0] not in (MAGIC_LE, MAGIC_BE):
        return None
    h = WalHeader(*fields)
    if _checksum(raw[:24], 0, 0, h.big_endian) != (h.cksum1, h.cksum2):
        return None
    return h


def frame_offset(frame: int, page_size: int) -> int:
    return WAL_HEADER + (frame - 1) * (FRAME_HEADER + page_size)


def scan(fd: int, resume: WalScan | None = None, chunk_frames: int = 256) -> WalScan:
    """Find every valid commit in the WAL open at ``fd``.

    With ``resume`` (an earlier scan of the same WAL generation), continue after
    the frames it covered; the header's salts must still match, else the WAL
    was restarted and the scan starts over.
    """
    header = read_header(fd)
    if header is None:
        return WalScan(None, [])
    if resume is not None and resume.header is not None and resume.header.salts == header.salts:
        commits: list[Commit] = []
        frame = resume.next_frame
        s1, s2 = resume.cksum
    else:
        commits = []
        frame = 1
        s1, s2 = header.cksum1, header.cksum2
    ps = header.page_size
    fsize = FRAME_HEADER + ps
    pending: dict[int, int] = {}
    good_frame, good_ck = frame, (s1, s2)
    be = header.big_endian
    while True:
        off = frame_offset(frame, ps)
        raw = os.pread(fd, fsize * chunk_frames, off)
        if len(raw) < fsize:
            break
        stop = False
        for i in range(len(raw) // fsize):
            fr = raw[i * fsize : (i + 1) * fsize]
            pgno, size, salt1, salt2, c1, c2 = struct.unpack(">6I", fr[:FRAME_HEADER])
            if (salt1, salt2) != header.salts or pgno == 0:
                stop = True
                break
            s1, s2 = _checksum(fr[:8], s1, s2, be)
            s1, s2 = _checksum(fr[FRAME_HEADER:], s1, s2, be)
            if (s1, s2) != (c1, c2):
                stop = True
                break
            pending[pgno] = frame
            if size:
                commits.append(Commit(frame=frame, db_pages=size, pages=pending))
                pending = {}
                good_frame, good_ck = frame + 1, (s1, s2)
            frame += 1
        if stop or len(raw) < fsize * chunk_frames:
            break
    return WalScan(header, commits, next_frame=good_frame, cksum=good_ck)


def page_map(commits: list[Commit]) -> dict[int, int]:
    """Latest frame of each page over the given commits."""
    out: dict[int, int] = {}
    for c in commits:
        out.update(c.pages)
    return out


def read_frame_page(fd: int, frame: int, page_size: int) -> bytes:
    return os.pread(fd, page_size, frame_offset(frame, page_size) + FRAME_HEADER)
