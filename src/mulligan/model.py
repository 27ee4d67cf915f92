"""Plain data shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field

ENVIRONMENTS = ("production", "staging", "development", "test")
RESTORED_ENV = "restored"


@dataclass(frozen=True)
class Target:
    """A protected database as the configuration names it."""

    name: str
    path: str
    env: str
    id: str
    engine: str = "sqlite"
    options: dict = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"


@dataclass(frozen=True)
class Identity:
    """The identity stamp stored inside a database."""

    target_id: str
    name: str
    env: str
    stamped_at: str
    generation: int = 0
    kind: str = "original"  # original | restored
    source_target_id: str | None = None
    source_snapshot: str | None = None

    def to_json(self) -> dict:
        return {
            "target_id": self.target_id,
            "name": self.name,
            "env": self.env,
            "stamped_at": self.stamped_at,
            "generation": self.generation,
            "kind": self.kind,
            "source_target_id": self.source_target_id,
            "source_snapshot": self.source_snapshot,
        }


class PageBatch(list):
    """Consecutive pages of a database state (a list of ``bytes``), with the buffer they were
    cut from: ``raw`` holds the pages end to end as read from the main file, and ``patched``
    the indexes of pages that came from elsewhere (the WAL) and so differ from ``raw``."""

    __slots__ = ("raw", "patched")

    def __init__(self, pages, raw: bytes | None = None, patched=()):
        super().__init__(pages)
        self.raw = raw
        self.patched = patched
