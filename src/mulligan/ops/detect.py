"""Noticing that production went back in time, and what to do then.

No single file-level signal catches a rollback made through SQLite itself, so
the watcher combines them (docs/capture.md):

strong, any one is a rollback:
  * the file at the path is no longer the file being captured (inode changed);
  * the identity stamp inside names another target;
  * the identity generation went down (the watcher advances it every minute);
  * an AUTOINCREMENT counter (``sqlite_sequence``) went down;
together with a mass rewrite or a WAL discontinuity, a rollback:
  * the new state's pages match an older snapshot better than the last good state;
reported, never enough alone (a mass DELETE does it too):
  * the largest key of a table fell.

A state whose generation went *up* in the same change came from Mulligan's own
in-place restore (it advances the generation): recorded, not an alarm.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..engines.sqlite.capture import Observation
from ..model import Target
from ..timeparse import human_age, iso
from ..vault import KIND_UNDO, Manifest, Vault
from . import audit
from . import incidents as inc_mod

MATCH_MIN = 0.6


@dataclass
class Signals:
    strong: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)
    generation_up: bool = False

    @property
    def any(self) -> bool:
        return bool(self.strong or self.weak)


def compare(lkg: Observation | None, cur: Observation, own_generation: int | None = None) -> Signals:
    """``own_generation``: the generation the watcher itself last wrote (a rise to it is ours)."""
    s = Signals()
    if lkg is None:
        return s
    if lkg.target_id and cur.target_id and cur.target_id != lkg.target_id:
        s.strong.append(f"the identity stamp now names target {cur.target_id} (it was {lkg.target_id})")
    elif lkg.target_id and not cur.target_id:
        s.strong.append("the identity stamp disappeared")
    if lkg.generation is not None and cur.generation is not None:
        if cur.generation < lkg.generation:
            s.strong.append(f"the identity generation went down from {lkg.generation} to {cur.generation}")
        elif cur.generation > max(lkg.generation, own_generation or 0):
            s.generation_up = True
    fell = [f"{t} {v}→{cur.seq.get(t, 0)}" for t, v in sorted(lkg.seq.items()) if cur.seq.get(t, 0) < v]
    if fell:
        s.strong.append("AUTOINCREMENT counters went down: " + ", ".join(fell))
    keys = [f"{t} {v}→{cur.maxrow.get(t, 0)}" for t, v in sorted(lkg.maxrow.items())
            if t in cur.maxrow and cur.maxrow[t] < v]
    if keys:
        s.weak.append("largest keys fell: " + ", ".join(keys))
    return s


# ---- which snapshot was it rolled back to -------------------------------------------
class SnapshotMatcher:
    """Compares a state's page ids with recent restore points (page id lists are cached, up to
    CACHE_IDS ids in all: 40 lists of a 10 GB database's 2.6 million pages would be 6 GB, held
    by a watcher from its first detection on)."""

    CACHE_IDS = 4_000_000  # ~230 MB of ids; a database of up to 100,000 pages keeps all 40 lists

    def __init__(self, vault: Vault, limit: int = 40):
        self.vault = vault
        self.limit = limit
        self._ids: dict[str, list[bytes]] = {}

    def ids(self, m: Manifest) -> list[bytes]:
        if m.id not in self._ids:
            self._ids[m.id] = self.vault.page_ids(m)
        return self._ids[m.id]

    @staticmethod
    def score(a: list[bytes], b: list[bytes]) -> float:
        if not a or not b:
            return 0.0
        same = sum(1 for x, y in zip(a, b) if x == y)
        return same / max(len(a), len(b))

    def best(self, ids: list[bytes], target_ids: list[str], before: float | None = None,
             exclude: str | None = None) -> tuple[Manifest | None, float]:
        cands: list[Manifest] = []
        for tid in dict.fromkeys(t for t in target_ids if t):
            cands += [m for m in self.vault.manifests(tid) if m.kind != KIND_UNDO]
        cands.sort(key=lambda m: m.time, reverse=True)
        window = cands[: self.limit]
        keep = {m.id for m in window}
        for mid in [k for k in self._ids if k not in keep]:
            del self._ids[mid]  # out of the window for good (newer points only arrive)
        eligible = [m for m in window if not (before is not None and _ts(m) > before) and m.id != exclude]
        scores = {m.id: self.score(ids, self._ids[m.id]) for m in eligible if m.id in self._ids}
        todo = [m for m in eligible if m.id not in scores]
        # Read a few at a time, their trees a level at a time (a watcher's lean vault: a pass a
        # level), no more ids at once than the cache may hold; kept while the cache has room.
        step = max(1, self.CACHE_IDS // max([m.page_count for m in todo] + [1]))
        for i in range(0, len(todo), step):
            for mid, pids in self.vault.page_ids_many(todo[i : i + step]).items():
                scores[mid] = self.score(ids, pids)
                if sum(map(len, self._ids.values())) + len(pids) <= self.CACHE_IDS:
                    self._ids[mid] = pids
        best, best_score = None, 0.0
        for m in eligible:  # newest first: the newest of equal matches
            if scores[m.id] > best_score + 1e-9:
                best, best_score = m, scores[m.id]
        return best, best_score


def _ts(m: Manifest) -> float:
    from ..timeparse import from_iso

    return from_iso(m.time).timestamp()


# ---- counters -----------------------------------------------------------------------
def counter_plan(lost: Observation, live: Observation) -> tuple[dict[str, int], list[str], dict]:
    """AUTOINCREMENT counters to raise above every id the lost state used, and the
    tables that have no counter to raise (their next id is max+1 of what is live)."""
    raise_to: dict[str, int] = {}
    for t in sorted(set(lost.seq) | (lost.autoinc & live.autoinc)):
        if t not in live.autoinc and t not in live.seq:
            continue
        want = max(lost.seq.get(t, 0), lost.maxrow.get(t, 0))
        if want > live.seq.get(t, 0) and want > live.maxrow.get(t, 0):
            raise_to[t] = want
    no_counter, detail = [], {}
    for t, v in sorted(lost.maxrow.items()):
        if t in live.autoinc or t in lost.autoinc or t in lost.seq:
            continue
        if v > live.maxrow.get(t, 0):
            no_counter.append(t)
            detail[t] = {"lost_max": v, "live_max": live.maxrow.get(t, 0)}
    return raise_to, no_counter, detail


def apply_counters(conn, raise_to: dict[str, int]) -> dict[str, int]:
    """Inside the caller's write transaction: raise sqlite_sequence rows (never lower them)."""
    done = {}
    if not raise_to:
        return done
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchall():
        return done
    for t, v in raise_to.items():
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (t,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (t, v))
            done[t] = v
        elif (row[0] or 0) < v:
            conn.execute("UPDATE sqlite_sequence SET seq=? WHERE name=?", (v, t))
            done[t] = v
    return done


# ---- the incident -----------------------------------------------------------------------
@dataclass
class Rollback:
    signals: list[str]
    detected_at: float
    last_good_point: str | None
    last_good_time: float | None
    rolled_back_to: Manifest | None
    match: float
    chain_base: str | None
    detail: str = ""


DELETED = "file deleted from the path"
DELETED_UNHELD = "file deleted from the path, held open by no process"


def describe(target: Target, rb: Rollback) -> str:
    if rb.detail == DELETED:
        what = (f"{target.env} database {target.name!r} ({target.path}) was deleted from its path; the application "
                "still writes into the file it holds open, and watch still captures it")
    elif rb.detail == DELETED_UNHELD:
        what = (f"{target.env} database {target.name!r} ({target.path}) was deleted from its path, and no process "
                "holds it open: every commit up to the last good one is in the vault, and watch captures the "
                "database that appears at the path next")
    else:
        what = f"{target.env} database {target.name!r} ({target.path}) went back in time"
    if rb.rolled_back_to is not None:
        age = rb.detected_at - _ts(rb.rolled_back_to)
        what += (f": it now holds the state of snapshot {rb.rolled_back_to.id} "
                 f"({rb.rolled_back_to.time}, {human_age(age)} old)")
    if rb.last_good_time:
        what += f"; last good commit {iso(rb.last_good_time)} (point {rb.last_good_point})"
    return what


def open_rollback(vault: Vault, target: Target, rb: Rollback) -> dict:
    """The incident record of a rollback, not stored yet: the watcher alerts first, then stores
    it (capture_detect.py), so a vault slow to answer or refusing writes delays no alert."""
    rt = rb.rolled_back_to
    fields = {
        "detection": {"signals": rb.signals, "detected_at": iso(rb.detected_at), "detail": rb.detail},
        "last_good": {"time": iso(rb.last_good_time) if rb.last_good_time else None, "point": rb.last_good_point},
        "rolled_back_to": ({"snapshot_id": rt.id, "time": rt.time, "age_seconds": round(rb.detected_at - _ts(rt), 3),
                            "match": round(rb.match, 3)} if rt is not None else None),
        "base": rt.id if rt is not None else None,
        "lost": rb.last_good_point,
        "counters": {"raised": {}, "no_counter": []},
        "snapshot_refs": [x for x in (rt.id if rt else None, rb.chain_base) if x],
    }
    return inc_mod.open_incident(vault, target, kind="rollback", title=describe(target, rb), store=False, **fields)


def same_loss(incidents: Iterable[dict], rb: Rollback) -> dict | None:
    """Of ``incidents`` (the target's, newest first), the open rollback incident that names the
    same last good point as ``rb``: the same loss seen again, not a new one. The database
    deleted, then a file put at its path (``rm`` and ``cp``), shows twice: once when the file
    goes (nothing to compare yet), once when capture starts on the file that came (it went back
    in time). A second incident for it split one event in two, and the first named no state
    rolled back to (``recover --incident`` had no BASE)."""
    if not rb.last_good_point:
        return None
    for inc in incidents:
        if (inc.get("status") == "open" and inc.get("kind") == "rollback"
                and (inc.get("last_good") or {}).get("point") == rb.last_good_point):
            return inc
    return None


def continue_rollback(inc: dict, rb: Rollback) -> dict:
    """Add this detection of the same loss to ``inc`` (same_loss): what it found, and the state
    rolled back to when the incident named none. Not stored here (open_rollback)."""
    rt = rb.rolled_back_to
    if rt is not None and not inc.get("rolled_back_to"):
        inc["rolled_back_to"] = {"snapshot_id": rt.id, "time": rt.time,
                                 "age_seconds": round(rb.detected_at - _ts(rt), 3), "match": round(rb.match, 3)}
        inc["base"] = rt.id
        inc["snapshot_refs"] = list(dict.fromkeys([*inc.get("snapshot_refs", []), rt.id]))
    inc["timeline"].append({"time": iso(rb.detected_at), "event": "rollback detected again, same last good commit",
                            "detail": "; ".join(rb.signals)})
    return inc


def record(vault: Vault, target: Target, what: str, detail=None) -> None:
    """An event of the watcher in the audit log (never fatal)."""
    try:
        audit.record(vault, command="watch", outcome=what, target=target, detail=detail,
                     argv=["mulligan", "watch", target.name])
    except Exception:
        pass


_ = time
