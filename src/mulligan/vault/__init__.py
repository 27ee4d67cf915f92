"""The content-addressed store of database states."""

from .manifest import KIND_SNAPSHOT, KIND_UNDO, Manifest
from .vault import Vault

__all__ = ["KIND_SNAPSHOT", "KIND_UNDO", "Manifest", "Vault"]
