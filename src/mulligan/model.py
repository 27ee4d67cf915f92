"""Plain data shared by every layer."""

from __future__ import annotations

from collections.abc import Sequence
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


class PageBatch(Sequence):
    """Consecutive pages of a database state, cut from the buffer they were read into only
    when asked for: ``raw`` holds ``count`` pages end to end as read from the main file, and
    ``patched`` maps the index of a page that came from elsewhere (the WAL) to its bytes, which
    differ from what ``raw`` holds there. A consumer that can work on ``raw`` directly (block
    digests) never pays for cutting the pages it does not need."""

    __slots__ = ("raw", "page_size", "count", "patched", "_pages")

    def __init__(self, raw: bytes, page_size: int, count: int, patched: dict[int, bytes] | None = None):
        self.raw, self.page_size, self.count = raw, page_size, count
        self.patched = patched or {}
        self._pages: list[bytes] | None = None

    def pages(self) -> list[bytes]:
        if self._pages is None:
            raw, ps = self.raw, self.page_size
            self._pages = [raw[i : i + ps] for i in range(0, self.count * ps, ps)]
            for i, data in self.patched.items():
                self._pages[i] = data
        return self._pages

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(self.pages())

    def __getitem__(self, i):
        if self._pages is not None:
            return self._pages[i]
        if isinstance(i, slice):
            return [self._page(j) for j in range(*i.indices(self.count))]
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self._page(i)

    def _page(self, i: int) -> bytes:
        data = self.patched.get(i)
        return data if data is not None else self.raw[i * self.page_size : (i + 1) * self.page_size]
