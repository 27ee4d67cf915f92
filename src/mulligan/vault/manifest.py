"""Snapshot manifests: the small object whose arrival makes a restore point exist."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

KIND_SNAPSHOT = "snapshot"
KIND_UNDO = "undo"


def new_snapshot_id() -> str:
    return os.urandom(8).hex()


@dataclass
class Manifest:
    id: str
    target_id: str
    target_name: str
    time: str  # UTC ISO 8601: the moment of the state's last commit as seen by Mulligan
    kind: str = KIND_SNAPSHOT
    tag: str | None = None
    engine: str = "sqlite"
    page_size: int = 4096
    page_count: int = 0
    root: str = ""
    depth: int = 1
    logical_size: int = 0
    new_bytes: int = 0
    new_chunks: int = 0
    new_objects: int = 0
    parent: str | None = None
    meta: dict = field(default_factory=dict)
    format: int = 1

    @property
    def key(self) -> str:
        return manifest_key(self.target_id, self.id)

    def to_json(self) -> dict:
        return asdict(self)

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        return cls.from_json(json.loads(data))

    @classmethod
    def from_json(cls, obj: dict) -> "Manifest":
        known = cls.__dataclass_fields__
        if obj.keys() <= known.keys():
            return cls(**obj)
        return cls(**{k: v for k, v in obj.items() if k in known})  # written by a newer version


def manifest_key(target_id: str, snapshot_id: str) -> str:
    return f"snapshots/{target_id}/{snapshot_id}"
