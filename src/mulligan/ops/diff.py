"""diff: row-level differences between two states of a database.

``diff_states`` works on two SQLite files; ``diff`` resolves STATE specs (live,
a snapshot id or prefix, @TIME, a file). A state that is already a file is
never copied. A vault state is not restored either: SQLite reads it page by
page from the vault (through a read-only VFS), and only the pages the
comparison needs are fetched; pages whose chunk ids are equal on both sides are
known to be equal without being fetched at all.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..engines.sqlite.diff import DatabaseDiff, SchemaChange, TableDiff, diff_files
from ..engines.sqlite.vault_vfs import ChunkCache, VirtualImage
from ..errors import UsageError
from ..model import Target
from ..vault import Manifest, Vault
from .states import StateRef, resolve_state
from .workspace import Workspace

__all__ = ["DiffResult", "diff", "diff_states", "open_states", "resolve_pair", "vault_image",
           "DatabaseDiff", "TableDiff", "SchemaChange"]


@dataclass
class DiffResult:
    """What ``diff`` found, and between which states."""

    from_state: dict
    to_state: dict
    target: str | None
    diff: DatabaseDiff
    seconds: float = 0.0
    options: dict = field(default_factory=dict)

    @property
    def tables(self) -> list[TableDiff]:
        return self.diff.tables

    @property
    def schema(self) -> list[SchemaChange]:
        return self.diff.schema

    @property
    def has_differences(self) -> bool:
        return bool(self.diff.changed_tables or self.diff.schema)


def diff_states(from_path, to_path, *, tables: list[str] | None = None, limit: int | None = None,
                rebuild: bool = False, compare_pages: bool = True) -> DatabaseDiff:
    """Compare two states (paths of SQLite files, or vault images from :func:`vault_image`).

    ``limit`` caps the rows kept per table; counts stay whole. ``rebuild`` also
    reads every TO row of tables whose schema changed (the SQL output needs them).
    """
    return diff_files(from_path, to_path, tables=tables, limit=limit, rebuild=rebuild,
                      compare_pages=compare_pages)


def resolve_pair(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str) -> tuple[StateRef, StateRef]:
    vault = ws.vault if ws is not None else None
    refs = resolve_state(from_spec, vault, target), resolve_state(to_spec, vault, target)
    if target is None and any(r.kind != "file" for r in refs):
        raise UsageError("states other than file paths need a target NAME", hint="mulligan diff NAME FROM TO")
    return refs  # type: ignore[return-value]


def vault_image(vault: Vault, m: Manifest, cache: ChunkCache | None = None,
                ids: list[bytes] | None = None) -> VirtualImage:
    """A vault state readable by the diff without restoring it."""
    if m.engine != "sqlite":
        raise UsageError(f"restore point {m.id} is a {m.engine} state; diff reads SQLite states")
    cache = cache or ChunkCache(lambda cids: vault.iter_chunks(cids))
    return VirtualImage(f"restore point {m.id}", m.page_size, m.page_count, vault.page_ids(m) if ids is None else ids,
                        cache, vault.codec.chunk_id)


@contextmanager
def open_states(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str):
    """Yield ((FROM ref, TO ref), (FROM state, TO state)): file paths, or vault images read in place.
    Over a large chunk index the vault is read in part (Vault.lean_if_large): the pages of both
    states are located in one pass first, since SQLite asks for them a few at a time."""
    if ws is not None:
        ws.vault.lean_if_large()
    refs = resolve_pair(ws, target, from_spec, to_spec)
    if ws is None:
        yield refs, tuple(r.path for r in refs)
        return
    vault = ws.vault
    cache = ChunkCache(lambda cids: vault.iter_chunks(cids))
    ids = {r.manifest.id: vault.page_ids(r.manifest) for r in refs if r.manifest is not None}
    if vault.lean and ids:
        vault.remember_where({c for page_ids in ids.values() for c in page_ids})
    yield refs, tuple(vault_image(vault, r.manifest, cache, ids[r.manifest.id]) if r.manifest is not None else r.path
                      for r in refs)


def diff(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str, *,
         tables: list[str] | None = None, limit: int | None = None, rebuild: bool = False) -> DiffResult:
    """Resolve both STATE specs and compare them."""
    started = time.monotonic()
    with open_states(ws, target, from_spec, to_spec) as ((ref_a, ref_b), (pa, pb)):
        result = diff_states(pa, pb, tables=tables, limit=limit, rebuild=rebuild)
    return DiffResult(ref_a.to_json(), ref_b.to_json(), target.name if target else None, result,
                      time.monotonic() - started, {"tables": tables, "limit": limit})
