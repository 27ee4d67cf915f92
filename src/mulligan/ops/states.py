"""STATE arguments (diff, impact, recover): live, a snapshot id or prefix, @TIME, a file path.

``materialize`` gives a SQLite file for any STATE: the live database's own
path for ``live`` and for file paths (never copied), a restored scratch copy
for vault states (deleted afterwards).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import NotFound, UsageError
from ..model import Target
from ..timeparse import parse_time
from ..vault import Manifest, Vault


@dataclass
class StateRef:
    kind: str  # live | snapshot | time | file
    text: str
    manifest: Manifest | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.kind == "live":
            return "live"
        if self.manifest is not None:
            return f"{self.manifest.id} ({self.manifest.time})"
        return self.path or self.text

    def to_json(self) -> dict:
        return {"kind": self.kind, "spec": self.text, "path": self.path,
                "snapshot": self.manifest.id if self.manifest else None,
                "time": self.manifest.time if self.manifest else None}


def looks_like_file(spec: str) -> bool:
    return os.sep in spec or spec.endswith((".db", ".sqlite", ".sqlite3")) or os.path.exists(spec)


def resolve_state(spec: str, vault: Vault | None, target: Target | None) -> StateRef:
    if spec == "live":
        if target is None:
            raise UsageError("'live' needs a target NAME", hint="give NAME before FROM and TO")
        return StateRef("live", spec, path=target.path)
    if looks_like_file(spec):
        if not os.path.exists(spec):
            raise NotFound(f"no file at {spec}", unchanged="nothing was read or written",
                           hint="give a path to a SQLite file, 'live', a restore point id or @TIME")
        return StateRef("file", spec, path=os.path.abspath(spec))
    if vault is None:
        raise UsageError(f"{spec!r} is not a file; vault states need a configuration and a target NAME")
    if spec.startswith("@"):
        if target is None:
            raise UsageError("@TIME needs a target NAME")
        from .points import point_at

        return StateRef("time", spec, manifest=point_at(vault, target, parse_time(spec[1:])))
    from .capture_store import is_commit_id, resolve_commit

    if is_commit_id(spec):
        return StateRef("snapshot", spec, manifest=resolve_commit(vault, spec))
    return StateRef("snapshot", spec, manifest=vault.resolve(spec))


@contextmanager
def materialize(vault: Vault | None, target: Target | None, spec: str | StateRef) -> Iterator[str]:
    """Yield a SQLite file path holding the state. Over a large chunk index the vault is read in
    part (Vault.lean_if_large), as a restore reads it."""
    if vault is not None:
        vault.lean_if_large()
    ref = spec if isinstance(spec, StateRef) else resolve_state(spec, vault, target)
    if ref.path is not None:
        yield ref.path
        return
    from ..engines.base import engine_for
    from .restore import point_pages

    assert vault is not None and ref.manifest is not None
    m = ref.manifest
    d = tempfile.mkdtemp(prefix="mulligan-state-")
    try:
        path = os.path.join(d, f"{m.id}.db")
        engine_for(m.engine).write_new(path, m.page_size, m.page_count, point_pages(vault, m))
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)
