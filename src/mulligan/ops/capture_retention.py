"""Capture segments in prune and verify.

prune: chunks that segments reference are referenced data; segments whose base
snapshot was removed are removed with it; the base whose chain reaches into
``--keep-within``'s window is kept (every commit of the window stays
restorable), and so is the base the newest chain grows from.
verify: every segment decodes, names a base that exists, and every chunk it
names is sound (read by verify, or in a pack written since it listed them).
"""

from __future__ import annotations

from ..errors import MulliganError
from ..timeparse import utc_now
from . import capture_store as cs
from .workspace import Workspace


def referenced(ws: Workspace) -> set[bytes]:
    vault = ws.vault
    existing = {(m.target_id, m.id) for m in vault.manifests()}
    refs: set[bytes] = set()
    for (tid, base_id), keys in cs.all_segment_bases(vault).items():
        if (tid, base_id) not in existing:
            for key in keys:  # the base is gone: its commits cannot be restored any more
                vault.storage.delete(key)
            continue
        for key in keys:
            refs.update(bytes.fromhex(c) for c in cs.load_segment(vault, key)["chunks"])
    return refs


def pins(ws: Workspace, target, keep_within=None) -> dict[str, str]:
    """{base id: why kept}: the base the newest chain grows from, and those whose chains reach
    into ``--keep-within``'s window."""
    bases = cs.capture_bases(ws.vault, target.id)
    if not bases:
        return {}
    out = {bases[-1].id: "capture base: the newest commits grow from it"}
    if keep_within is not None:
        start = (utc_now() - keep_within).timestamp()
        for i, b in enumerate(bases):
            nxt = cs._ts(bases[i + 1]) if i + 1 < len(bases) else float("inf")
            if nxt > start:
                out.setdefault(b.id, "capture base: its commits reach into the window")
    return out


def check(ws: Workspace, res, target_id: str | None, sound) -> None:
    """Every chunk a capture segment names must be sound (``sound``: what verify read)."""
    vault = ws.vault
    # From the keys, not the bodies: a damaged manifest is verify's own finding, not a reason to stop.
    existing = {tuple(k.split("/")[1:3]) for k, _ in vault.storage.list("snapshots/") if k.count("/") == 2}
    unread: dict[str, list[bytes]] = {}  # segment -> its chunks verify did not find sound
    for (tid, base_id), keys in cs.all_segment_bases(vault).items():
        if target_id and tid != target_id:
            continue
        if (tid, base_id) not in existing:
            res.notes.append(f"capture segments of removed base {base_id} remain ({len(keys)}); prune removes them")
        for key in keys:
            try:
                seg = cs.load_segment(vault, key)
            except MulliganError as exc:
                res.problem(key, exc.message)
                continue
            ids = [c for c in map(bytes.fromhex, seg["chunks"]) if c not in sound.good]
            if ids:
                unread[key] = ids
    bad = set(sound.unsound(c for ids in unread.values() for c in ids))  # one look-up for them all
    for key, ids in unread.items():
        missing = [c for c in ids if c in bad]
        if missing:
            res.problem(key, f"capture segment needs {len(missing)} chunks that are missing or damaged "
                             f"(first: {missing[0].hex()})")


def register() -> None:
    from . import prune, verify

    if referenced not in prune.EXTRA_REFERENCES:
        prune.EXTRA_REFERENCES.append(referenced)
    if pins not in prune.EXTRA_PINS:
        prune.EXTRA_PINS.append(pins)
    if check not in verify.EXTRA_CHECKS:
        verify.EXTRA_CHECKS.append(check)
