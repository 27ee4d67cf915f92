"""Storage backends. Each registers itself by URL scheme; the vault never imports one."""

from . import local, memory, s3  # noqa: F401  (registration; s3 imports obstore only when used)
from .base import ObjectExists, ObjectMissing, Storage, open_storage, register

__all__ = ["ObjectExists", "ObjectMissing", "Storage", "open_storage", "register"]
