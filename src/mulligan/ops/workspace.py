"""What most use cases need: the configuration, the vault, and an engine per target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..engines.base import Engine, engine_for
from ..model import Target
from ..vault import Vault


@dataclass
class Workspace:
    config: Config
    vault: Vault

    def target(self, name: str) -> Target:
        return self.config.target(name)

    def cache_file(self, target: Target, kind: str) -> Path:
        """A local, disposable file that speeds up work on ``target`` (never part of the vault)."""
        return self.config.dir / ".mulligan" / "cache" / f"{target.id}.{kind}"

    def engine(self, target: Target) -> Engine:
        return engine_for(target.engine)

    @classmethod
    def open(cls, config: Config) -> "Workspace":
        vault = Vault.open(config.vault_url)
        vault.storage.min_free = config.vault_min_free  # what a local vault leaves free on its disk
        return cls(config, vault)
