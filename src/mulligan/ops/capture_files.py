"""What ``watch`` does about the files under a capture (a mixin of :class:`ops.capture.TargetCapture`).

Kept apart from the polling and storing in :mod:`ops.capture`: the path naming another
file (``mv`` over it while the application holds the old one), ``-wal``/``-shm`` replaced
or removed, the main file edited outside SQLite's WAL (sampled pages compared with the
captured state), and the response common to all of them: read the whole state again and,
when it is not the captured one, start a new base and look for a rollback.

Plain I/O here touches only files this process holds no SQLite lock on (another inode at
the path) or goes through the tailer's descriptors, which stay open for its life.
"""

from __future__ import annotations

import os
import tempfile
import time

import apsw

from ..engines.sqlite.capture import Tailer, plain_pages
from ..engines.sqlite.diff import diff_files
from ..errors import MulliganError
from ..timeparse import iso
from . import capture_store as cs
from . import detect
from . import incidents as inc_mod


# A file moved over the path is compared row by row with the captured state up to this size
# (two temporary copies); a larger one different in any page is taken for a rollback.
SAME_ROWS_MAX = 256 << 20


def _rollback_mode(page1: bytes) -> bytes:
    """Page 1 with the header's WAL marks cleared: a copy SQLite opens without a -wal."""
    return page1[:18] + b"\x01\x01" + page1[20:]


class FilesUnderCapture:
    """Methods of TargetCapture that watch the database's files (see the module docstring)."""

    # ---- files under us --------------------------------------------------------------------
    def _check_files(self, sample: bool = True) -> bool:
        """Path replaced, -wal/-shm replaced, main file edited outside SQLite. True if handled."""
        t = self.tailer
        replaced = t.replaced()
        if self._swapped is not None:
            if not t.others_attached():
                self._switch_to_path()
                return True
            return False
        if "db" in replaced:
            self._on_swap()
            if not t.others_attached():
                # Nobody else holds the old file: let go of it now, emptying its -wal first. The
                # -wal and -shm beside the path are still the old file's, and an application
                # opening the file now at the path would read their frames as its own.
                self._switch_to_path()
                return True
            return False
        if replaced:
            self.reopen(f"{', '.join(replaced)} beside the database was replaced or removed")
            return True
        if sample and self._main_mismatch():
            self.reconcile("the main database file changed outside SQLite's WAL")
            return True
        return False

    def _main_mismatch(self, in_restart: bool = False) -> bool:
        t = self.tailer
        h = t.last
        nb = h.n_backfill if h is not None else 0
        n = len(self.ids)
        if not n:
            return False
        on_disk = t.db_stat()[0] // t.page_size
        n = min(n, on_disk)  # pages past the main file's end live in the WAL
        if n < 1:
            return False
        cands = [1] + [self._rng.randint(1, n) for _ in range(self.o.sample_pages)]
        pgs = [p for p in dict.fromkeys(cands) if self.wal_pages.get(p, 0) <= nb]
        if not pgs:
            return False
        for attempt in range(3):
            pages = t.main_file_pages(pgs)
            bad = [p for p, data in pages.items()
                   if p <= len(self.ids) and self.vault.codec.chunk_id(data) != self.ids[p - 1]]
            if bad and in_restart:
                # The new WAL's commits are applied after this check, and once the poll moved the
                # held read past them a checkpoint may copy them into the main file: such a page
                # says nothing of the file before the restart. Read after the pages, so none
                # copied before the read is missed.
                copied = t.copied_since_restart()
                if copied is None:
                    return False  # the WAL started over again: the next poll checks that restart
                bad = [p for p in bad if p not in copied]
            if not bad:
                return False
            # A checkpoint may have copied frames we have not captured yet (it may go up to our
            # read's snapshot): capture up to now and look at those pages again.
            time.sleep(0.01)
            if attempt < 2 and not in_restart:
                res = self._catch_up()
                if res.restarted:
                    return False  # that poll judged the restart (and reconciled if it had to)
            nb = t.last.n_backfill if t.last is not None else 0
            pgs = [p for p in bad if self.wal_pages.get(p, 0) <= nb]
            if not pgs:
                return False
        self.log("debug", f"{self.target.name}: main file pages {pgs[:8]} differ from the captured state "
                          f"(WAL frame {t.frame}, backfilled {nb}, in restart: {in_restart})")
        return True

    def _main_file_ids(self) -> list[bytes]:
        t = self.tailer
        size, _ = t.db_stat()
        n = size // t.page_size if t.page_size else 0
        out = []
        for start in range(1, n + 1, 1024):
            batch = t.main_file_pages(list(range(start, min(n, start + 1023) + 1)))
            out.extend(self.vault.codec.chunk_id(p) for p in batch.values())
        return out

    def _on_swap(self) -> None:
        """Someone moved another file over the path (or deleted the file) while the app holds
        ours open."""
        self._catch_up()  # the old file's last commits first: they are what the new one is compared with
        now = time.time()
        path = self.target.path
        try:
            st = os.stat(path)  # before it is read: the file compared now is this one
            seen: tuple | None = (st.st_dev, st.st_ino)
        except OSError:
            seen = None
        deleted = seen is None
        ids: list[bytes] = []
        try:
            if not deleted:
                chunk_id = self.vault.codec.chunk_id
                for _ps, batch in plain_pages(path):  # never the whole file in memory
                    ids.extend(chunk_id(p) for p in batch)
        except MulliganError as exc:
            self.log("warning", f"{self.target.name}: cannot read the file now at the path: {exc.message}")
        if ids and self._same_rows(ids):
            # A copy of the current state, or the application's own compaction (VACUUM INTO,
            # then a rename): nothing went back in time. What would be lost is a commit into the
            # file we hold from now on: _late_commit opens the incident then.
            later = ("" if not self.tailer.others_attached() else
                     ". Its commits are captured once the application lets go of the file it holds; a commit into "
                     "that one meanwhile would be lost, and is an alert")
            self.log("notice", f"{self.target.name}: {path} now names another file, holding the same rows as the "
                               f"captured state: no rollback{later}")
            self._swapped = {"incident": None, "at": now, "lost": self.det.obs, "point": self.last_point, "seen": seen}
            return
        held = self.tailer.others_attached()
        if deleted:
            self.log("error", f"{self.target.name}: {path} was deleted; " + (
                "still capturing what the application writes into the file it holds open" if held else
                "no process holds it open: every commit up to its last is stored, and capture starts again "
                "on the database that appears at the path"))
        else:
            self.log("error", f"{self.target.name}: {path} now names another file; " + (
                "still capturing what the application writes into the one it holds open" if held else
                "no process holds the one captured until now"))
        m, score = None, 0.0
        if ids:
            try:
                m, score = self.det.matcher.best(ids, [self.target.id], before=now)
            except MulliganError as exc:  # which snapshot it matches is a detail: the incident comes first
                self.log("warning", f"{self.target.name}: could not compare with older snapshots: {exc.message}")
        self.flush()
        lkg = self.last_point or (self.base.id, cs._ts(self.base))
        signal = (f"there is no file at {path} any more (the file being captured was deleted)" if deleted
                  else f"the file at {path} is no longer the file being captured (inode changed)")
        inc = self.det.respond(self.det.obs or self.tailer.observe(), [signal],
                               lkg, m if score >= detect.MATCH_MIN else None, score,
                               (detect.DELETED if held else detect.DELETED_UNHELD) if deleted
                               else "file moved over the path", raise_now=False)
        self._swapped = {"incident": inc["id"], "at": now, "lost": self.det.obs, "deleted": deleted, "seen": seen}

    def _same_rows(self, ids: list[bytes]) -> bool:
        """Does the file now at the path hold the captured state's rows? The same pages, or (up
        to SAME_ROWS_MAX) the same rows compared one by one, as `mulligan diff` does. Any doubt
        (a page that is not the captured one, a file that cannot be read) is a no."""
        if ids == self.ids:
            return True
        t = self.tailer
        ps = t.page_size
        if not self.ids or max(len(ids), len(self.ids)) * ps > SAME_ROWS_MAX:
            return False
        try:
            with tempfile.TemporaryDirectory(prefix="mulligan-swap-") as d:
                captured, at_path = os.path.join(d, "captured.db"), os.path.join(d, "at-path.db")
                with open(at_path, "wb") as out:
                    first = True
                    for _ps, batch in plain_pages(self.target.path):
                        out.write(_rollback_mode(batch[0]) if first else batch[0])
                        out.writelines(batch[1:])
                        first = False
                if not self._same_counters(at_path):
                    return False  # the usual rollback: no need to compare every row (the alert waits)
                with open(captured, "wb") as out:
                    chunk_id = self.vault.codec.chunk_id
                    for start in range(1, len(self.ids) + 1, 1024):
                        pgnos = list(range(start, min(len(self.ids), start + 1023) + 1))
                        pages = t.current_pages(pgnos)
                        if any(chunk_id(p) != self.ids[n - 1] for n, p in zip(pgnos, pages)):
                            return False  # not the captured state any more (the WAL moved on)
                        out.write(_rollback_mode(pages[0]) if start == 1 else pages[0])
                        out.writelines(pages[1:])
                d = diff_files(captured, at_path, limit=1, compare_pages=False)
                return not d.changed_tables and not d.schema
        except (MulliganError, OSError, apsw.Error) as exc:
            self.log("debug", f"{self.target.name}: could not compare the file now at the path: {exc}")
            return False

    def _same_counters(self, copy: str) -> bool:
        """The copy's AUTOINCREMENT counters and largest keys are those of the file we hold, as
        the held read sees it (a read a commit behind only makes this say no: an alert)."""
        obs = self.tailer.observe()
        conn = apsw.Connection(copy, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            seq = {}
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchall():
                seq = {n: int(v) for n, v in conn.execute("SELECT name, seq FROM sqlite_sequence") if v is not None}
            if seq != obs.seq:
                return False
            for table, top in obs.maxrow.items():
                q = '"' + table.replace('"', '""') + '"'
                if int(conn.execute(f"SELECT max(rowid) FROM {q}").fetchone()[0] or 0) != top:
                    return False
            return True
        finally:
            conn.close()

    def _late_commit(self) -> None:
        """The application committed into the file it holds after a file with the same rows was
        moved over the path: those commits are not in that file, and reopening it loses them."""
        info = self._swapped
        lkg = self.last_point
        signal = (f"the application committed into the file it holds after another file was moved over "
                  f"{self.target.path}: the file at the path lacks those commits")
        inc = self.det.respond(self.det.obs or self.tailer.observe(), [signal], lkg, None, 0.0,
                               "file moved over the path", raise_now=False)
        info["incident"] = inc["id"]

    def _switch_to_path(self) -> None:
        """The application let go of the old file: capture the file now at the path."""
        info = self._swapped
        lost = self.tailer.observe()  # the final state of the file the application let go of
        self.flush()
        if not self.tailer.truncate_wal():
            self.log("warning", f"{self.target.name}: could not empty the -wal of the replaced file")
        self.tailer.close()
        self.tailer = None
        self._swapped = None
        self._reopen_tailer()
        # Said once the old file's -wal is empty and the new file is open: a connection opened on
        # the path before that shares the old file's -wal and -shm (docs/capture.md).
        self.log("notice", f"{self.target.name}: no process holds the replaced file any more; "
                           f"capturing the file now at {self.target.path}")
        st = os.fstat(self.tailer.db_fd)
        again = not info.get("deleted") and info.get("seen") not in (None, (st.st_dev, st.st_ino))
        if info.get("deleted") or again:
            # Nothing was at the path to compare when the captured file went, or the file there
            # now is not the one compared when it was moved over the path (replaced again since):
            # what is there now (an old copy put back, a new empty database) is compared as a
            # start compares it; a rollback after a deletion goes into the incident the deletion
            # opened (same last good commit).
            self.det.obs = lost if lost is not None else self.det.obs
            self.reconcile("a database appeared at the path after the captured one was deleted" if not again else
                           "the file at the path was replaced again before capture moved to it")
            self._catch_up()
            if info["incident"] is not None:
                try:
                    inc = inc_mod.get(self.vault, info["incident"])  # as reconcile left it
                    inc["counters"].pop("deferred", None)  # raised by reconcile if it found a rollback
                    inc_mod.add_event(self.vault, inc, "capture switched to the file at the path",
                                      "compared with the last captured state")
                except MulliganError:
                    pass
            self.det.obs = self.tailer.observe()
            return
        raised, no_counter, not_raised = {}, [], None
        if lost is not None:
            # Before the whole state is read: what the application commits meanwhile, and the
            # counters, are then in the new base (read after this write, commits it saw before
            # it would be in neither the base nor any segment).
            plan, no_counter, _ = detect.counter_plan(lost, self.tailer.observe())
            if plan:
                try:
                    _, raised = self.tailer.write("counters", lambda c: detect.apply_counters(c, plan))
                    self._own_write("counters raised")
                except MulliganError as exc:  # the incident says so below; capture goes on
                    not_raised = exc.message
                    self.log("warning", f"{self.target.name}: counters not raised: {exc.message}")
        count, ids, nbytes = self._read_all(self.ids)
        self.stats.bytes_stored += nbytes
        self.ids, self.wal_pages = ids, dict(self.tailer.overlay_frames)
        self._new_base(gap=None, reason="switched to the file now at the path")
        self._catch_up()
        if info["incident"] is None:  # the same rows, and no commit into the old file since
            self.det.obs = self.tailer.observe()
            return
        try:
            inc = inc_mod.get(self.vault, info["incident"])
            inc["counters"]["raised"] = raised
            inc["counters"].pop("deferred", None)
            inc_mod.add_event(self.vault, inc, "capture switched to the file at the path",
                              {"counters_raised": raised, **({"counters_not_raised": not_raised} if not_raised else {})})
        except MulliganError:
            pass
        self.det.obs = self.tailer.observe()

    def _reopen_tailer(self) -> None:
        t = Tailer(self.target.path)
        t.open()
        self.tailer = t

    def reopen(self, why: str) -> None:
        self.log("warning", f"{self.target.name}: {why}; opening the database again")
        self.flush()
        self.tailer.close()
        self.tailer = None
        self._reopen_tailer()
        self.reconcile(why)

    def reconcile(self, why: str) -> None:
        """Read the whole state again; if it is not the captured one, start a new base and check it."""
        t = self.tailer
        count, ids, nbytes = self._read_all(self.ids)
        self.stats.bytes_stored += nbytes
        self.wal_pages = dict(t.overlay_frames)
        if ids == self.ids:
            self.log("info", f"{self.target.name}: {why}; the state is the captured one, nothing was missed")
            return
        self.log("warning", f"{self.target.name}: {why}; the state differs from the captured one: new base snapshot")
        lkg = self.last_point
        prev_ids = self.ids
        self.flush()
        self.ids = ids
        gap = {"from": iso(lkg[1]) if lkg else None, "to": iso(time.time()), "reason": why}
        obs = t.observe()
        self._new_base(gap=gap, reason=why, bump=False)
        self.det.check(obs, mass=False, where=why, lkg=lkg, discontinuity=True, final=True,
                    states=[ids, self._main_file_ids()], lkg_ids=prev_ids)
        self._bump_generation()
