"""Page-level comparison of two SQLite states, so a diff costs what changed.

A state is a file (:class:`FileImage`: in WAL mode, the main file overlaid with
the WAL's committed frames) or a vault restore point (``vault_vfs.VirtualImage``:
chunk ids per page, pages fetched only when read, served to SQLite by the
read-only VFS in :mod:`.vault_vfs`).

Which pages differ is found by comparing two files block by block (a memory
comparison is cheaper than hashing both), by comparing chunk ids for vault
states, and by hashing a file's pages the vault's way to compare it with a vault
state. Which b-tree owns each page is
found by walking only the *interior* pages of every b-tree from its root (about
1% of a table's pages); leaf pages are read only where they differ, and then
only their first and last cell, for the rowid range they hold.

Why skipping is exact. Call a leaf *common* when it is a leaf of the same table
in both states with identical bytes. Its rows are in both states unchanged, and
since keys are unique their keys occur nowhere else in either state. So the
difference of the two tables equals the difference of their rows restricted to
any key ranges that cover every non-common leaf of both states. A page that is
identical but owned differently (a freed leaf keeps its old bytes) is not
common, which is why ownership is taken from the b-tree walk and not guessed.

Overflow pages hang off leaf cells and are not reachable from interior pages.
Every differing page is therefore checked to be *accounted for* (a b-tree page,
a freelist page, a pointer-map page, the lock-byte page); when one is not, the
caller is asked who owns it (``dbstat`` knows, down to the leaf whose cell it
hangs off), and that leaf is treated as differing.

POSIX-lock trap: the descriptors opened here must be opened before any SQLite
connection to the same files and closed after the last one closes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Callable

from . import wal, walindex
from .btree import PageMapError, accounted_pages, leaf_rowid_range, walk
from .files import side_file

BLOCK_PAGES = 256
SUB_PAGES = 16
CACHE_PAGES = 16384  # differing pages kept in memory from the comparison, per file


@dataclass
class FileImage:
    """Read-only descriptors on a database file (and its WAL) and the facts of its header.

    In WAL mode the state is the main file overlaid with the WAL's frames up to
    the last commit the wal-index records; :meth:`current` tells afterwards
    whether any commit happened since (then the pages read are not the state a
    later read transaction sees, and the caller must not trust them).
    """

    path: str
    fd: int
    page_size: int
    page_count: int
    usable: int
    header: bytes
    file_pages: int  # pages present in the main file
    cache: dict[int, bytes] = field(default_factory=dict)
    overlay: dict[int, int] = field(default_factory=dict)  # page -> WAL frame
    wal_fd: int = -1
    shm_fd: int = -1
    stamp: tuple | None = None

    @classmethod
    def open(cls, path: str) -> "FileImage | None":
        """None when the file's pages cannot be read as its state (a hot journal, an unreadable WAL)."""
        try:
            if os.path.getsize(side_file(path, "-journal")) > 0:
                return None
        except OSError:
            pass
        fd = os.open(path, os.O_RDONLY)
        img = None
        try:
            header = os.pread(fd, 100, 0)
            if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
                os.close(fd)
                return None
            ps = struct.unpack_from(">H", header, 16)[0]
            ps = 65536 if ps == 1 else ps
            size = os.fstat(fd).st_size
            count = struct.unpack_from(">I", header, 28)[0]
            valid = struct.unpack_from(">I", header, 24)[0] == struct.unpack_from(">I", header, 92)[0]
            if not valid or count == 0:
                count = size // ps
            img = cls(path, fd, ps, min(count, size // ps), ps - header[20], header, size // ps)
            wal_path = side_file(path, "-wal")
            if os.path.exists(wal_path) and os.path.getsize(wal_path) > 0 and not img._read_wal():
                img.close()
                return None
            return img
        except BaseException:
            if img is not None:
                img.close()
            else:
                os.close(fd)
            raise

    def _read_wal(self) -> bool:
        try:
            self.wal_fd = os.open(side_file(self.path, "-wal"), os.O_RDONLY)
            self.shm_fd = os.open(side_file(self.path, "-shm"), os.O_RDONLY)
        except FileNotFoundError:
            return False
        idx = walindex.read(self.shm_fd)
        if idx is None:
            return False
        if idx.mx_frame:
            head = wal.read_header(self.wal_fd)
            if head is None or head.salts != idx.salts or head.page_size != self.page_size:
                return False
            commits = walindex.scan_headers(self.wal_fd, head, idx.mx_frame)
            if not commits or commits[-1].frame != idx.mx_frame:
                return False
            self.overlay, self.page_count = wal.page_map(commits), commits[-1].db_pages
        self.stamp = (idx.change, idx.mx_frame, idx.salts)
        self.header = self.page(1)[:100]
        self.usable = self.page_size - self.header[20]
        return True

    def current(self) -> bool:
        """No commit since the WAL was read (always true without a WAL)."""
        if self.stamp is None:
            return True
        idx = walindex.read(self.shm_fd)
        return idx is not None and (idx.change, idx.mx_frame, idx.salts) == self.stamp

    def page(self, n: int) -> bytes:
        if not 1 <= n <= self.page_count:
            raise PageMapError(f"page {n} is outside {self.path}")
        hit = self.cache.get(n)
        if hit is not None:
            return hit
        frame = self.overlay.get(n)
        if frame is not None:
            return wal.read_frame_page(self.wal_fd, frame, self.page_size)
        data = os.pread(self.fd, self.page_size, (n - 1) * self.page_size)
        return data + bytes(self.page_size - len(data))

    def close(self) -> None:
        for name in ("wal_fd", "shm_fd", "fd"):
            if getattr(self, name) >= 0:
                os.close(getattr(self, name))
                setattr(self, name, -1)

    def prefetch(self, pages) -> None:
        """Nothing to do: the operating system's cache serves file pages."""

    def loose(self) -> set[int]:
        """Pages whose bytes are not the main file's: WAL frames, or beyond its end."""
        return set(self.overlay) | set(range(self.file_pages + 1, self.page_count + 1))

    def ids(self, id_of: Callable[[bytes], bytes]) -> list[bytes]:
        """Every page's chunk id, hashing the pages (to compare them with a vault state)."""
        ps, out, end = self.page_size, [], min(self.file_pages, self.page_count)
        for start in range(0, end * ps, BLOCK_PAGES * ps):
            block = os.pread(self.fd, min(BLOCK_PAGES * ps, end * ps - start), start)
            out.extend(id_of(block[i : i + ps]) for i in range(0, len(block), ps))
        out.extend(id_of(self.page(n)) for n in range(end + 1, self.page_count + 1))
        for n in self.overlay:
            if n <= end:
                out[n - 1] = id_of(self.page(n))
        return out


def differing_pages(a, b) -> set[int]:
    """Page numbers whose bytes differ, including pages only one file has.

    Equal blocks cost one memory comparison; differing blocks are narrowed to
    sub-blocks, then pages. The differing pages' bytes are kept for the leaf
    reads that follow.
    """
    if a.page_size != b.page_size:
        raise PageMapError("the two files have different page sizes")
    ps = a.page_size
    common = min(a.page_count, b.page_count)
    out = set(range(common + 1, max(a.page_count, b.page_count) + 1))
    virtual = next((img for img in (a, b) if not isinstance(img, FileImage)), None)  # a vault_vfs.VirtualImage
    if virtual is not None:  # compare chunk ids (a file's pages are hashed the vault's way)
        ia, ib = a.ids(virtual.id_of), b.ids(virtual.id_of)
        out.update(i + 1 for i in range(common) if ia[i] != ib[i])
        return out
    step, sub = BLOCK_PAGES * ps, SUB_PAGES * ps
    loose = a.loose() | b.loose()  # compared page by page below
    raw_end = min(common, a.file_pages, b.file_pages)
    for start in range(0, raw_end * ps, step):
        n = min(step, raw_end * ps - start)
        x = os.pread(a.fd, n, start)
        y = os.pread(b.fd, n, start)
        if x == y:
            continue
        for s in range(0, n, sub):
            xs, ys = x[s : s + sub], y[s : s + sub]
            if xs == ys:
                continue
            for i in range(0, len(xs), ps):
                px, py = xs[i : i + ps], ys[i : i + ps]
                pno = (start + s + i) // ps + 1
                if px != py and pno not in loose:
                    out.add(pno)
                    if len(a.cache) < CACHE_PAGES:
                        a.cache[pno], b.cache[pno] = px, py
    for pno in sorted(p for p in loose if p <= common):
        px, py = a.page(pno), b.page(pno)
        if px != py:
            out.add(pno)
            if len(a.cache) < CACHE_PAGES:
                a.cache[pno], b.cache[pno] = px, py
    return out


@dataclass
class TablePlan:
    """How to compare one table: skip it, compare rows in rowid ranges, or compare it whole."""

    mode: str  # "skip" | "ranges" | "full"
    ranges: list[tuple[int, int]] = field(default_factory=list)
    pages_differing: int = 0
    pages_total: int = 0


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def plan_tables(
    a: FileImage,
    b: FileImage,
    roots_a: dict[str, int],
    roots_b: dict[str, int],
    tables: dict[str, bool],
    owners_of: Callable[[str, set[int]], dict[int, tuple[str, int | None]]],
    max_fraction: float = 0.5,
) -> dict[str, TablePlan]:
    """Plan every table in ``tables`` (name -> is a rowid table present in both states).

    ``roots_*`` lists every b-tree (tables and indexes, sqlite_schema as page 1) of
    each state; ``owners_of(side, pages)`` names the b-tree owning each overflow
    page and the leaf page whose cell it hangs off (None when unknown).
    """
    differ = differing_pages(a, b)
    trees_a = {name: walk(a, root) for name, root in roots_a.items()}
    trees_b = {name: walk(b, root) for name, root in roots_b.items()}
    whole: set[str] = set()
    hanging: dict[str, set[int]] = {}  # table -> leaves whose overflow chains differ
    for side, img, trees in (("a", a, trees_a), ("b", b, trees_b)):
        stray = {p for p in differ if p <= img.page_count} - accounted_pages(img, list(trees.values()))
        if not stray:
            continue
        owners = owners_of(side, stray)
        if set(owners) != stray:
            raise PageMapError(f"pages of {img.path} belong to no b-tree")
        for name, leaf in owners.values():
            if leaf is None:
                whole.add(name)
            else:
                hanging.setdefault(name, set()).add(leaf)
    plans: dict[str, TablePlan] = {}
    for name, rowid_table in tables.items():
        ta, tb = trees_a.get(name), trees_b.get(name)
        if ta is None or tb is None or name in whole:
            plans[name] = TablePlan("full")
            continue
        pa, pb = ta.pages(), tb.pages()
        total = len(pa | pb)
        if pa == pb and not (pa & differ) and name not in hanging:
            plans[name] = TablePlan("skip", pages_total=total)
            continue
        la, lb = set(ta.leaves), set(tb.leaves)
        loose = (la | lb) - {p for p in la & lb if p not in differ} | hanging.get(name, set())
        if not rowid_table or len(loose) > max_fraction * max(len(la), len(lb), 1):
            plans[name] = TablePlan("full", pages_differing=len(loose), pages_total=total)
            a.prefetch(ta.leaves)  # about to be scanned whole
            b.prefetch(tb.leaves)
            continue
        a.prefetch(loose & la)
        b.prefetch(loose & lb)
        ranges = []
        for p in loose:
            for img, leaves in ((a, la), (b, lb)):
                if p in leaves:
                    r = leaf_rowid_range(img, p)
                    if r:
                        ranges.append(r)
        merged = _merge(ranges)
        plans[name] = TablePlan("ranges" if merged else "skip", merged, len(loose), total)
    return plans
