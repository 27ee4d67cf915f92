"""prune: retention of restore points, then removal of data nothing references.

Never pruned: undo points, and points an open incident refers to. Data is
removed only while no writer holds a live lease (see vault/locks.py), so a
snapshot running at the same time never loses a chunk it deduplicated against.
Packs are removed whole, when none of their chunks is referenced; a pack with a
few live chunks stays (repacking is future work).
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field
from datetime import timedelta

from ..errors import IntegrityError, StorageError, UsageError
from ..model import Target
from ..storage import ObjectMissing
from ..timeparse import from_iso, utc_now
from ..vault import KIND_UNDO, Manifest, tree
from ..vault.locks import Lease, busy_writers, remove_dead_leases
from ..vault.packs import decode_index, encode_index, index_key, pack_key
from ..vault.workers import requests
from .workspace import Workspace

# How long prune waits for running writers (watch) to store what they hold and step aside.
YIELD_WAIT = 10.0
# Temporary files of unfinished writes older than this are removed (a put writes its file in
# well under a second; a writer paused longer than its lease's two minutes counts as dead).
TEMP_AGE = 600.0

# Other record kinds (capture segments) add the chunk ids they reference here:
# each is a function (workspace) -> set of 16-byte chunk ids.
EXTRA_REFERENCES: list = []
# Functions (workspace, target, keep_within) -> set of snapshot ids that must be kept.
EXTRA_PINS: list = []


@dataclass
class PruneResult:
    target: str
    kept: list[dict] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    packs_removed: int = 0
    bytes_freed: int = 0
    data_removal: str = "done"  # done | dry-run | deferred (a writer was running)
    dry_run: bool = False
    temp_files_removed: int = 0  # left in the vault by writes that never finished
    temp_bytes_freed: int = 0
    dead_leases_removed: int = 0  # lease objects of processes killed while holding them

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _incident_pins(ws: Workspace, target: Target) -> set[str]:
    pins: set[str] = set()
    for key, _ in ws.vault.storage.list(f"incidents/{target.id}/"):
        try:
            rec = ws.vault.get_json(key)
        except Exception:
            continue
        if rec.get("status", "open") == "open":
            pins.update(x for x in rec.get("snapshot_refs", []) if x)
    return pins


def choose(manifests: list[Manifest], *, keep_within=None, keep_last=None, keep_hourly=None, keep_daily=None,
           pins: dict[str, str] | None = None, now=None) -> dict[str, str]:
    """Map snapshot id -> reason kept. Manifests not in the map are removed. ``pins``: ids never
    removed, as {id: why}."""
    pins = pins or {}
    now = now or utc_now()
    keep: dict[str, str] = {}
    newest_first = sorted(manifests, key=lambda m: m.time, reverse=True)
    for m in newest_first:
        if m.kind == KIND_UNDO:
            keep[m.id] = "undo point"
        elif m.id in pins:
            keep[m.id] = pins[m.id]
    history = [m for m in newest_first if m.kind != KIND_UNDO]
    if keep_within is not None:
        for m in history:
            if from_iso(m.time) >= now - keep_within:
                keep.setdefault(m.id, "within window")
    if keep_last:
        for m in history[:keep_last]:
            keep.setdefault(m.id, "last")
    for n, fmt, label in ((keep_hourly, "%Y-%m-%dT%H", "hourly"), (keep_daily, "%Y-%m-%d", "daily")):
        if not n:
            continue
        seen: set[str] = set()
        for m in history:
            bucket = from_iso(m.time).strftime(fmt)
            if bucket not in seen:
                seen.add(bucket)
                keep.setdefault(m.id, label)
                if len(seen) >= n:
                    break
    return keep


def referenced_chunks(ws: Workspace) -> set[bytes]:
    vault = ws.vault
    # The chunk index is not held (Vault.lean): tree nodes are looked up an index object at a
    # time, so memory is the referenced ids (~100 bytes each), not the index as well (~195 more).
    vault.lean_if_large(limit=0)
    trees = {(bytes.fromhex(m.root), m.depth) for m in vault.manifests(direct=True)}
    refs = tree.reachable(trees, lambda ids: vault.iter_chunks(ids, tree=True))
    for extra in EXTRA_REFERENCES:
        refs |= extra(ws)
    return refs


def prune(ws: Workspace, target: Target, *, keep_within: timedelta | None = None, keep_last: int | None = None,
          keep_hourly: int | None = None, keep_daily: int | None = None, dry_run: bool = False) -> PruneResult:
    if not any(x is not None for x in (keep_within, keep_last, keep_hourly, keep_daily)):
        raise UsageError("prune needs at least one --keep-... rule",
                         hint="for example --keep-within 7d --keep-daily 30; add --dry-run to see what would go")
    vault, st = ws.vault, ws.vault.storage
    manifests = vault.manifests(target.id)
    pins = dict.fromkeys(_incident_pins(ws, target), "open incident")
    for extra in EXTRA_PINS:  # each gives {id: why kept}
        for sid, why in extra(ws, target, keep_within).items():
            pins.setdefault(sid, why)
    keep = choose(manifests, keep_within=keep_within, keep_last=keep_last, keep_hourly=keep_hourly,
                  keep_daily=keep_daily, pins=pins)
    res = PruneResult(target=target.name, dry_run=dry_run)
    for m in manifests:
        row = {"id": m.id, "time": m.time, "kind": m.kind, "tag": m.tag}
        if m.id in keep:
            res.kept.append({**row, "reason": keep[m.id]})
        else:
            res.removed.append(row)
    if dry_run:
        res.data_removal = "dry-run"
        return res
    lease = Lease(st, "prune", f"prune {target.name}").acquire()
    try:
        for m in manifests:
            if m.id not in keep:
                vault.delete_manifest(m)
        try:
            vault.refresh_catalog(target.id, always=True)
        except (StorageError, IntegrityError):
            pass  # a cache: readers fall back to the manifests, the next prune tries again
        if busy_writers(st, wait=YIELD_WAIT):  # a running watch steps aside within about a second
            res.data_removal = "deferred"
            return res
        refs = referenced_chunks(ws)
        _collect(ws, refs, res)
        res.temp_files_removed, res.temp_bytes_freed = st.sweep(TEMP_AGE)
        res.dead_leases_removed = remove_dead_leases(st)
    finally:
        lease.release()
    return res


def _collect(ws: Workspace, refs: set[bytes], res: PruneResult) -> None:
    st = ws.vault.storage
    dead_packs: set[bytes] = set()
    named: dict[str, set[bytes]] = {}  # index object -> the packs it names (its entries are not held)
    for key, data in ws.vault.get_many(list(st.list("index/"))):  # several at once on an object store
        if data is None:  # its packs would look unindexed, hence dead: stop rather than guess
            raise ObjectMissing(f"index object {key} vanished while prune read it",
                                unchanged="no data was removed", hint="run the prune again")
        packs = decode_index(data, key)
        named[key] = set(packs)
        for pack_id, entries in packs.items():
            if not any(e[0] in refs for e in entries):
                dead_packs.add(pack_id)
        del packs, data
    indexed = set().union(*named.values())
    sizes = {}
    for key, size in st.list("packs/"):  # packs left by interrupted writes, never indexed
        pid = bytes.fromhex(key.rsplit("/", 1)[-1])
        sizes[pid] = size
        if pid not in indexed:
            dead_packs.add(pid)
    if not dead_packs:
        return
    # New indexes first, then old indexes, then the packs: a crash leaves only garbage.
    for key, pack_ids in named.items():
        if pack_ids & dead_packs:
            try:  # read again (no writer rewrites index objects while prune holds its lease)
                packs = decode_index(st.get(key), key)
            except ObjectMissing:
                raise ObjectMissing(f"index object {key} vanished while prune rewrote the indexes",
                                    unchanged="no pack was removed", hint="run the prune again") from None
            remaining = [(p, e) for p, e in packs.items() if p not in dead_packs]
            if remaining:
                st.put(index_key(os.urandom(16)), encode_index(remaining))
            st.delete(key)
    # The packs last, in any order among themselves: several at once on an object store.
    ahead = st.read_ahead
    if ahead > 1:
        list(requests(ahead).map(lambda pid: st.delete(pack_key(pid)), dead_packs))
    else:
        for pid in dead_packs:
            st.delete(pack_key(pid))
    res.packs_removed += len(dead_packs)
    res.bytes_freed += sum(sizes.get(pid, 0) for pid in dead_packs)
    ws.vault._index = None
    ws.vault._loaded_index_keys = set()


from . import capture_retention as _capture_retention  # noqa: E402  (segments reference chunks)

_capture_retention.register()
