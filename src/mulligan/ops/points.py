"""Choosing a restore point: --snapshot ID, --at TIME, --latest, or a STATE spec."""

from __future__ import annotations

from ..errors import GuardRefused, NotFound, UsageError
from ..model import Target
from ..timeparse import from_iso, iso, parse_time
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
        m = vault.resolve(snapshot)
        if target is not None and m.target_id != target.id and not allow_cross_target:
            raise GuardRefused(
                f"restore point {m.id} belongs to target {m.target_name!r}, not {target.name!r}",
                unchanged="nothing was written",
                hint="pick a restore point of this target ('mulligan snapshots NAME'), or pass --allow-cross-target if you mean it",
            )
        return m
    assert target is not None
    if latest:
        m = vault.latest(target.id)
        if m is None:
            raise NotFound(f"target {target.name!r} has no restore point yet", hint=f"take one with 'mulligan snapshot {target.name}'")
        return m
    when = parse_time(at)
    return point_at(vault, target, when)


def point_at(vault: Vault, target: Target, when) -> Manifest:
    """The newest restore point of the target's own history at or before ``when``."""
    candidates = [m for m in vault.manifests(target.id) if m.kind != KIND_UNDO and from_iso(m.time) <= when]
    if not candidates:
        raise NotFound(
            f"target {target.name!r} has no restore point at or before {iso(when)}",
            hint=f"list them with 'mulligan snapshots {target.name}'",
        )
    return candidates[-1]
