"""Storage backends. Each registers itself by URL scheme; the vault never imports one."""

from . import local, memory  # noqa: F401  (registration)
from .base import ObjectExists, ObjectMissing, Storage, open_storage, register

__all__ = ["ObjectExists", "ObjectMissing", "Storage", "open_storage", "register"]
