"""Choosing a restore point: --snapshot ID, --at TIME, --latest, or a STATE spec."""

from __future__ import annotations

from ..errors import GuardRefused, NotFound, UsageError
from ..model import Target
from ..timeparse import from_iso, human_age, iso, parse_time
from ..vault import KIND_UNDO, Manifest, Vault


def resolve_point(
    vault: Vault,
    target: Target | None,
    *,
    snapshot: str | None = None,
    at: str | None = None,
    latest: bool = False,
    allow_cross_target: bool = False,
) -> Manifest:
    chosen = [x for x in (snapshot, at, latest or None) if x]
    if len(chosen) != 1:
        raise UsageError("choose exactly one of --snapshot ID, --at TIME or --latest")
    if snapshot:
        from .capture_store import is_commit_id, resolve_commit

        m = resolve_commit(vault, snapshot) if is_commit_id(snapshot) else vault.resolve(snapshot)
        if target is not None and m.target_id != target.id and not allow_cross_target:
            raise GuardRefused(
                f"restore point {m.id} belongs to target {m.target_name!r}, not {target.name!r}",
                unchanged="nothing was written",
                hint="pick a restore point of this target ('mulligan snapshots NAME'), or pass --allow-cross-target if you mean it",
            )
        return m
    assert target is not None
    if latest:
        from .capture_store import latest_point

        m = latest_point(vault, target)
        if m is None:
            raise NotFound(f"target {target.name!r} has no restore point yet", hint=f"take one with 'mulligan snapshot {target.name}'")
        return m
    when = parse_time(at)
    return point_at(vault, target, when)


# A capture is known to run up to its watcher's last heartbeat (written every 5 s by default).
HEARTBEAT_SLACK = 15.0


def gap_at(vault: Vault, target: Target, when) -> str | None:
    """A warning when capture did not cover ``when``: it falls in a gap (the database changed
    then without being captured), or after the last moment a watcher is known to have been
    capturing (watch stopped or died, and nobody noticed: the state restored is older than
    asked). Snapshot-only targets get none: they never had more."""
    from . import capture_store

    try:
        bases = capture_store.capture_bases(vault, target.id)  # the manifests resolving the point listed
        if not bases:
            return None
        for g in capture_store.gaps(bases):
            if g.get("from") and g.get("to") and from_iso(g["from"]) <= when < from_iso(g["to"]):
                return (f"{iso(when)} falls in a gap of capture ({g['from']} to {g['to']}: "
                        f"{g.get('reason') or 'not captured'}): the database changed then without being "
                        "captured; the state restored is the last one captured before the gap")
        until = 0.0
        try:
            hb = vault.get_json(capture_store.status_key(target.id))
        except Exception:  # noqa: BLE001 - no heartbeat: the last commit captured is all that is known
            hb = None
        if hb and hb.get("capturing", True) and hb.get("heartbeat_ts"):
            until = float(hb["heartbeat_ts"])
        if when.timestamp() - until > HEARTBEAT_SLACK:  # the heartbeat does not settle it: the last commit
            last = capture_store.last_commit(vault, bases[-1])
            until = max(until, last[1] if last else from_iso(bases[-1].time).timestamp())
    except Exception:  # noqa: BLE001 - a warning must not keep the restore from happening
        return None
    late = when.timestamp() - until
    if late > HEARTBEAT_SLACK:
        return (f"{iso(when)} is {human_age(late)} after the last moment capture is known to have run "
                f"({iso(until)}): commits made since are not in the vault (is watch running?); the state "
                "restored is the last one captured")
    return None


def point_at(vault: Vault, target: Target, when) -> Manifest:
    """The newest restore point of the target's own history at or before ``when``
    (a captured commit when watch was running, else a snapshot)."""
    from . import capture_store

    hit = capture_store.point_at(vault, target, when)
    if hit is not None:
        return hit
    candidates = [m for m in vault.manifests(target.id) if m.kind != KIND_UNDO and from_iso(m.time) <= when]
    if not candidates:
        raise NotFound(
            f"target {target.name!r} has no restore point at or before {iso(when)}",
            hint=f"list them with 'mulligan snapshots {target.name}'",
        )
    return candidates[-1]
