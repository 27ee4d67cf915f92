"""The vault's format version and features.

``config`` at the vault's root records both. A Mulligan that meets a version it
does not know, or a feature it does not implement, refuses the vault instead of
misreading it.
"""

from __future__ import annotations

import json

from ..errors import UnsupportedFormat

FORMAT_VERSION = 1
# Features this Mulligan implements. A vault lists what it uses.
KNOWN_FEATURES = frozenset({"zstd", "blake3-16", "page-chunks", "tree-manifests"})
DEFAULT_FEATURES = ["zstd", "blake3-16", "page-chunks", "tree-manifests"]


def check(config: dict, where: str) -> None:
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"the vault at {where} has format version {version}, this Mulligan reads version {FORMAT_VERSION}",
            unchanged="nothing in the vault was read or written",
            hint="use the Mulligan release that wrote this vault, or a newer one",
        )
    unknown = sorted(set(config.get("features", [])) - KNOWN_FEATURES)
    if unknown:
        raise UnsupportedFormat(
            f"the vault at {where} uses features this Mulligan does not know: {', '.join(unknown)}",
            unchanged="nothing in the vault was read or written",
            hint="upgrade Mulligan before using this vault",
        )


def encode(config: dict) -> bytes:
    return json.dumps(config, indent=2, sort_keys=True).encode()
