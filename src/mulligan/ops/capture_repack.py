"""Repacking a busy capture: the current pages, scattered over flush packs, stored again in order.

Each flush stores the pages its commits wrote in one small pack. After a while of updates
spread over a database, the current version of most pages sits in a different flush pack,
and restoring the latest state decompresses a 64 KiB block of some pack for nearly every
page (docs/capture.md). Once that would cost about as much as the database again
(``repack_after`` times its size, and at least ``repack_min_mib``; 0 turns repacking off),
estimated as the lesser of the page bytes flushes stored since the last pass and a block for
each page they moved, and ``repack_interval`` after the last pass began (or the watcher
started), the watcher reads the current version of every page a flush stored since then, in
page order, a step of ``STEP_PAGES`` at each flush (capture goes on between steps), and
stores them again in large packs, marked as repacked; when the pass is done it starts a new
base. The chunk index reads a chunk stored twice from the repacked copy
(``packs.pack_rank``), so restores of the new base, and of every commit after it, read few
packs in page order.

A page is read from where the capture saw it last (its WAL frame, or the main file) and
stored only if its hash is the chunk id the capture holds for it: a page rewritten since,
or a WAL restarted under the read, leaves that page where it was; nothing else depends on
the repack, which only adds copies (prune keeps every pack holding a referenced chunk).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..vault import Vault
from ..vault.packs import BLOCK_TARGET, T_REPACKED, PackWriter


@dataclass
class RepackStats:
    passes: int = 0
    pages: int = 0
    bytes: int = 0
    skipped: int = 0  # pages changed since the capture saw them: left where they were


class Repacker:
    STEP_PAGES = 1024  # pages read and hashed per step: 4 MiB at 4 KiB, about 10 ms

    def __init__(self, vault: Vault, ratio: float, floor: int = 64 << 20, interval: float = 60.0):
        self.vault = vault
        self.ratio = ratio
        self.floor = floor  # below this much stored, scattered pages cost a restore little
        self.interval = interval  # at least this long between the starts of two passes
        self.last_begin = time.monotonic()  # a watcher starts from a base read in full
        self.moved = bytearray()  # 1 for each page whose current version a flush stored
        self.moved_count = 0
        self.flushed = 0  # page bytes flushes stored since the last pass began
        self.cursor: int | None = None  # next page number to look at while a pass runs
        self.writer: PackWriter | None = None
        self.current = RepackStats()  # the pass running (or the last one)
        self.stats = RepackStats()  # every pass this watcher ended

    # ---- bookkeeping at each commit and flush ----------------------------------------------
    def note(self, db_pages: int, pgnos) -> None:
        """A commit set these pages (and the database now has ``db_pages`` pages)."""
        moved = self.moved
        if len(moved) < db_pages:
            moved.extend(bytes(db_pages - len(moved)))
        elif len(moved) > db_pages:
            self.moved_count -= moved.count(1, db_pages)
            del moved[db_pages:]
        for p in pgnos:
            if p <= db_pages and not moved[p - 1]:
                moved[p - 1] = 1
                self.moved_count += 1

    def due(self, db_bytes: int, now: float | None = None) -> bool:
        """Whether a restore of the latest state would now decompress, beyond the database itself,
        about ``ratio`` times its size: at most what flushes stored since the last pass, and at
        most a block for each page they moved (a page rewritten again and again costs one)."""
        extra = min(self.flushed, self.moved_count * BLOCK_TARGET)
        now = time.monotonic() if now is None else now
        return (self.ratio > 0 and self.cursor is None and db_bytes > 0 and now - self.last_begin >= self.interval
                and extra >= max(self.ratio * db_bytes, self.floor))

    def begin(self) -> None:
        self.last_begin = time.monotonic()
        self.flushed = 0
        self.cursor = 1
        self.current = RepackStats(passes=1)
        # 4 MiB packs: what a pass holds in memory stays small (the index prefers repacked copies
        # by their type, not by the size of their pack)
        self.writer = PackWriter(self.vault.storage, target_size=4 << 20, codec=self.vault.codec)

    @property
    def running(self) -> bool:
        return self.cursor is not None

    # ---- a step of a pass -----------------------------------------------------------------
    def step(self, ids: list[bytes], read) -> bool:
        """Store the next pages (at most STEP_PAGES) whose current version a flush stored.
        ``read(pgnos)`` returns their content as captured (unverified). True once the pass is
        done: everything it stored is in the vault and its index."""
        assert self.cursor is not None and self.writer is not None
        moved, n = self.moved, min(len(self.moved), len(ids))
        pgnos: list[int] = []
        p = self.cursor
        while p <= n and len(pgnos) < self.STEP_PAGES:
            nxt = moved.find(1, p - 1, n)
            if nxt < 0:
                p = n + 1
                break
            pgnos.append(nxt + 1)
            p = nxt + 2
        self.cursor = p
        if pgnos:
            chunk_id = self.vault.codec.chunk_id
            items = []
            for pgno, data in zip(pgnos, read(pgnos)):
                cid = ids[pgno - 1]
                if cid and chunk_id(data) == cid:
                    items.append((cid, data))
                    moved[pgno - 1] = 0
                    self.moved_count -= 1
            self.current.pages += len(items)
            self.current.skipped += len(pgnos) - len(items)
            self.writer.add_raw_many(items, T_REPACKED)
        if self.cursor <= n:
            return False
        self.finish()
        return True

    def settle(self) -> None:
        """Store what the pass holds so far and wait for it (the pass goes on afterwards): before
        watch steps aside for a prune, nothing of ours may still be on its way to the vault."""
        if self.writer is not None:
            self.writer.flush()

    def finish(self) -> None:
        """Store what the pass holds (its last pack and index) and end it. The watcher's own
        index is not told: it deduplicates by chunk id, which the copies do not change, and
        its memory must not grow with every pass."""
        w, self.writer, self.cursor = self.writer, None, None
        if w is None:
            return
        w.flush()
        c, t = self.current, self.stats
        c.bytes = w.bytes_written
        t.passes, t.pages, t.bytes, t.skipped = (t.passes + 1, t.pages + c.pages, t.bytes + c.bytes,
                                                 t.skipped + c.skipped)
