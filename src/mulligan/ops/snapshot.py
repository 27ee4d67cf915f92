"""snapshot: one consistent snapshot of a live database into the vault."""

from __future__ import annotations

from typing import Callable

from ..engines.sqlite.reader import StateMoved
from ..errors import GuardRefused, MulliganError
from ..model import Target
from ..timeparse import iso, utc_now
from ..vault import KIND_SNAPSHOT, Manifest, blocks, tree
from .workspace import Workspace

Progress = Callable[[int, int], None]  # (pages done in this step, total pages)


def check_identity(ws: Workspace, target: Target) -> dict:
    """The identity inside the database must be this target's."""
    ident = ws.engine(target).read_identity(target.path)
    if ident is None:
        return {"stamp": "missing"}
    if ident.target_id != target.id:
        raise GuardRefused(
            f"the database at {target.path} says it is target {ident.name!r} ({ident.env}, id {ident.target_id}), "
            f"but the configuration says target {target.name!r} (id {target.id})",
            unchanged="nothing was read or written",
            hint="check which file is at that path; the configuration and the stamp must agree",
        )
    return {"stamp": "ok", "generation": ident.generation, "kind": ident.kind}


def take_snapshot(
    ws: Workspace,
    target: Target,
    *,
    tag: str | None = None,
    kind: str = KIND_SNAPSHOT,
    progress: Progress | None = None,
    check_stamp: bool = True,
) -> Manifest:
    stamp = check_identity(ws, target) if check_stamp else {}
    # Over a long history the chunk index is not loaded (memory would grow with it): the snapshot
    # then deduplicates against the pages of the points the database most likely still shares.
    likely = (lambda: likely_pages(ws, target)) if ws.vault.lean_if_large() else None
    eng = ws.engine(target)
    cache = ws.cache_file(target, "blocks")
    previous = blocks.load(cache)
    for attempt in range(5):
        with eng.consistent_state(target.path) as state:
            seen_at = iso(utc_now())
            total = state.page_count
            cb = (lambda n: progress(n, total)) if progress else None
            meta = state.meta  # the reader adds to it while pages stream (e.g. writer_pause_ms)
            meta.update({**stamp, "path": target.path, "env": target.env})
            try:
                m = ws.vault.save_pages(
                    target_id=target.id,
                    target_name=target.name,
                    page_size=state.page_size,
                    batches=state.batches(),
                    time=seen_at,
                    kind=kind,
                    tag=tag,
                    meta=meta,
                    progress=cb,
                    previous=previous,
                    likely=likely,
                )
            except StateMoved:
                continue
            blocks.save(cache, m.block_digests)  # best effort: without it the next snapshot hashes every page
            return m
    raise StateMoved(f"the WAL of {target.path} kept restarting during the snapshot", hint="run the command again")


def likely_pages(ws: Workspace, target: Target) -> set[bytes]:
    """The chunk ids a snapshot of the target most likely shares with stored points: the pages
    (and tree nodes) of its newest restore point (its last captured commit, or its last
    snapshot), of its newest stored tree, and of the point Mulligan last put in place (an undo
    snapshot right after a restore in place). Only an economy: the caller keeps those the vault
    holds now."""
    from . import liveuse
    from .points import resolve_point

    points = []
    try:
        points.append(resolve_point(ws.vault, target, snapshot=None, at=None, latest=True))
    except MulliganError:
        pass
    try:  # the newest stored tree (a snapshot, or watch's base): a captured commit has none of its own
        newest = ws.vault.latest(target.id)
    except MulliganError:
        newest = None
    if newest is not None and not any(m.id == newest.id for m in points):
        points.append(newest)
    put = ((liveuse.own_record(ws.vault, target.id) or {}).get("detail") or {}).get("point")
    if put and not any(m.id == put for m in points):
        try:
            points.append(ws.vault.resolve(put))
        except MulliganError:
            pass  # pruned since, or no longer readable
    vault, out, trees = ws.vault, set(), set()
    for m in points:
        resolved = getattr(m, "resolved_ids", None)  # a captured commit: its pages, no tree of its own
        if resolved is not None:
            out.update(resolved)
        else:
            trees.add((bytes.fromhex(m.root), m.depth))
    try:
        if trees:  # nodes and pages, a tree level at a time for all of them
            out |= tree.reachable(trees, lambda ids: vault.iter_chunks(ids, tree=True))
    except (MulliganError, ValueError):
        pass  # unreadable: what is left is only stored again
    return out
