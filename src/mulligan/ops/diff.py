"""diff: row-level differences between two states of a database.

``diff_states`` works on two SQLite files; ``diff`` resolves STATE specs (live,
a snapshot id or prefix, @TIME, a file) and materializes vault states through
:mod:`.states`. A state that is already a file is never copied.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from ..engines.sqlite.diff import DatabaseDiff, SchemaChange, TableDiff, diff_files
from ..errors import UsageError
from ..model import Target
from .states import StateRef, materialize, resolve_state
from .workspace import Workspace

__all__ = ["DiffResult", "diff", "diff_states", "resolve_pair", "DatabaseDiff", "TableDiff", "SchemaChange"]


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


def diff_states(from_path: str, to_path: str, *, tables: list[str] | None = None, limit: int | None = None,
                rebuild: bool = False, compare_pages: bool = True) -> DatabaseDiff:
    """Compare two SQLite files (FROM, TO). ``limit`` caps the rows kept per table; counts stay whole."""
    return diff_files(str(from_path), str(to_path), tables=tables, limit=limit, rebuild=rebuild,
                      compare_pages=compare_pages)


def resolve_pair(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str) -> tuple[StateRef, StateRef]:
    vault = ws.vault if ws is not None else None
    refs = resolve_state(from_spec, vault, target), resolve_state(to_spec, vault, target)
    if target is None and any(r.kind != "file" for r in refs):
        raise UsageError("states other than file paths need a target NAME", hint="mulligan diff NAME FROM TO")
    return refs  # type: ignore[return-value]


@contextmanager
def open_states(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str):
    """Yield ((FROM ref, TO ref), (FROM path, TO path)); vault states are restored to scratch files meanwhile."""
    refs = resolve_pair(ws, target, from_spec, to_spec)
    vault = ws.vault if ws is not None else None
    with ExitStack() as stack:
        paths = tuple(stack.enter_context(materialize(vault, target, r)) for r in refs)
        yield refs, paths


def diff(ws: Workspace | None, target: Target | None, from_spec: str, to_spec: str, *,
         tables: list[str] | None = None, limit: int | None = None, rebuild: bool = False) -> DiffResult:
    """Resolve both STATE specs and compare them."""
    started = time.monotonic()
    with open_states(ws, target, from_spec, to_spec) as ((ref_a, ref_b), (pa, pb)):
        result = diff_states(pa, pb, tables=tables, limit=limit, rebuild=rebuild)
    return DiffResult(ref_a.to_json(), ref_b.to_json(), target.name if target else None, result,
                      time.monotonic() - started, {"tables": tables, "limit": limit})
