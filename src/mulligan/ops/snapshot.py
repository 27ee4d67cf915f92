"""snapshot: one consistent snapshot of a live database into the vault."""

from __future__ import annotations

from typing import Callable

from ..engines.sqlite.reader import StateMoved
from ..errors import GuardRefused
from ..model import Target
from ..timeparse import iso, utc_now
from ..vault import KIND_SNAPSHOT, Manifest, blocks
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
                )
            except StateMoved:
                continue
            blocks.save(cache, m.block_digests)  # best effort: without it the next snapshot hashes every page
            return m
    raise StateMoved(f"the WAL of {target.path} kept restarting during the snapshot", hint="run the command again")
