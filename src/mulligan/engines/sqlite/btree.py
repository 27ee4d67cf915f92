"""Reading SQLite's b-tree page format: which pages a b-tree owns, a leaf's rowid range.

Only what the page-level comparison (:mod:`.pages`) needs, from the file format
(https://www.sqlite.org/fileformat2.html): a b-tree is walked through its
interior pages alone, a table leaf's first and last cell give its rowid range,
and the freelist, pointer-map and lock-byte pages are named without reading any
leaf. Images are :class:`.pages.FileImage` or :class:`.vault_vfs.VirtualImage`
(``page(n)``, ``header``, ``usable``, ``page_size``, ``page_count``, ``path``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

INTERIOR_TABLE, INTERIOR_INDEX, LEAF_TABLE, LEAF_INDEX = 0x05, 0x02, 0x0D, 0x0A
LOCK_BYTE_OFFSET = 1073741824
_u32 = struct.Struct(">I").unpack_from


class PageMapError(Exception):
    """The page structure is not what the walk expects; compare rows instead."""


@dataclass
class Tree:
    """The pages of one b-tree, found from its interior pages alone."""

    interior: list[int] = field(default_factory=list)
    leaves: list[int] = field(default_factory=list)

    def pages(self) -> set[int]:
        return set(self.interior) | set(self.leaves)


def _header_offset(n: int) -> int:
    return 100 if n == 1 else 0


def walk(img, root: int) -> Tree:
    """Every page of the b-tree at ``root``, reading interior pages only.

    All leaves of a SQLite b-tree are at the same depth, so one look at the
    first page of a level says whether the whole level is leaves.
    """
    tree = Tree()
    level = [root]
    seen: set[int] = set()
    while level:
        h = _header_offset(level[0])
        kind = img.page(level[0])[h]
        if kind in (LEAF_TABLE, LEAF_INDEX):
            tree.leaves = level
            break
        if kind not in (INTERIOR_TABLE, INTERIOR_INDEX):
            raise PageMapError(f"page {level[0]} of {img.path} is not a b-tree page")
        below: list[int] = []
        for n in level:
            if n in seen:
                raise PageMapError(f"b-tree page {n} of {img.path} is reached twice")
            seen.add(n)
            page = img.page(n)
            h = _header_offset(n)
            if page[h] != kind:
                raise PageMapError(f"the b-tree at page {root} of {img.path} is not balanced")
            ncells = struct.unpack_from(">H", page, h + 3)[0]
            cells = struct.unpack_from(f">{ncells}H", page, h + 12)
            below.extend([_u32(page, o)[0] for o in cells])
            below.append(_u32(page, h + 8)[0])
        tree.interior.extend(level)
        level = below
    if len(set(tree.leaves)) != len(tree.leaves) or set(tree.leaves) & seen:
        raise PageMapError(f"the b-tree at page {root} of {img.path} reaches a page twice")
    if any(not 1 <= n <= img.page_count for n in tree.leaves):
        raise PageMapError(f"the b-tree at page {root} of {img.path} points outside the file")
    return tree


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    v = 0
    for k in range(8):
        c = buf[i + k]
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1
    v = (v << 8) | buf[i + 8]
    return v, i + 9


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def leaf_rowid_range(img, n: int) -> tuple[int, int] | None:
    """Smallest and largest rowid on a table leaf page (None when it is empty)."""
    page = img.page(n)
    h = _header_offset(n)
    if page[h] != LEAF_TABLE:
        raise PageMapError(f"page {n} of {img.path} is not a table leaf")
    ncells = struct.unpack_from(">H", page, h + 3)[0]
    if ncells == 0:
        return None

    def rowid(i: int) -> int:
        off = struct.unpack_from(">H", page, h + 8 + 2 * i)[0]
        _, j = _varint(page, off)
        return _signed(_varint(page, j)[0])

    return rowid(0), rowid(ncells - 1)


def accounted_pages(img, trees: list[Tree]) -> set[int]:
    """Pages whose role is known without reading leaf cells: everything but overflow pages."""
    out: set[int] = set()
    for t in trees:
        out |= t.pages()
    trunk = struct.unpack_from(">I", img.header, 32)[0]
    seen = 0
    while trunk:
        if trunk in out or seen > img.page_count:
            raise PageMapError(f"the freelist of {img.path} is damaged")
        seen += 1
        out.add(trunk)
        page = img.page(trunk)
        nxt, count = struct.unpack_from(">II", page, 0)
        out.update(struct.unpack_from(f">{count}I", page, 8))
        trunk = nxt
    if struct.unpack_from(">I", img.header, 52)[0]:  # auto-vacuum: pointer-map pages
        step = img.usable // 5 + 1
        out.update(range(2, img.page_count + 1, step))
    out.add(LOCK_BYTE_OFFSET // img.page_size + 1)
    return out
