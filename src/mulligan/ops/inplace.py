"""restore --in-place and undo: replace a target's own database, guarded, after an undo point.

The order is fixed (docs/restoring-safely.md):

1. ``prepare`` gathers the plan — who the target is, how fresh it is, the point
   and what would be lost — and every guard's verdict (identity, cross-target,
   live use). Any refusal raises :class:`GuardRefused` carrying the plan.
2. The caller confirms (``guards.confirm``: the typed name for production).
3. ``apply`` checks live use again (time passed at the prompt), takes the undo
   point — only now, after every guard passed — and replaces the content
   through SQLite (engines/sqlite/replace.py), then records the write as
   Mulligan's own so that an ``undo`` right after it is not refused as live use.

``undo`` is the same with the newest undo point as the point; since ``apply``
takes an undo point of its own first, a second ``undo`` returns to the state
before the first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import apsw

from ..engines.sqlite import replace as sqlite_replace
from ..errors import GuardRefused, MulliganError, NotFound
from ..model import Identity, Target
from ..runtime import hostname
from ..timeparse import from_iso, iso, utc_now
from ..vault import KIND_UNDO, Manifest
from ..vault.locks import Lease, live_leases
from . import guards, liveuse
from .restore import point_pages
from .snapshot import take_snapshot
from .workspace import Workspace

UNDO_TAG = "undo"


@dataclass
class Plan:
    """What an in-place change would do, and what each guard said about it."""

    action: str  # restore | undo
    target: Target
    host: str
    point: Manifest
    identity: Identity | None
    last_write: dict
    live: liveuse.LiveUse
    loss: dict
    newer_points: int
    commits_since: int | None = None  # commits by others captured by watch after the point
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # what to do about the refusals
    force_live: bool = False
    window: float = liveuse.LIVE_WINDOW
    scratch: str = ""

    def to_json(self) -> dict:
        p, t = self.point, self.target
        age = (utc_now() - from_iso(p.time)).total_seconds()
        return {
            "action": self.action,
            "target": {"name": t.name, "id": t.id, "env": t.env, "production": t.is_production, "path": t.path,
                       "host": self.host},
            "identity": self.identity.to_json() if self.identity else None,
            "last_write": self.last_write,
            "point": {"id": p.id, "time": p.time, "age_seconds": round(age, 3), "kind": p.kind, "tag": p.tag,
                      "target": p.target_name, "target_id": p.target_id, "env": p.meta.get("env")},
            "loss": self.loss,
            "newer_restore_points": self.newer_points,
            "commits_since": self.commits_since,
            "live_use": self.live.to_json(),
            "warnings": self.warnings,
            "refusals": self.refusals,
        }


@dataclass
class InplaceResult:
    plan: Plan
    undo_point: Manifest
    identity: Identity
    confirmed_by: str
    seconds: float

    def to_json(self) -> dict:
        return {
            "action": self.plan.action,
            "target": self.plan.target.name,
            "path": self.plan.target.path,
            "restored": {"id": self.plan.point.id, "time": self.plan.point.time, "kind": self.plan.point.kind},
            "undo_point": {"id": self.undo_point.id, "time": self.undo_point.time},
            "identity": self.identity.to_json(),
            "confirmed_by": self.confirmed_by,
            "seconds": round(self.seconds, 3),
            "plan": self.plan.to_json(),
        }


def last_undo_point(ws: Workspace, target: Target) -> Manifest:
    points = [m for m in ws.vault.manifests(target.id) if m.kind == KIND_UNDO]
    if not points:
        raise NotFound(f"target {target.name!r} has no undo point: nothing was replaced in place yet",
                       unchanged=f"{target.path} was not changed")
    return points[-1]


@contextmanager
def prepare(ws: Workspace, target: Target, point: Manifest, *, action: str = "restore", force_live: bool = False,
            allow_cross_target: bool = False, window: float = liveuse.LIVE_WINDOW,
            jobs: int | None = None) -> Iterator[Plan]:
    """Yield the plan with the point written to a scratch file beside the target; refuse with the plan as evidence."""
    path = target.path
    file_format = sqlite_replace.journal_mode_and_page_size(path)  # raises NotFound / NotADatabase first
    live = liveuse.live_use(path, ws.vault, target.id, window)  # file-level facts before any connection of ours
    wrote_at, wrote_what = sqlite_replace.last_write(path)
    identity = ws.engine(target).read_identity(path)
    scratch_dir = tempfile.mkdtemp(prefix=".mulligan-inplace-", dir=os.path.dirname(path))
    try:
        scratch = os.path.join(scratch_dir, "point.db")
        ws.engine(target).write_new(scratch, point.page_size, point.page_count, point_pages(ws.vault, point, jobs))
        history = ws.vault.manifests(target.id)
        newer = sum(1 for m in history if m.kind != KIND_UNDO and m.time > point.time)
        plan = Plan(action, target, hostname(), point, identity,
                    {"time": iso(wrote_at), "age_seconds": round(max(time.time() - wrote_at, 0.0), 3), "file": wrote_what},
                    live, _loss(path, scratch), newer, _commits_since(ws, target, point, history),
                    force_live=force_live, window=window, scratch=scratch)
        _judge(plan, allow_cross_target, *file_format)
        if plan.refusals:
            more = f" (and {len(plan.refusals) - 1} more reason(s), listed in the plan)" if len(plan.refusals) > 1 else ""
            raise GuardRefused(plan.refusals[0] + more, unchanged=f"{path} was not changed and no undo point was taken",
                               hint="; ".join(dict.fromkeys(plan.hints)), details={"plan": plan.to_json()})
        yield plan
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def _judge(plan: Plan, allow_cross_target: bool, mode: str, page_size: int) -> None:
    t, p = plan.target, plan.point

    def refuse(reason: str, hint: str) -> None:
        plan.refusals.append(reason)
        plan.hints.append(hint)

    for problem in guards.identity_problems(t, plan.identity):
        refuse(problem, "check which file is at that path: the configuration and the stamp inside the database must agree")
    if p.target_id != t.id:
        if allow_cross_target:
            plan.warnings.append(f"the restore point belongs to another target, {p.target_name!r} (--allow-cross-target)")
        else:
            refuse(f"restore point {p.id} belongs to target {p.target_name!r}, not {t.name!r}",
                   "pick a restore point of this target ('mulligan snapshots NAME'), or pass --allow-cross-target")
    if p.meta.get("env") == "production" and t.env != "production":
        plan.warnings.append(f"production data of {p.target_name!r} goes into {t.env} database {t.name!r}: "
                             "it carries personal data, treat the copy like production")
    if mode == "wal" and page_size != p.page_size:
        refuse(f"the database uses {page_size}-byte pages in WAL mode and the point {p.page_size}-byte pages: "
               "SQLite cannot copy between them in place", "restore into a new database with --to instead")
    if plan.live.live:
        if plan.force_live:
            plan.warnings.append(f"in live use, replaced anyway (--force-live): {plan.live.evidence()}")
        else:
            refuse(f"{t.path} is in live use: {plan.live.evidence()}",
                   "stop the application first, or pass --force-live if you are sure "
                   "(its open connections will see the new content)")


def _loss(now_path: str, point_path: str) -> dict:
    """Per table, the rows that differ between now and the point (the row diff; row counts without it)."""
    sizes = {"size_now": os.path.getsize(now_path), "size_then": os.path.getsize(point_path)}
    try:
        from .diff import diff_states
    except ImportError:
        return {"method": "row counts", **sizes, "tables": _counts(now_path, point_path)}
    try:
        d = diff_states(now_path, point_path, limit=0)
    except (MulliganError, apsw.Error) as exc:  # the plan must not fail for want of a diff
        return {"method": "row counts", **sizes, "tables": _counts(now_path, point_path),
                "note": f"the row diff failed ({exc}); row counts instead"}
    tables = [{"table": t.name, "lost": t.deleted, "changed": t.updated, "returning": t.inserted, "status": t.status}
              for t in d.tables if t.changes or t.status != "same"]
    totals = d.totals()
    return {"method": "row diff", **sizes, "tables": tables,
            "totals": {"lost": totals["deleted"], "changed": totals["updated"], "returning": totals["inserted"]},
            "schema_changes": len(d.schema)}


def _commits_since(ws: Workspace, target: Target, point: Manifest, history: list[Manifest]) -> int | None:
    """Commits by others that ``watch`` captured after the point; None without continuous capture."""
    try:
        from . import capture_store as cs
    except ImportError:
        return None
    try:
        since = from_iso(point.time).timestamp()
        bases = sorted(cs.capture_bases(ws.vault, target.id, history), key=lambda m: m.time)
        if not bases:
            return None
        first = max([i for i, b in enumerate(bases) if b.time <= point.time] or [0])
        n = 0
        for base in bases[first:]:
            for key in cs.segment_keys(ws.vault, target.id, base.id):
                n += sum(1 for c in cs.load_segment(ws.vault, key)["commits"]
                         if c["t"] > since and not str(c.get("by", "app")).startswith("mulligan"))
        return n
    except (MulliganError, KeyError, TypeError, ValueError):
        return None  # a capture format this code does not know: the plan says nothing rather than something wrong


def _counts(now_path: str, point_path: str) -> list[dict]:
    from ..engines.sqlite.engine import open_conn
    from ..engines.sqlite.identity import is_internal

    def counts(p: str) -> dict[str, int]:
        conn = open_conn(p, readonly=True)
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
            return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchall()[0][0] for n in names if not is_internal(n)}
        finally:
            conn.close()

    now, then = counts(now_path), counts(point_path)
    return [{"table": n, "rows_now": now.get(n), "rows_then": then.get(n)}
            for n in sorted(set(now) | set(then)) if now.get(n) != then.get(n)]


def apply(ws: Workspace, plan: Plan, *, confirmed_by: str) -> InplaceResult:
    """Take the undo point, then replace the target's content with the plan's point."""
    started = time.monotonic()
    t = plan.target
    if not plan.force_live:
        live = liveuse.live_use(t.path, ws.vault, t.id, plan.window)
        if live.live:
            raise GuardRefused(f"{t.path} came into live use while the plan was shown: {live.evidence()}",
                               unchanged=f"{t.path} was not changed and no undo point was taken",
                               hint="stop the application first, or pass --force-live", details={"plan": plan.to_json()})
    problems = guards.identity_problems(t, ws.engine(t).read_identity(t.path))
    if problems:
        raise GuardRefused(problems[0], unchanged=f"{t.path} was not changed and no undo point was taken")
    with _one_at_a_time(ws, t):
        undo = _take_undo_point(ws, t)
        replaced = sqlite_replace.replace_content(t.path, plan.scratch)
        marker = sqlite_replace.commit_marker(t.path)  # before the digest read: a later commit must not pass as ours
        liveuse.record_own_write(ws.vault, t, by=f"{plan.action} in place", marker=marker,
                                 digest=liveuse.state_digest(t.path, ws.vault.codec),
                                 detail={"point": plan.point.id, "undo_point": undo.id,
                                         "generation": replaced.identity_after.generation})
    return InplaceResult(plan, undo, replaced.identity_after, confirmed_by, time.monotonic() - started)


@contextmanager
def _one_at_a_time(ws: Workspace, t: Target) -> Iterator[None]:
    """Two in-place changes of one target at once would each keep an undo point of half the story.
    Each holds a lease in the vault and looks for another (both write before they look)."""
    purpose = f"in-place change of {t.name} ({t.id})"
    lease = Lease(ws.vault.storage, "writer", purpose).acquire()
    try:
        others = [o for o in live_leases(ws.vault.storage, "writer", exclude=lease.key) if o.get("purpose") == purpose]
        if others:
            o = others[0]
            raise GuardRefused(f"another in-place change of {t.name!r} is running (pid {o.get('pid')} on {o.get('host')})",
                               unchanged=f"{t.path} was not changed and no undo point was taken",
                               hint="wait for it to finish, then run the command again and read the new plan")
        yield
    finally:
        lease.release()


def _take_undo_point(ws: Workspace, t: Target) -> Manifest:
    """Snapshot the target as it is; make sure no commit slipped in while it was read."""
    for _ in range(3):
        before = sqlite_replace.commit_marker(t.path)
        undo = take_snapshot(ws, t, tag=UNDO_TAG, kind=KIND_UNDO)
        if sqlite_replace.commit_marker(t.path) == before or liveuse.state_digest(t.path, ws.vault.codec) == undo.root:
            return undo
    raise GuardRefused(f"{t.path} kept changing while the undo point was taken: it is in live use",
                       unchanged=f"{t.path} was not changed", hint="stop the application first, then run the command again")
