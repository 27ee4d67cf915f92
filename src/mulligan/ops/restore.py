"""restore --to PATH: write a restore point into a NEW database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .. import fsio, parallel
from ..engines.base import engine_for
from ..errors import GuardRefused, StorageError, UsageError
from ..model import ENVIRONMENTS, RESTORED_ENV, Identity
from ..timeparse import iso, utc_now
from ..units import human_size
from ..vault import Manifest, Vault
from .workspace import Workspace

SIDE_FILES = ("-wal", "-shm", "-journal")
CHECKS = {"quick": "quick_check", "full": "integrity_check", "none": "none"}  # --check: what the result names


@dataclass
class RestoreResult:
    path: str
    snapshot: Manifest
    identity: Identity
    check: str
    bytes_written: int
    warnings: list[str]
    jobs: int = 1  # processes that checked and wrote the pages

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "snapshot": {"id": self.snapshot.id, "time": self.snapshot.time, "target": self.snapshot.target_name,
                          "kind": self.snapshot.kind, "tag": self.snapshot.tag},
            "identity": self.identity.to_json(),
            "check": self.check,
            "bytes_written": self.bytes_written,
            "jobs": self.jobs,
            "warnings": self.warnings,
        }


def check_new_path(path: str) -> None:
    """A new database path must be empty and have no stale WAL, SHM or journal beside it."""
    if os.path.isdir(path):
        raise GuardRefused(f"{path} is a folder", unchanged="nothing was written", hint="give a file path for the new database")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        raise GuardRefused(
            f"{path} already exists and is not empty",
            unchanged=f"{path} was not touched",
            hint="restore to a new path; to replace a target's own database use --in-place",
        )
    stale = [path + s for s in SIDE_FILES if os.path.exists(path + s)]
    if stale:
        raise GuardRefused(
            f"stale {', '.join(os.path.basename(s) for s in stale)} beside {path}: SQLite would replay it into the restored database",
            unchanged="nothing was written",
            hint="move those files away (they may belong to another database) or choose another path",
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"the folder {parent} does not exist", hint="create it first or choose another path")


PARALLEL_MIN_PAGES = 4096  # under 16 MiB of 4 KiB pages a second process costs about what it saves
MAX_JOBS = 2  # each further process holds ~35 MB of its own buffers: more is asked for with --jobs


def point_pages(vault: Vault, point: Manifest, jobs: int | None = None) -> list:
    """The pages of ``point`` as shards for ``Engine.write_new``: one per process that will
    check and write them (``jobs``; by default one per CPU, up to MAX_JOBS, for a point of
    PARALLEL_MIN_PAGES pages or more). One where a child process could not read the vault
    (an object store) or cannot be forked."""
    if jobs is None:
        jobs = min(parallel.cpus(), MAX_JOBS) if point.page_count >= PARALLEL_MIN_PAGES else 1
    if not (vault.storage.fork_safe and parallel.can_fork()):
        jobs = 1
    return vault.page_batch_shards(point, max(1, jobs))


def restore_new(
    ws: Workspace,
    point: Manifest,
    to: str,
    *,
    env: str | None = None,
    check: str = "quick",
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreResult:
    to = os.path.abspath(to)
    check_new_path(to)
    if env is not None and env not in ENVIRONMENTS + (RESTORED_ENV,):
        raise UsageError(f"unknown environment {env!r}", hint=f"choose one of: {', '.join(ENVIRONMENTS + (RESTORED_ENV,))}")
    new_env = env or RESTORED_ENV
    warnings = []
    source_env = point.meta.get("env")
    if source_env == "production" and new_env != "production":
        warnings.append(
            f"this copy holds production data of {point.target_name!r}: it carries personal data, treat it like production"
        )
    ident = Identity(
        target_id="t-" + os.urandom(6).hex(),
        name=f"{point.target_name}-restored-{point.id[:8]}",
        env=new_env,
        stamped_at=iso(utc_now()),
        generation=1,
        kind="restored",
        source_target_id=point.target_id,
        source_snapshot=point.id,
    )
    need = point.page_count * point.page_size
    free = fsio.room(os.path.dirname(to), ws.config.vault_min_free)
    if free is not None and free[1] and free[0] - need < free[1]:
        raise StorageError(
            f"restoring {human_size(need)} to {to} would leave {human_size(max(0, free[0] - need))} free on its "
            f"disk, and Mulligan leaves {human_size(free[1])} free there so that the databases on it can still commit",
            unchanged="nothing was written",
            hint="restore to another disk (--to), free space, or set [vault] min_free in mulligan.toml",
        )
    if os.path.exists(to):  # an empty file: replace it through the same no-clobber link
        os.unlink(to)
    engine = engine_for(point.engine)
    total = point.page_count
    cb = (lambda n: progress(n, total)) if progress else None
    shards = point_pages(ws.vault, point, jobs)
    engine.write_new(to, point.page_size, point.page_count, shards, progress=cb, identity=ident, check=check)
    warnings += [f"the vault's {why}: it was passed over, and every page was found elsewhere; run 'mulligan verify'"
                 for why in ws.vault.index_problems.values()]
    return RestoreResult(to, point, ident, CHECKS[check], os.path.getsize(to), warnings, len(shards))
