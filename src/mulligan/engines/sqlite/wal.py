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
import time
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


# ---- the wal-index header in -shm (sqlite.org/walformat.html#the_wal_index_file_format) ----
#
# The first 136 bytes of the -shm file: two copies of a 48-byte header that the
# last writer stored after each commit, then the checkpoint information. Values
# are in the machine's byte order. ``mx_frame`` is the last commit frame SQLite
# itself validated (salts and checksum chain), so a reader that trusts it never
# needs to recompute checksums: that is what keeps continuous capture cheap.

_SHM_HDR = struct.Struct("=IIIBBHII2I2I2I")
SHM_READ = 136


@dataclass
class IndexHeader:
    change: int
    page_size: int
    mx_frame: int
    n_page: int
    salt1: int
    salt2: int
    n_backfill: int
    read_marks: tuple

    @property
    def salts(self) -> tuple[int, int]:
        return (self.salt1, self.salt2)


def read_index_header(fd: int, tries: int = 12) -> IndexHeader | None:
    """The wal-index header read through ``fd`` (an -shm descriptor kept open), or
    None when it is not initialised or keeps changing under us.

    A writer updates the two copies one after the other; if it is descheduled in between (a
    busy machine), every read in a tight loop sees them differ. After four quick tries the
    reads wait 1, 2, 4 ... ms (under 0.3 s in all), as SQLite's own readers back off."""
    for attempt in range(tries):
        if attempt >= 4:
            time.sleep(0.001 * (1 << (attempt - 4)))
        raw = os.pread(fd, SHM_READ, 0)
        if len(raw) < SHM_READ:
            return None
        a, b = raw[:48], raw[48:96]
        if a != b:
            continue  # a writer is between the two copies: read again
        (version, _unused, change, is_init, _big, szpage, mx, npage, _fc1, _fc2, s1, s2, c1, c2) = _SHM_HDR.unpack(a)
        if not is_init or version != 3007000:
            return None
        if _checksum(a[:40], 0, 0, big_endian=(struct.pack("=I", 1) == b"\x00\x00\x00\x01")) != (c1, c2):
            continue
        s1, s2 = struct.unpack(">2I", a[32:40])  # copied byte for byte from the WAL header (big-endian)
        info = struct.unpack("=6I", raw[96:120])
        ps = 65536 if szpage == 1 else (szpage if szpage >= 512 else szpage << 16)
        return IndexHeader(change, ps, mx, npage, s1, s2, info[0], info[1:])
    return None


@dataclass
class Frames:
    """Committed frames read past a position: one entry per commit."""

    commits: list[tuple[int, int, dict[int, bytes]]]  # (commit frame, db size in pages, {pgno: page})
    last_frame: int
    bad: bool = False  # a frame's salts did not match, or the file ended: the WAL moved; read again
    short: bool = False  # the file ended before ``upto``: restarted (truncated), or damaged
    more: bool = False  # stopped at ``max_bytes``: committed frames past ``last_frame`` remain
    # Stopped inside one commit larger than ``max_bytes``: its pages read so far, the last frame
    # read, and (with ``where``) the frame of each. The next read starts after ``part_end``;
    # the commit that read ends with is this one, whose later pages win.
    part: dict[int, bytes] | None = None
    part_end: int = 0
    part_at: dict[int, int] = field(default_factory=dict)


def read_commits(fd: int, after: int, upto: int, page_size: int, salts: tuple[int, int],
                 chunk_frames: int = 512, where: dict[int, int] | None = None,
                 max_bytes: int | None = None) -> Frames:
    """Read frames ``after+1 .. upto`` (``upto`` a commit frame SQLite validated) and
    group them into commits; the latest version of a page inside one commit wins.
    ``where`` (if given) learns the frame holding each page of every commit read.

    With ``max_bytes``, stop once about that many bytes of pages are held: at the last whole
    commit read, or, when not even one commit fits, inside it (``part``), so that a commit of
    gigabytes (a migration, a VACUUM) is read in bounded pieces."""
    fsize = FRAME_HEADER + page_size
    out: list[tuple[int, int, dict[int, bytes]]] = []
    pending: dict[int, bytes] = {}
    pending_at: dict[int, int] = {}
    frame = after + 1
    last = after
    held = 0
    if max_bytes is not None:
        chunk_frames = max(1, min(chunk_frames, max_bytes // fsize))
    while frame <= upto:
        n = min(chunk_frames, upto - frame + 1)
        raw = os.pread(fd, fsize * n, frame_offset(frame, page_size))
        if len(raw) < fsize * n:
            return Frames(out, last, bad=True, short=True)
        for i in range(n):
            base = i * fsize
            pgno, size, s1, s2 = struct.unpack_from(">4I", raw, base)
            if (s1, s2) != salts or pgno == 0:
                return Frames(out, last, bad=True)
            pending[pgno] = raw[base + FRAME_HEADER: base + fsize]
            pending_at[pgno] = frame + i
            if size:
                out.append((frame + i, size, pending))
                pending = {}
                last = frame + i
                if where is not None:
                    where.update(pending_at)
                pending_at = {}
        frame += n
        held += fsize * n
        if max_bytes is not None and held >= max_bytes and frame <= upto:
            if out:  # whole commits only; the frames read past the last one are read again next time
                return Frames(out, last, more=True)
            return Frames([], last, more=True, part=pending, part_end=frame - 1, part_at=pending_at)
    return Frames(out, last)


def scan_commits(fd: int, after: int, upto: int, page_size: int, salts: tuple[int, int],
                 chunk_frames: int = 512) -> Frames:
    """``read_commits`` without the pages: per commit, {pgno: frame of its version in that
    commit}, for reading the pages later one by one (memory: the frame numbers only)."""
    fsize = FRAME_HEADER + page_size
    out: list[tuple[int, int, dict[int, int]]] = []
    pending: dict[int, int] = {}
    frame = after + 1
    last = after
    while frame <= upto:
        n = min(chunk_frames, upto - frame + 1)
        raw = os.pread(fd, fsize * n, frame_offset(frame, page_size))
        if len(raw) < fsize * n:
            return Frames(out, last, bad=True, short=True)
        for i in range(n):
            pgno, size, s1, s2 = struct.unpack_from(">4I", raw, i * fsize)
            if (s1, s2) != salts or pgno == 0:
                return Frames(out, last, bad=True)
            pending[pgno] = frame + i
            if size:
                out.append((frame + i, size, pending))
                pending = {}
                last = frame + i
        frame += n
    return Frames(out, last)  # type: ignore[arg-type]

