"""The catalog: every manifest of one target, copied into one object.

Listing a target's restore points (``snapshots``, ``restore --at``, ``status``, prune) needs
each manifest's time, kind and capture facts; read one object at a time, 20,000 manifests
(two weeks of a snapshot a minute) took over a second on a local disk, and would be 20,000
requests to an object store. The catalog ``catalogs/<target>`` holds them all.

It is a cache, never the truth:

* which restore points exist is still decided by listing ``snapshots/<target>/``: an entry
  whose manifest is gone (pruned) is ignored, and a manifest the catalog lacks (stored after
  it was written) is read on its own;
* manifests never change once stored, so an entry is either exactly its manifest or damaged:
  the object is a zstd frame with a content checksum, and a catalog that does not decode, or
  names another target, is ignored (``verify`` reports it, and compares every entry with its
  manifest).

Several writers may rewrite it at once (each put is atomic; the last one wins); whichever
wins, the listing keeps the answer right, and the next rewrite takes in what it missed.
"""

from __future__ import annotations

import json

import zstandard

from ..errors import IntegrityError
from .manifest import Manifest

PREFIX = "catalogs/"
FORMAT = 1
# A writer rewrites the catalog when it lacks at least this many listed manifests (or holds
# this many that are gone); one write in SLACK checks, chosen by the new restore point's id.
SLACK = 32


def catalog_key(target_id: str) -> str:
    return f"{PREFIX}{target_id}"


def encode(target_id: str, manifests: list[Manifest]) -> bytes:
    body = {"format": FORMAT, "target_id": target_id, "manifests": [m.to_json() for m in manifests]}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)


def decode(data: bytes, target_id: str, key: str) -> dict[str, Manifest]:
    """Manifest key -> manifest. Raises IntegrityError for a damaged catalog."""
    try:
        size = zstandard.frame_content_size(data)
        if size < 0 or size > len(data) * 1024 + (1 << 20):
            raise ValueError(f"a frame header declaring {size} bytes")  # never allocate what damage claims
        body = json.loads(zstandard.ZstdDecompressor().decompress(data))
        if body.get("format") != FORMAT or body.get("target_id") != target_id:
            raise ValueError("not this target's catalog")
        out = {}
        for obj in body["manifests"]:
            m = Manifest.from_json(obj)
            if m.target_id != target_id:
                raise ValueError("an entry of another target")
            out[m.key] = m
        return out
    except (zstandard.ZstdError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IntegrityError(
            f"catalog {key} is damaged ({exc})",
            hint="it is a copy of the manifests: restore points are read from them meanwhile; "
                 "the next prune of the target writes a new one",
        ) from None


def due(snapshot_id: str) -> bool:
    """Whether the writer of this restore point checks the catalog (about one write in SLACK)."""
    try:
        return int(snapshot_id[:4], 16) % SLACK == 0
    except ValueError:
        return False
