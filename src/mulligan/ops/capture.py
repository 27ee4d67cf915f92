"""Continuous capture of one SQLite target (what ``watch`` runs per target).

Every poll (~100 ms): new commits from the WAL, each stamped with the time it
was seen, queued into the current segment; rollback signals checked. Every
flush (<= 0.5 s on a local vault): the segment is stored. Checkpoints are ours:
at a flush when the WAL is long, or once it has been idle for a second, the
WAL is sealed (write lock held for a few ms), its tail captured, then
checkpointed passively. A new base snapshot is made from the page map kept in
memory (its pages are already stored: only tree nodes are new) every
``base_interval``, at start, and whenever frames were missed.

The files under a capture (the path, -wal or -shm replaced, the main file edited
outside the WAL) are watched by ops/capture_files.py; rollback detection is
ops/capture_detect.py.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from dataclasses import dataclass, field

from ..engines.sqlite.capture import Observation, OwnWriteFailed, Poll, Tailer
from ..errors import DatabaseBusy, IntegrityError, MulliganError, StorageError, UsageError
from ..model import Target
from ..runtime import hostname, release_free_memory
from ..timeparse import iso
from . import capture_store as cs
from .alerts import Alerter, Log
from .capture_detect import RollbackDetector
from .capture_files import FilesUnderCapture
from .capture_repack import Repacker
from .workspace import Workspace

# After a flush fails (a full disk, a store that does not answer), the next try waits twice as
# long as the last, from the flush interval up to this: each try compresses every page held
# since the last stored flush again, and on an object store waits out the client's retries,
# so trying at every poll would burn a core, or hold the polls up, for the whole outage.
FLUSH_RETRY_MAX = 8.0


@dataclass
class CaptureOptions:
    poll_interval: float = 0.1
    flush_interval: float = 0.5
    checkpoint_frames: int = 1000
    idle_checkpoint: float = 1.0
    base_interval: float = 600.0
    generation_interval: float = 60.0
    sample_interval: float = 1.0
    sample_pages: int = 24
    status_interval: float = 5.0
    repack_after: float = 1.0  # repack once scattered pages cost a restore this many times the database; 0: never
    repack_min_mib: float = 64.0  # ... and at least this much
    repack_interval: float = 60.0  # ... and no sooner than this after the last pass began
    backlog_max_mib: float = 256.0  # commits the vault has not accepted, held in memory up to this much

    @classmethod
    def from_config(cls, section: dict, local_vault: bool) -> "CaptureOptions":
        from ..timeparse import parse_duration

        o = cls()
        if not local_vault:
            o.flush_interval = 5.0
        for name in ("poll_interval", "flush_interval", "idle_checkpoint", "base_interval", "generation_interval",
                     "sample_interval", "status_interval", "repack_interval"):
            if name in section:
                v = section[name]
                setattr(o, name, float(v) if isinstance(v, (int, float)) else parse_duration(str(v)).total_seconds())
        if "checkpoint_frames" in section:
            o.checkpoint_frames = int(section["checkpoint_frames"])
        for name in ("repack_after", "repack_min_mib", "backlog_max_mib"):
            if name in section:
                setattr(o, name, float(section[name]))
        return o

    def check(self) -> None:
        """Refuse intervals that cannot work: a poll of 0 s turns the loop into a busy spin (a
        core at 100 %), a negative one is a typo."""
        if not 0.001 <= self.poll_interval <= 60:
            raise UsageError(f"a poll interval of {self.poll_interval:g} s cannot be used",
                             hint="give --poll (or [capture] poll_interval) between 1ms and 60s; the default is 100ms")
        if self.flush_interval < 0:
            raise UsageError(f"a flush interval of {self.flush_interval:g} s cannot be used",
                             hint="give --flush (or [capture] flush_interval) as a duration such as 0.5s or 5s")


@dataclass
class CaptureStats:
    started: float = field(default_factory=time.time)
    commits: int = 0
    bytes_stored: int = 0
    objects_stored: int = 0
    segments: int = 0
    bases: int = 0
    checkpoints: int = 0
    repacks: int = 0
    last_commit: float | None = None
    last_flush: float | None = None
    last_ok: float | None = None
    oldest_pending: float | None = None
    error: str | None = None
    incidents_opened: int = 0


class TargetCapture(FilesUnderCapture):
    # Seconds of reading a large commit (a migration, a bulk load) a step may spend before the
    # other targets of the same watch get their turn: a commit of gigabytes takes a minute.
    STEP_BUDGET = 0.5
    # ... and the stop may spend, storing what it saw, before it leaves such a commit unread.
    STOP_BUDGET = 10.0

    def __init__(self, ws: Workspace, target: Target, options: CaptureOptions, alerter: Alerter, log: Log):
        self.ws, self.vault, self.target = ws, ws.vault, target
        self.vault.lean = True  # never the whole chunk index (Vault.lean)
        self.o, self.alerter, self.log = options, alerter, log
        self.tailer: Tailer | None = None
        self.ids: list[bytes] = []
        self.seg: cs.SegmentWriter | None = None
        self.base = None
        self._base_nodes: deque[set[bytes]] = deque()  # the tree nodes of each recent base
        self._index_reported: set[str] = set()  # damaged index objects already logged
        self.stats = CaptureStats()
        self.last_point: tuple[str, float] | None = None  # (point id, seen time) of the last commit
        self.wal_pages: dict[int, int] = {}
        self.det = RollbackDetector(self)
        # When each periodic task last ran, on the monotonic clock (``step``'s ``now``): a wall clock
        # stepped back an hour must not hold flushes for an hour. Commit times are the wall clock's.
        self._t = {"flush": 0.0, "base": 0.0, "gen": 0.0, "sample": 0.0, "status": 0.0}
        self._swapped: dict | None = None  # the path names another file; we keep capturing ours
        self._stale_alerted = False
        self._zero: bytes | None = None
        self._dropped: float | None = None  # commits seen since then were dropped unstored (vault down)
        self._stored_point: tuple[str, float] | None = None  # last_point as of the last stored flush
        self._rebase_next = self._rebase_wait = 0.0  # after a drop: when to read the database again
        self._own_failing: str | None = None  # why the watcher's own writes into the database fail
        self._flush_failed: MulliganError | None = None  # the last flush's failure, until one succeeds
        self._flush_wait = 0.0
        self._more = False  # the last step left a large commit partly read
        self.left_unread = False  # the stop left a large commit unread (the next watch reads it)
        self._rng = random.Random()
        self.repack = Repacker(self.vault, options.repack_after, int(options.repack_min_mib * 1048576),
                               options.repack_interval)

    # ---- start / stop -------------------------------------------------------------------
    def start(self) -> None:
        t = Tailer(self.target.path)
        t.open()
        self.tailer = t
        try:
            try:
                prev = self._previous()
            except IntegrityError as exc:  # a damaged vault must not keep the database from being captured
                self.log("warning", f"{self.target.name}: the last captured state cannot be read ({exc.message}); "
                                    "capture starts from the database as it is. Run 'mulligan verify'")
                prev = None
            count, ids, nbytes = self._read_all(prev["ids"] if prev is not None else [])
            self.stats.bytes_stored += nbytes
            self.ids = ids
            self.wal_pages = dict(t.overlay_frames)
            obs = t.observe()
            gap = None
            if prev is not None and prev["ids"] != ids:
                gap = {"from": iso(prev["time"]), "to": iso(time.time()),
                       "reason": "the database changed while watch was not running"}
            self.det.obs = prev["obs"] if prev is not None else None
            self._new_base(gap=gap, reason="watch started", bump=False)
            if prev is not None and gap is not None:
                self.det.check(obs, mass=False, where="the database changed while watch was not running",
                            lkg=(prev["point"], prev["time"]), discontinuity=True, final=True,
                            states=[ids, self._main_file_ids()], lkg_ids=prev["ids"])
            self.det.clean(obs)
            self._bump_generation()
            self.log("info", f"{self.target.name}: capturing {self.target.path} ({count} pages, base {self.base.id})")
            self.stats.last_ok = time.time()
        except BaseException:
            t.close()
            self.tailer = None
            raise

    def _dedup_against(self, ids: list[bytes]) -> None:
        """Tell the vault which pages the reading of the whole database need not store again:
        the given state's (the last one captured) and, when the target's newest restore point
        is a snapshot, that one's. Looked up in one pass over the vault's index objects: the
        watcher's vault is lean (Vault.lean), its memory the database's size, not the history's."""
        cands = set(ids)
        latest = self.vault.latest(self.target.id)
        if latest is not None and not latest.meta.get("capture"):
            try:
                cands.update(self.vault.page_ids(latest))
            except IntegrityError:
                pass  # only an economy: its pages are stored again
        if self._base_nodes:
            cands.update(self._base_nodes[-1])  # the last base's tree nodes, for the next base
        if cands:
            self.vault.know_present(cands)

    def _report_index_problems(self) -> None:
        for key, why in self.vault.index_problems.items():
            if key not in self._index_reported:
                self._index_reported.add(key)
                self.log("warning", f"{self.target.name}: the vault's {why}: passed over; capture goes on, and "
                                    "pages only it names are stored again. Run 'mulligan verify'")

    def _previous(self) -> dict | None:
        """The last captured state of this target (ids, time, point, observation), if any."""
        bases = cs.capture_bases(self.vault, self.target.id)
        if not bases:
            return None
        base = bases[-1]
        lc = cs.last_commit(self.vault, base)
        if lc is None:
            return {"ids": self.vault.page_ids(base), "time": cs._ts(base), "point": base.id,
                    "obs": Observation.from_json(base.meta.get("observation"))}
        pid, t, seg = lc
        _, seq, idx = pid.split(".")
        cp = cs.materialize_commit(self.vault, base, int(seq), int(idx))
        return {"ids": cp.resolved_ids, "time": t, "point": pid, "obs": Observation.from_json(seg.get("end", {}).get("observation"))}

    def stop(self) -> None:
        try:
            if self.tailer is not None and self._swapped is None:
                try:
                    if self._catch_up(budget=self.STOP_BUDGET).more:
                        self._drop_part_at_stop()
                except Exception as exc:  # noqa: BLE001 - a broken database (SQLite, I/O) must not cost
                    # the commits already seen: they are stored below whatever the last look gave.
                    msg = exc.one_line() if isinstance(exc, MulliganError) else f"{exc.__class__.__name__}: {exc}"
                    self.log("warning", f"{self.target.name}: last look at the database failed: {msg}")
            self.flush()
            self.repack.finish()
            if self.seg is not None:
                self.seg.merge_indexes()
            self.write_status(stopping=True)
        finally:
            for inc in self.det.unsaved.values():
                self.log("error", f"{self.target.name}: incident {inc['id']} was never stored (the vault refused "
                                  f"writes): what it holds is in this log's ALERT rollback line")
            if self.tailer is not None:
                self.tailer.close()
                self.tailer = None

    def _drop_part_at_stop(self) -> None:
        """Asked to stop in the middle of a commit of gigabytes: reading it to its end could take
        minutes, past a service manager's patience (systemd kills after 90 s). Its pieces are
        dropped (packs already stored stay unnamed until prune), the commits before it are
        stored, and the next watch reads it with the whole database (a gap recorded)."""
        self.tailer.forget_part()
        self.seg.drop_part()
        self.left_unread = True
        self.log("warning", f"{self.target.name}: stopping in the middle of a commit larger than "
                            f"{self.tailer.poll_max >> 20} MiB (a migration, a bulk load) after "
                            f"{self.STOP_BUDGET:g} s of reading it: it is not stored; the next watch reads it "
                            "with the whole database")

    # ---- one poll -------------------------------------------------------------------------
    def step(self, now: float) -> bool:
        """One poll; ``now`` is ``time.monotonic()`` (what the periodic tasks are timed by).

        Returns True while a large commit is still being read (at most STEP_BUDGET seconds of it
        a step): the caller steps again without waiting, after the other targets' turn. Nothing
        else happens to this target until that commit is whole: no flush, no checkpoint, no new
        base (its pieces belong to the segment writer of now), no look at the files."""
        t = self.tailer
        assert t is not None
        if not self._more and self._swapped is None and t.replaced():  # three stat() calls: every poll
            if self._check_files(sample=False):
                return False
        self._more = self._catch_up(budget=self.STEP_BUDGET).more
        if self._more:
            self._heartbeat(now)  # it goes on through a commit of gigabytes
            return True
        if now - self._t["sample"] >= self.o.sample_interval:
            self._t["sample"] = now
            if self._check_files():
                return False
        if now - self._t["flush"] >= self.o.flush_interval:
            self._maintain(now)
        self._heartbeat(now)
        if self._flush_failed is not None:
            # Polls go on between tries (commits are seen, rollbacks noticed), but capture is
            # failing until a flush succeeds: the watcher keeps reporting it (and the stale alert
            # can fire).
            raise self._flush_failed.with_traceback(None)
        self.stats.last_ok = time.time()
        return False

    def _heartbeat(self, now: float) -> None:
        """The status object, every ``status_interval``. Not while the vault refuses writes: on
        an object store each try could hold the polls for its timeouts (10 s); the flush's own
        tries (backing off) probe it."""
        if now - self._t["status"] >= self.o.status_interval and self._flush_failed is None:
            self._t["status"] = now
            self.write_status()

    def _catch_up(self, budget: float | None = None) -> Poll:
        """Poll until every committed frame is read, storing each piece of a large commit as it
        comes (Tailer.poll reads a bounded amount at a time); returns the last poll. With a
        ``budget`` (seconds), stop polling once it is spent: the last poll's ``more`` is then
        True and the next call goes on where this one stopped."""
        restarted = False
        deadline = None if budget is None else time.monotonic() + budget
        while True:
            res = self.tailer.poll()
            self._apply_poll(res)
            restarted |= res.restarted
            if not res.more:
                res.restarted = restarted
                return res
            if deadline is not None and time.monotonic() >= deadline:
                return res

    def _take_part(self, res: Poll) -> None:
        if res.part is None or self._dropped is not None:
            return  # after a drop, the whole state is read again: pieces would be discarded with it
        if self.stats.oldest_pending is None:
            self.stats.oldest_pending = time.time()  # the lag counts from its first piece, not its last
        try:
            self.seg.add_part(res.part)
        except MulliganError:
            # Pieces already handed over are gone from memory: no flush can store this commit,
            # nor the ones before it in this segment (they share its packs).
            self._drop_unstored()
            raise

    def _apply_poll(self, res: Poll) -> None:
        if res.part_dropped:
            self.seg.drop_part()
        if res.restarted:
            self.wal_pages = {}
            if not res.continuous:
                self.reconcile("the WAL restarted without a checkpoint of ours, with frames not captured")
                return
            if self._main_mismatch(in_restart=True):
                self.reconcile("the WAL restarted over a main database file that is not the captured state")
                return
        self._take_part(res)
        if not res.commits:
            return
        mass = False
        for c in res.commits:
            before = self.last_point
            point, ids = self.seg.add(c.seen, c.frame, c.db_pages, c.pages, c.by)
            first_mass = c.by == "app" and len(ids) >= max(4, 0.5 * c.db_pages) and self.det.mass is None
            if first_mass:
                lkg_ids = list(self.ids)
            self._apply_ids(c.db_pages, ids)
            if first_mass:
                # The states just before and just after the first mass rewrite: what the match compares.
                self.det.mass = (lkg_ids, list(self.ids))
            self._note_commit(c, point, ids)
            if c.by == "app" and len(ids) >= max(4, 0.5 * c.db_pages):
                mass = True
                self.det.suspects.append((before[0] if before else None, before[1] if before else None, point))
        if all(c.by != "app" for c in res.commits):
            self.det.obs = self.tailer.observe()
            return
        if self._swapped is not None and self._swapped["incident"] is None:
            self._late_commit()  # into the file no longer at the path, which held the same rows
        self.det.check(self.tailer.observe(), mass=mass, where="during capture")

    def _note_commit(self, c, point: str, ids: dict[int, bytes]) -> None:
        """Bookkeeping of one captured commit: where its pages are, the last point, stats."""
        for pgno in ids:  # all its pages, those of earlier pieces too (their frames come before)
            self.wal_pages[pgno] = c.frame
        self.last_point = (point, c.seen)
        self.stats.commits += 1
        self.stats.last_commit = c.seen
        if self.stats.oldest_pending is None:
            self.stats.oldest_pending = c.seen

    def _apply_ids(self, n: int, ids: dict[int, bytes]) -> None:
        self.repack.note(n, ids)
        pre = self.det.pre
        for pgno in ids:
            if pgno not in pre and pgno <= len(self.ids):
                pre[pgno] = self.ids[pgno - 1]
        if n < len(self.ids):
            del self.ids[n:]
        elif n > len(self.ids):
            self.ids.extend([b""] * (n - len(self.ids)))
        for pgno, cid in ids.items():
            if pgno <= n:
                self.ids[pgno - 1] = cid

    def _apply_poll_quiet(self, res: Poll) -> None:
        """A poll made holding the write lock (never in pieces: Tailer.sealed)."""
        for c in res.commits:
            point, ids = self.seg.add(c.seen, c.frame, c.db_pages, c.pages, c.by)
            self._apply_ids(c.db_pages, ids)
            self._note_commit(c, point, ids)

    # ---- reading everything, our own writes --------------------------------------------------
    def _read_all(self, known: list[bytes]) -> tuple[int, list[bytes], int]:
        """The whole state, stored batch by batch: (page count, chunk ids, bytes newly stored).
        ``known``: the page ids of the state last captured, which the vault is asked about first
        (one pass over its index objects) so that the pages it holds are not stored again."""
        self._dedup_against(known)
        store = cs.PageStore(self.vault)
        count, _h = self.tailer.full_state(store.add, store.reset)
        nbytes = store.close()
        # Each block's compressed bytes were cut from a buffer sized for the worst case: the heap
        # is left full of freed holes between them (on text pages, 22 MB more resident after
        # reading a 37 MB database). Its free pages go back.
        release_free_memory()
        self._report_index_problems()
        return count, store.ids, nbytes

    def _own_write(self, by: str) -> None:
        """Tell the live-use guard that the last commit is Mulligan's own (by its WAL position)."""
        own = self.tailer.last_own if self.tailer else None
        if not own:
            return
        try:
            from .guards import record_own_commit

            record_own_commit(self.vault, self.target.id, wal_salts=own[0], wal_frame=own[1], by=f"watch: {by}")
        except Exception as exc:  # never let the guard's record stop capture
            self.log("debug", f"{self.target.name}: could not record our own commit: {exc}")


    def after_lease_lapse(self) -> None:
        """The vault's cached index was dropped (our lease lapsed; a prune may have removed
        chunks): forget the chunks recent flushes stored, then read the whole state again, which
        stores every page no longer in the vault, and start a new base from it."""
        self.flush()
        self.repack.settle()
        if self.seg is not None:
            self.seg.recent = {}
        self._zero = None
        if self._swapped is None:
            self._catch_up()
            self.flush()
            count, ids, nbytes = self._read_all(self.ids)  # a prune may have removed some: looked up again
            self.stats.bytes_stored += nbytes
            self.ids, self.wal_pages = ids, dict(self.tailer.overlay_frames)
        self._new_base(gap=None, reason="the watcher's lease lapsed: pages stored again where missing")

    # ---- flush, checkpoint, base, generation -------------------------------------------------
    def flush(self) -> None:
        if self.seg is None:
            return
        if self._dropped is not None:
            self._rebase_after_drop()
            return
        end = {"observation": self.det.obs.to_json() if self.det.obs else None}
        before_b, before_o, before_p = self.seg.bytes_stored, self.seg.objects_stored, self.seg.page_bytes
        large = self.seg.spilled
        try:
            key = self.seg.flush(end)
        except MulliganError:
            if self.seg.spilled:
                self._drop_unstored()  # pages of a large commit went out as read: not held to try again
            else:
                self._bound_backlog()
            raise
        self._flush_failed, self._flush_wait = None, 0.0
        if self.det.unsaved:
            self.det.store_unsaved()  # incidents opened while the vault refused writes
        if large:
            release_free_memory()  # a large commit's pieces and packs are gone: give their pages back
        self.repack.flushed += self.seg.page_bytes - before_p
        if key:
            self._stored_point = self.last_point
            self.stats.segments += 1
            self.stats.bytes_stored += self.seg.bytes_stored - before_b
            self.stats.objects_stored += self.seg.objects_stored - before_o
            self.stats.last_flush = time.time()
            self.stats.oldest_pending = None

    def _bound_backlog(self) -> None:
        """The vault refused a flush. Past ``backlog_max_mib`` of held pages, drop the commits
        seen since the last stored one: a long outage must not grow the watcher without end.
        Once the vault answers, the whole state is read again and a new base records the gap."""
        if self.seg.held_bytes() > self.o.backlog_max_mib * 1048576:
            self._drop_unstored()

    def _drop_unstored(self) -> None:
        """Drop the commits seen since the last stored one; the whole state is read again."""
        held = self.seg.held_bytes()
        since = self.stats.oldest_pending or time.time()
        n = self.seg.unstored_commits()
        self.seg.discard()
        self._dropped = since  # the capture lag keeps counting from here until the new base
        self.last_point = self._stored_point  # the dropped commits can be no one's last good point
        self.log("error", f"{self.target.name}: the vault has not accepted a write since {iso(since)}: "
                          f"{n} commits ({held / 1024:,.0f} KiB of pages) dropped from memory; once it answers, the "
                          "database is read again and the gap is recorded")

    def _rebase_after_drop(self) -> None:
        """After commits were dropped unstored: read the whole state again (storing every page the
        vault lacks) and start a new base whose gap covers the commits not kept."""
        if self.tailer is None:
            return  # no database to read yet: the next flush tries again
        since = self._dropped
        self.seg.discard()  # seen since the drop: the state read now holds them
        self.last_point = self._stored_point
        now = time.monotonic()
        if now < self._rebase_next:
            # Reading the whole database at every flush of an outage would burn a core; and this
            # is still a failure (status, the stale alert), not a quiet flush.
            raise StorageError(f"commits since {iso(since)} were dropped: the vault has not accepted a write since",
                               hint="the database is read again and stored once the vault accepts writes")
        self._rebase_wait = min(60.0, self._rebase_wait * 2) if self._rebase_wait else 1.0
        self._rebase_next = now + self._rebase_wait
        count, ids, nbytes = self._read_all(self.ids)  # raises while the vault still refuses writes
        self._rebase_wait, self._rebase_next = 0.0, 0.0
        self.stats.bytes_stored += nbytes
        self.ids, self.wal_pages = ids, dict(self.tailer.overlay_frames)
        self.repack.settle()
        self._dropped = None
        gap = {"from": iso(since), "to": iso(time.time()),
               "reason": "the vault could not be written: commits in between were not kept"}
        self._new_base(gap=gap, reason="the vault accepts writes again after commits were dropped")
        self.stats.oldest_pending = None
        self.log("notice", f"{self.target.name}: the vault accepts writes again; new base {self.base.id} "
                           f"(commits from {gap['from']} to {gap['to']} were not kept)")

    def _maintain(self, now: float) -> None:
        try:
            self._maintain_once(now)
        except MulliganError as exc:
            self._flush_failed = exc
            self._flush_wait = min(FLUSH_RETRY_MAX, max(self.o.flush_interval, 2 * self._flush_wait))
            self._t["flush"] = now + self._flush_wait - self.o.flush_interval
            raise
        self._flush_failed, self._flush_wait = None, 0.0

    def _maintain_once(self, now: float) -> None:
        t = self.tailer
        if self._swapped is None:
            h = t.last
            idle = self.stats.last_commit is None or time.time() - self.stats.last_commit >= self.o.idle_checkpoint
            if h is not None and (h.mx_frame >= self.o.checkpoint_frames or (idle and h.mx_frame > h.n_backfill)):
                try:
                    r = t.checkpoint()
                    self._apply_poll(r["tail"])
                    self._own_write_result(r["failed"])
                    if r["failed"] is None:
                        self.stats.checkpoints += 1
                except DatabaseBusy:
                    pass  # the application is writing or checkpointing: next time
            if now - self._t["base"] >= self.o.base_interval:
                self.flush()
                self._new_base(gap=None, reason="periodic")
            elif now - self._t["gen"] >= self.o.generation_interval:
                self._bump_generation()
        self.flush()
        if self._swapped is None:
            self._repack_step()
        self._t["flush"] = now

    def _repack_step(self) -> None:
        """A step of a repack pass (capture_repack.py), started once flushes stored enough."""
        r = self.repack
        if not self.vault.dedup_known:
            return  # the watcher's lease is overdue: a pass waits until it is renewed (and starts over then)
        if not r.running:
            if not r.due(len(self.ids) * self.tailer.page_size):
                return
            r.begin()
            self.log("debug", f"{self.target.name}: repacking the pages flushes stored since the last repack")
        if r.step(self.ids, self.tailer.current_pages):
            done = r.current
            self.stats.repacks += 1
            self.stats.bytes_stored += done.bytes
            self.log("debug", f"{self.target.name}: repacked {done.pages} pages ({done.bytes / 1048576:.1f} MiB) in"
                              f" page order ({done.skipped} changed since seen, left as they were); a new base starts")
            self._new_base(gap=None, reason="repacked")
            release_free_memory()  # the pass read and compressed the database's moved pages: give them back

    def _own_write_result(self, failed: OwnWriteFailed | None) -> None:
        """A write of ours into the database (a checkpoint, the identity's generation) failed or
        went through: logged once when it starts failing and once when it works again. Capture
        goes on either way: the commits are in the WAL, which a failed checkpoint leaves whole."""
        if failed is not None:
            if self._own_failing is None:
                self.log("warning", f"{self.target.name}: {failed.one_line(retrying=True)}")
            self._own_failing = failed.message
        elif self._own_failing is not None:
            self.log("notice", f"{self.target.name}: the watcher's writes into the database work again")
            self._own_failing = None

    def _bump_generation(self) -> None:
        try:
            before, gen = self.tailer.bump_generation()
        except OwnWriteFailed as exc:
            self._apply_poll(exc.tail)
            self._own_write_result(exc)
            return
        except DatabaseBusy:
            return
        self.det.own_generation = gen
        self._own_write("identity generation advanced")
        self._apply_poll(before)
        self._t["gen"] = time.monotonic()
        self._own_write_result(None)

    def _new_base(self, gap: dict | None, reason: str, bump: bool = True) -> None:
        self.flush()
        if self.seg is not None:
            self.seg.merge_indexes()
        ids = self._fill(self.ids)
        now = time.time()
        meta = {"reason": reason, "journal_mode": "wal",
                "observation": self.det.obs.to_json() if self.det.obs else None,
                "generation": self.det.obs.generation if self.det.obs else None}
        if gap:
            meta["gap_before"] = gap
        nodes: set[bytes] = set()
        self.base = cs.save_base(self.vault, self.target, self.tailer.page_size, ids, time=now, meta=meta, nodes=nodes)
        self._keep_nodes_of_recent_bases(nodes)
        prev = self.seg
        self.seg = cs.SegmentWriter(self.vault, self.target.id, self.base.id, self.tailer.page_size,
                                    recent=prev.recent if prev is not None else {},
                                    merged_keys=prev.merged_keys if prev is not None else [])
        self.last_point = self._stored_point = (self.base.id, now)
        self.det.clean_point = self.last_point
        self.stats.bases += 1
        self._t["base"] = time.monotonic()
        if bump:
            self._bump_generation()

    def _keep_nodes_of_recent_bases(self, nodes: set[bytes]) -> None:
        """The tree nodes of the bases the rollback matcher compares with stay in the cached
        index; those only older bases use leave it. Kept, a watcher's memory grew with every
        base for as long as it ran (a base every 10 minutes, and after every repack pass).
        Reading an older base again finds its nodes in the vault's index objects (Vault.locate)."""
        recent = self._base_nodes
        recent.append(nodes)
        if len(recent) > max(1, self.det.matcher.limit):
            old = recent.popleft()
            self.vault.index().forget(old.difference(*recent))

    def _fill(self, ids: list[bytes]) -> list[bytes]:
        if all(ids):
            return ids
        if self._zero is None:
            zero = bytes(self.tailer.page_size)
            zids, _ = cs.store_pages(self.vault, [zero])
            self._zero = zids[0]
        return [x or self._zero for x in ids]

    # ---- status ---------------------------------------------------------------------------------
    def lag(self) -> float:
        return 0.0 if self.stats.oldest_pending is None else max(0.0, time.time() - self.stats.oldest_pending)

    def status(self) -> dict:
        s = self.stats
        return {
            "target": self.target.name, "target_id": self.target.id, "pid": os.getpid(), "host": hostname(),
            "started": iso(s.started), "heartbeat": iso(time.time()), "heartbeat_ts": time.time(),
            "heartbeat_every": self.o.status_interval,
            "last_commit": iso(s.last_commit) if s.last_commit else None,
            "last_flush": iso(s.last_flush) if s.last_flush else None,
            "last_ok": iso(s.last_ok) if s.last_ok else None,
            "lag_seconds": round(self.lag(), 3), "commits": s.commits, "bytes_stored": s.bytes_stored,
            "segments": s.segments, "bases": s.bases, "checkpoints": s.checkpoints, "repacks": s.repacks,
            "base": self.base.id if self.base else None, "error": s.error, "capturing": s.error is None,
            "swapped": bool(self._swapped),
        }

    def write_status(self, stopping: bool = False) -> None:
        st = self.status()
        st["running"] = not stopping
        try:
            self.vault.put_json(cs.status_key(self.target.id), st)
        except MulliganError:
            pass
