"""recover: three-way recovery of lost writes into the live database.

``plan_recovery`` reads BASE, LOST and CURRENT and says what a merge would do;
nothing is written. ``apply_recovery`` runs the guards the caller supplies
(confirmation, undo point, audit), then plans again under CURRENT's write lock
and applies in one transaction (see :mod:`mulligan.engines.sqlite.merge`).

Both take SQLite file paths. ``recover_target`` is the command's use case: STATE
specs of a protected target (vault states materialised as files), the
incident record, the identity check, the undo point.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import apsw

from ..engines.sqlite import identity
from ..engines.sqlite import merge_model as m
from ..engines.sqlite.merge_apply import already_applied_error, applied_before, apply_on_file, plan_on_file
from ..engines.sqlite.merge_diff import LostChanges, read_lost_changes
from ..engines.sqlite.merge_owner import owners
from ..errors import GuardRefused, NotADatabase, NotFound, UsageError


@dataclass
class RecoveryOptions:
    triggers: bool = False  # let the target's triggers fire while rows are replayed
    users_table: str | None = None  # whose rows are whose (default: auth_user, users, accounts)
    owner_columns: dict[str, str] = field(default_factory=dict)  # table -> column naming the owner
    busy_ms: int = 5000  # how long apply waits for the write lock
    again: bool = False  # apply even though these lost changes were merged into CURRENT before


@dataclass
class LostRow:
    """Where one lost change is now, and whose it is."""

    table: str
    change: str  # insert | update | delete: what LOST had done
    lost_key: tuple
    status: str  # replayed | remapped | merged | present | conflict | skipped
    key: tuple | None  # its key in CURRENT (after apply); None when not there
    detail: str = ""
    owner: dict | None = None  # {"user": key in LOST, "now": key in CURRENT or None, "label": ...}


@dataclass
class RecoveryPlan:
    base: str
    lost: str
    current: str
    merge: m.MergePlan
    rows: list[LostRow]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    triggers_enabled: bool = False

    @property
    def tables(self) -> dict[str, m.TablePlan]:
        return self.merge.tables

    @property
    def conflicts(self) -> list[m.Conflict]:
        return self.merge.conflicts

    @property
    def key_map(self) -> dict[str, dict[tuple, tuple]]:
        return self.merge.key_map

    @property
    def writes(self) -> int:
        return len(self.merge.writes)


@dataclass
class RecoveryResult:
    plan: RecoveryPlan  # as recomputed under the write lock and applied
    applied: bool
    undo_point: str | None = None
    lock_seconds: float = 0.0
    check_seconds: float = 0.0
    seconds: float = 0.0
    preexisting_fk_violations: list[dict] = field(default_factory=list)
    confirmed_by: str | None = None  # how the write was confirmed (typed name, --confirm, --yes)


@dataclass
class ApplyHooks:
    """What the caller (the CLI) supplies around the write; each may raise to refuse.

    ``confirm`` sees the plan computed before the lock (typed name, --confirm);
    ``take_undo_point`` saves CURRENT and returns the undo point's id;
    ``audit`` records the outcome ("done" or "failed") with a detail dict.
    """

    confirm: Callable[[RecoveryPlan], None] | None = None
    take_undo_point: Callable[[], str | None] | None = None
    audit: Callable[[str, dict], None] | None = None


def stamp_warnings(path: str, role: str) -> list[str]:
    """Check that ``path`` is a SQLite database; warn when it carries no Mulligan stamp."""
    if not os.path.exists(path):
        raise NotFound(f"{role}: no file at {path}")
    try:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        finally:
            conn.close()
    except apsw.Error as exc:
        raise NotADatabase(
            f"{role} ({path}) is not a SQLite database: {exc}",
            hint="BASE, LOST and CURRENT must be SQLite files or vault states",
        ) from None
    if identity.TABLE not in names:
        return [f"{role} ({path}) carries no Mulligan identity stamp: it is used as a plain SQLite file"]
    return []


def _rows(base: str, lost: str, changes: LostChanges, plan: m.MergePlan, options: RecoveryOptions) -> list[LostRow]:
    who = owners(base, lost, changes, plan, users_table=options.users_table, owner_columns=options.owner_columns)
    return [
        LostRow(o.table, o.change, o.lost_key, o.status, o.key, o.detail, who.get((o.table, o.lost_key)))
        for o in plan.outcomes
    ]


def _recovery_plan(base, lost, current, changes, merge_plan, options, warnings, started) -> RecoveryPlan:
    warns = list(warnings)
    for table, why in sorted(merge_plan.skipped_tables.items()):
        warns.append(f"table {table} is not merged: {why}")
    if merge_plan.triggers and not options.triggers:
        names = ", ".join(n for t in sorted(merge_plan.triggers) for n in merge_plan.triggers[t])
        warns.append(f"triggers will not fire while rows are replayed: {names}")
    if merge_plan.already_applied:
        a = merge_plan.already_applied
        warns.append(
            f"these lost changes were already merged into CURRENT at {a['applied_at']} ({a['writes']} writes): "
            "applying again would write the remapped rows a second time"
        )
    if merge_plan.no_counter:
        warns.append(
            f"no counter to raise for {', '.join(merge_plan.no_counter)} (INTEGER PRIMARY KEY without "
            "AUTOINCREMENT): new rows take the largest id + 1, so ids LOST used and deleted may be given out again"
        )
    rows = _rows(base, lost, changes, merge_plan, options)
    return RecoveryPlan(base, lost, current, merge_plan, rows, warns, time.perf_counter() - started, options.triggers)


def plan_recovery(base_path: str, lost_path: str, current_path: str, options: RecoveryOptions | None = None) -> RecoveryPlan:
    """What replaying LOST's changes into CURRENT would do. Nothing is written."""
    options = options or RecoveryOptions()
    started = time.perf_counter()
    warnings = []
    for role, path in (("BASE", base_path), ("LOST", lost_path), ("CURRENT", current_path)):
        warnings += stamp_warnings(path, role)
    changes = read_lost_changes(base_path, lost_path)
    merge_plan = plan_on_file(current_path, changes)
    return _recovery_plan(base_path, lost_path, current_path, changes, merge_plan, options, warnings, started)


def apply_recovery(
    base_path: str,
    lost_path: str,
    current_path: str,
    options: RecoveryOptions | None = None,
    hooks: ApplyHooks | None = None,
) -> RecoveryResult:
    """Confirm, take an undo point, then plan again under the write lock and apply in one transaction."""
    options = options or RecoveryOptions()
    hooks = hooks or ApplyHooks()
    started = time.perf_counter()
    warnings = []
    for role, path in (("BASE", base_path), ("LOST", lost_path), ("CURRENT", current_path)):
        warnings += stamp_warnings(path, role)
    changes = read_lost_changes(base_path, lost_path)
    prior = applied_before(current_path, changes)
    if prior is not None and not options.again:  # refuse before asking, and before any undo point
        raise already_applied_error(current_path, prior)
    if hooks.confirm is not None:
        preview = _recovery_plan(base_path, lost_path, current_path, changes, plan_on_file(current_path, changes),
                                 options, warnings, started)
        hooks.confirm(preview)
    undo = hooks.take_undo_point() if hooks.take_undo_point is not None else None
    try:
        res = apply_on_file(current_path, changes, triggers=options.triggers, busy_ms=options.busy_ms,
                            again=options.again)
    except Exception as exc:
        if hooks.audit is not None:
            hooks.audit("failed", {"undo_point": undo, "error": str(exc)})
        raise
    plan = _recovery_plan(base_path, lost_path, current_path, changes, res.plan, options, warnings, started)
    result = RecoveryResult(
        plan, True, undo, res.lock_seconds, res.check_seconds, time.perf_counter() - started,
        res.preexisting_fk_violations,
    )
    if res.preexisting_fk_violations:
        plan.warnings.append(
            f"CURRENT already had {len(res.preexisting_fk_violations)} foreign-key violation(s) the merge did not cause"
        )
    if hooks.audit is not None:
        hooks.audit("done", {
            "undo_point": undo,
            "writes": plan.writes,
            "conflicts": len(plan.conflicts),
            "remapped": sum(t.remapped for t in plan.tables.values()),
        })
    return result


# ---- a protected target: vault states, the incident, the undo point ------------------------


def recover_target(
    ws,
    target,
    *,
    base: str | None = None,
    lost: str | None = None,
    current: str = "live",
    incident_id: str | None = None,
    options: RecoveryOptions | None = None,
    apply: bool = False,
    confirm: Callable[[RecoveryPlan], str] | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> RecoveryPlan | RecoveryResult:
    """``recover NAME``: BASE, LOST and CURRENT as STATE specs (``live``, a snapshot, ``@TIME``, a file).

    With an incident, BASE and LOST default to the ones it records (keeping the
    outcome in it is the caller's, with the JSON of report/recover.py). Applying into the target itself checks its
    identity stamp, asks ``confirm`` (which returns how it was confirmed, or
    raises GuardRefused), takes an undo point, and records the merge as
    Mulligan's own write. A CURRENT other than ``live`` is a rehearsal on a
    copy: confirmed, but no undo point.
    """
    from contextlib import ExitStack

    from . import guards, incidents
    from .states import materialize, resolve_state

    options = options or RecoveryOptions()
    if incident_id:
        inc = incidents.get(ws.vault, incident_id)
        if not (base and lost):  # what the user gave wins; the record fills in only what is missing
            inc_base, inc_lost = incidents.recovery_states(inc)
            base, lost = base or inc_base, lost or inc_lost
    if not base or not lost:
        raise UsageError("recover needs --base STATE and --lost STATE, or --incident ID",
                         hint="BASE is the state that was restored by mistake, LOST the last good state before it")
    if apply and current != "live" and resolve_state(current, ws.vault, target).kind != "file":
        # a vault state is read into a scratch file deleted afterwards: a merge written there is lost
        raise UsageError(f"--apply cannot write into {current!r}: a restore point is read-only",
                         unchanged="nothing was planned or written",
                         hint="merge into live, or rehearse on a file: restore the point with --to PATH, "
                              "then pass --current PATH")
    with ExitStack() as stack:
        say(f"reading BASE ({base}) and LOST ({lost})")
        base_path = stack.enter_context(materialize(ws.vault, target, base))
        lost_path = stack.enter_context(materialize(ws.vault, target, lost))
        current_path = target.path if current == "live" else stack.enter_context(materialize(ws.vault, target, current))
        into_target = current_path == target.path
        if not apply:
            return _labelled(plan_recovery(base_path, lost_path, current_path, options), base, lost, current)
        confirmed = {}

        def check_and_confirm(plan: RecoveryPlan) -> None:
            if into_target:
                problems = guards.identity_problems(target, ws.engine(target).read_identity(target.path))
                if problems:
                    raise GuardRefused(problems[0], unchanged="nothing was written and no undo point was taken")
            if confirm is not None:
                confirmed["by"] = confirm(_labelled(plan, base, lost, current))

        def undo_point() -> str:
            from ..vault import KIND_UNDO
            from .inplace import UNDO_TAG
            from .snapshot import take_snapshot

            say("taking an undo point before writing")
            return take_snapshot(ws, target, kind=KIND_UNDO, tag=UNDO_TAG).id

        hooks = ApplyHooks(confirm=check_and_confirm, take_undo_point=undo_point if into_target else None)
        say(f"merging into {current_path}: planned again under its write lock, checked, one transaction")
        result = apply_recovery(base_path, lost_path, current_path, options, hooks)
        result.confirmed_by = confirmed.get("by")
        _labelled(result.plan, base, lost, current)
        if into_target:
            try:  # the merge is Mulligan's own commit: it must never count as live use afterwards
                guards.record_own_write(ws.vault, target, by="recover", detail={"undo_point": result.undo_point})
            except Exception as exc:  # bookkeeping after the commit must not hide that the merge is done
                result.plan.warnings.append(f"could not record the merge as Mulligan's own write: {exc}")
        return result


def _labelled(plan: RecoveryPlan, base: str, lost: str, current: str) -> RecoveryPlan:
    """Name the states as the user gave them, not by the scratch files they were read from."""
    plan.base, plan.lost = base, lost
    if current != "live":
        plan.current = current
    return plan
