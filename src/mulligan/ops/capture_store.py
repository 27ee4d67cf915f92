"""Capture segments in the vault, and the restore points they make.

A *base* is an ordinary snapshot manifest whose ``meta.capture`` is set; the
commits seen after it are stored in *segments*, one object per flush::

    capture/<target_id>/<base_id>/<seq:08d>      (zstd-compressed JSON)

    {format, target_id, base, seq, prev, page_size, time_from, time_to,
     commits: [{t: seen (epoch s), f: WAL frame, n: db size in pages,
                p: [[pgno, chunk index], ..], by: "app" | "mulligan:<why>"}],
     chunks: [chunk id hex, ..], end: {observation at the last commit}}

Write order (vault invariants): the pages of a segment go into packs (then
their index) first, the segment object last; its arrival makes its commits
restore points. A segment names its base and the previous segment, so the
state at commit k of segment s is the base's pages overlaid by every commit of
segments 0..s up to k. Segment objects are never rewritten.

A commit point's id is ``<base id>.<seq>.<index>``; it is accepted wherever a
snapshot id is (``restore --snapshot``, STATE arguments).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import zstandard

from ..errors import IntegrityError, NotFound, StorageError
from ..model import Target
from ..runtime import release_free_memory
from ..storage import ObjectMissing
from ..timeparse import from_iso, iso
from ..vault import KIND_UNDO, Manifest, Vault, tree
from ..vault.manifest import new_snapshot_id
from ..vault.packs import BLOCK_TARGET, T_PAGE, T_TREE, PackWriter, encode_index, index_key

PREFIX = "capture/"
KIND_COMMIT = "commit"
_COMMIT_ID = re.compile(r"^([0-9a-f]{16})\.(\d+)\.(\d+)$")
# The frame carries a checksum of its content: a segment maps pages to chunks, and a flipped byte
# in a page number would otherwise restore a page's content at the wrong place, every page hash right.
_cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
_dctx = zstandard.ZstdDecompressor()


def status_key(target_id: str) -> str:
    """The watcher's heartbeat for a target (ops/capture.py writes it, status reads it)."""
    return f"{PREFIX}{target_id}/status"


def segment_prefix(target_id: str, base_id: str) -> str:
    return f"{PREFIX}{target_id}/{base_id}/"


def segment_key(target_id: str, base_id: str, seq: int) -> str:
    return f"{segment_prefix(target_id, base_id)}{seq:08d}"


def commit_id(base_id: str, seq: int, index: int) -> str:
    return f"{base_id}.{seq}.{index}"


def is_commit_id(spec: str) -> bool:
    return bool(_COMMIT_ID.match(spec.strip().lower()))


def encode_segment(seg: dict, vault: Vault) -> bytes:
    return vault.codec.seal(_cctx.compress(json.dumps(seg, separators=(",", ":")).encode()))


def decode_segment(data: bytes, vault: Vault, key: str) -> dict:
    try:
        return json.loads(_dctx.decompress(vault.codec.unseal(data), max_output_size=1 << 30))
    except (zstandard.ZstdError, ValueError):
        raise IntegrityError(f"capture segment {key} is damaged", hint="run 'mulligan verify'") from None


# ---- writing --------------------------------------------------------------------
@dataclass
class SegmentWriter:
    """Collects commits between flushes; pages go through one PackWriter per flush."""

    vault: Vault
    target_id: str
    base_id: str
    page_size: int
    seq: int = 0
    pending: list[dict] = field(default_factory=list)
    chunk_list: list[bytes] = field(default_factory=list)
    chunk_pos: dict[bytes, int] = field(default_factory=dict)
    writer: PackWriter | None = None
    bytes_stored: int = 0
    objects_stored: int = 0
    page_bytes: int = 0  # uncompressed bytes of the pages flushes stored
    # Chunks stored by recent flushes, for dedup, bounded: the vault's in-memory index is not
    # grown by captured pages, so the watcher's memory does not grow with its history.
    recent: dict = field(default_factory=dict)
    fresh: dict = field(default_factory=dict)
    # Index objects written by recent flushes, merged into one every MERGE_EVERY flushes so the
    # vault keeps few objects (each flush would otherwise leave a small index object behind).
    index_parts: list = field(default_factory=list)
    MERGE_EVERY = 64
    merged_keys: list = field(default_factory=list)
    # (key, bytes, commits) of a segment whose write has not succeeded yet
    sealed: tuple[str, bytes, int] | None = None
    RECENT_MAX = 1 << 14
    # A commit read in pieces (Tailer.poll): its page ids so far, and its new pages not yet
    # handed to the pack writer. Past SPILL_BYTES they are: packs are stored as they fill, so
    # the watcher holds a bounded part of even a commit of gigabytes.
    part_ids: dict = field(default_factory=dict)
    part_fresh: dict = field(default_factory=dict)
    spilled: bool = False  # pages went to the pack writer before their commit was complete
    SPILL_BYTES = 16 << 20

    def next_commit_id(self) -> str:
        return commit_id(self.base_id, self.seq, len(self.pending))

    def _new_pages(self, pages: dict[int, bytes], into: dict) -> dict[int, bytes]:
        """{pgno: chunk id}; pages the vault lacks go ``into`` (one of the fresh dicts)."""
        vault = self.vault
        # The index as this process knows it (loaded once, grown by our own writes): listing the
        # vault's index objects at every commit would cost more than the capture itself. A chunk
        # another process stored meanwhile may be stored twice; dedup is an economy, not a rule.
        idx = vault._index if vault._index is not None else vault.index()
        ids: dict[int, bytes] = {}
        fresh, part_fresh, recent, w = self.fresh, self.part_fresh, self.recent, self.writer
        if not vault.dedup_known:  # the watcher's lease is overdue: every page not already in this segment is stored
            idx, recent = {}, {}
        chunk_id = vault.codec.chunk_id
        for pgno, data in pages.items():
            cid = chunk_id(data)
            ids[pgno] = cid
            if cid not in fresh and cid not in part_fresh and cid not in idx and cid not in recent \
                    and not (w is not None and w.has(cid)):
                into[cid] = data
        return ids

    def add_part(self, pages: dict[int, bytes]) -> None:
        """Pages of a commit still being read; ``add`` of its last piece completes it.

        Raises StorageError when a pack of it could not be stored: the pieces are then gone
        from memory, and the caller must drop every commit not stored yet."""
        self.part_ids.update(self._new_pages(pages, self.part_fresh))
        if sum(map(len, self.part_fresh.values())) < self.SPILL_BYTES:
            return
        items, self.part_fresh = list(self.part_fresh.items()), {}
        if self.writer is None or not self.spilled:
            # A writer left by a failed flush holds nothing ``fresh`` does not: start clean.
            self.writer = PackWriter(self.vault.storage, codec=self.vault.codec)
        self.spilled = True
        self.page_bytes += sum(len(d) for _, d in items)
        self.writer.add_raw_many(items, T_PAGE)  # stores each pack as it fills

    def drop_part(self) -> None:
        """The commit being read in pieces will be read again from its start."""
        self.part_ids, self.part_fresh = {}, {}

    def add(self, seen: float, frame: int, db_pages: int, pages: dict[int, bytes], by: str) -> tuple[str, dict[int, bytes]]:
        """Queue one commit (or the last piece of one, after ``add_part``); return its point
        id and {pgno: chunk id}."""
        fresh = self.fresh  # compressed together at the flush (one multi-threaded call)
        ids = self._new_pages(pages, fresh)
        if self.part_ids:
            ids = {**self.part_ids, **ids}  # the later version of a page wins
            fresh.update(self.part_fresh)
            self.part_ids, self.part_fresh = {}, {}
        refs = []
        for pgno in sorted(ids):
            cid = ids[pgno]
            pos = self.chunk_pos.get(cid)
            if pos is None:
                pos = self.chunk_pos[cid] = len(self.chunk_list)
                self.chunk_list.append(cid)
            refs.append([pgno, pos])
        point = self.next_commit_id()
        self.pending.append({"t": round(seen, 6), "f": frame, "n": db_pages, "p": refs, "by": by})
        return point, ids

    def flush(self, end: dict | None = None) -> str | None:
        """Packs, their index, then the segment object. Returns the key of the last segment
        stored (None when there was nothing to store).

        A segment is sealed (its bytes and its number fixed) before its first write; a write that
        fails leaves it sealed and the next flush writes the same bytes again, first. A write that
        landed but whose answer was lost then finds its own bytes and stands (storage/base.py);
        writing the segment anew with the commits seen since would be refused for good."""
        key = self._store_sealed()
        if not self.pending:
            return key
        if self.fresh:
            # Compressed in 64 KiB blocks of pages, as snapshots are: fewer, better-compressed blobs.
            # A writer that failed starts over with every held page, unless pages went to it as
            # they were read (then they are no longer held: the flush cannot be tried again).
            if self.writer is None or not self.spilled:
                self.writer = PackWriter(self.vault.storage, codec=self.vault.codec)
            self.writer.add_raw_many(list(self.fresh.items()), T_PAGE)
            self.page_bytes += sum(map(len, self.fresh.values()))
        w = self.writer
        if w is not None:
            w.flush()
            self.index_parts.append((list(w.index_keys), [(cid, *e) for cid, e in w.written.items()]))
            if len(self.recent) > self.RECENT_MAX:
                self.recent = dict(list(self.recent.items())[-(self.RECENT_MAX // 2):])  # the newest half
            self.recent.update(dict.fromkeys(w.written, True))
            self.bytes_stored += w.bytes_written
            self.objects_stored += w.objects_written
        seg = {
            "format": 1, "target_id": self.target_id, "base": self.base_id, "seq": self.seq,
            "prev": self.seq - 1 if self.seq else None, "page_size": self.page_size,
            "time_from": self.pending[0]["t"], "time_to": self.pending[-1]["t"],
            "commits": self.pending, "chunks": [c.hex() for c in self.chunk_list], "end": end or {},
        }
        self.sealed = (segment_key(self.target_id, self.base_id, self.seq), encode_segment(seg, self.vault),
                       len(self.pending))
        self.seq += 1  # commits seen from now on belong to the next segment
        self.pending, self.chunk_list, self.chunk_pos, self.writer, self.fresh = [], [], {}, None, {}
        self.spilled = False
        return self._store_sealed()

    def _store_sealed(self) -> str | None:
        if self.sealed is None:
            return None
        key, body, _n = self.sealed
        self.vault.storage.put(key, body)
        self.sealed = None
        self.bytes_stored += len(body)
        self.objects_stored += 1
        if len(self.index_parts) >= self.MERGE_EVERY or sum(len(w) for _, w in self.index_parts) >= 20000:
            self.merge_indexes()
        return key

    def held_bytes(self) -> int:
        """Bytes of page content held for the next flush (what a vault that refuses writes lets grow)."""
        return sum(map(len, self.fresh.values())) + sum(map(len, self.part_fresh.values()))

    def unstored_commits(self) -> int:
        return len(self.pending) + (self.sealed[2] if self.sealed else 0)

    def discard(self) -> None:
        """Forget every commit not yet stored, a sealed segment's too (the caller starts a new
        base: this chain gets no further segment)."""
        self.pending, self.chunk_list, self.chunk_pos, self.writer, self.fresh = [], [], {}, None, {}
        self.sealed = None
        self.part_ids, self.part_fresh, self.spilled = {}, {}, False

    def merge_indexes(self) -> None:
        """One index object for the last flushes' packs (written first), then the small ones go."""
        parts, self.index_parts = self.index_parts, []
        if len(parts) < 2:
            return
        by_pack: dict[bytes, list] = {}
        for _keys, written in parts:
            for cid, pack, *rest in written:  # (chunk id, *Entry): the index entry is the Entry minus its pack
                by_pack.setdefault(pack, []).append((cid, *rest))
        for entries in by_pack.values():
            entries.sort(key=lambda x: x[2])
        key = index_key(os.urandom(16))
        self.vault.storage.put(key, encode_index(by_pack.items()))
        self.vault._loaded_index_keys.add(key)
        self.objects_stored += 1
        # The small ones of the *previous* merge go now: a reader that listed them a moment ago
        # may still be about to read them, and the merged copy has been there since.
        for k in self.merged_keys:
            self.vault.storage.delete(k)
        self.merged_keys = [k for keys, _written in parts for k in keys]
        # One merged object every MERGE_EVERY flushes still adds up (about 2,700 a day storing
        # twice a second), and every restore lists and loads them all: past INDEX_OBJECTS_MAX the
        # small ones are merged again, as a snapshot's writer does (under watch's writer lease).
        try:
            if self.vault.compact_indexes():
                release_free_memory()  # the objects merged (up to 64 MiB) are gone: give their pages back
        except StorageError:
            pass  # a tidy-up: the next merge tries again


def save_base(vault: Vault, target: Target, page_size: int, ids: list[bytes], *, time: float, meta: dict,
              tag: str | None = "capture", nodes: set[bytes] | None = None) -> Manifest:
    """A base snapshot from chunk ids whose pages are already stored: only tree nodes are new.
    ``nodes``, when given, receives the id of every node of its tree."""
    idx = vault.index()
    writer = PackWriter(vault.storage)
    new = {"bytes": 0, "chunks": 0}

    def store_node(node: bytes) -> bytes:
        cid = vault.codec.chunk_id(node)
        if nodes is not None:
            nodes.add(cid)
        if cid not in idx and not writer.has(cid):
            blob = vault.codec.pack_blobs([node])[0]
            writer.add(cid, T_TREE, blob, len(node))
            new["bytes"] += len(blob)
            new["chunks"] += 1
        return cid

    root, depth = tree.build(b"".join(ids), store_node)
    writer.flush()
    vault._absorb(writer)
    parent = vault.latest(target.id)
    m = Manifest(
        id=new_snapshot_id(), target_id=target.id, target_name=target.name, time=iso(time), kind="snapshot",
        tag=tag, page_size=page_size, page_count=len(ids), root=root.hex(), depth=depth,
        logical_size=len(ids) * page_size, new_bytes=new["bytes"], new_chunks=new["chunks"],
        new_objects=writer.objects_written + 1, parent=parent.id if parent else None,
        meta={**meta, "capture": True, "env": target.env, "path": target.path},
    )
    vault.storage.put(m.key, m.encode())
    vault.storage.put(f"refs/{target.id}/latest", m.id.encode(), overwrite=True)
    vault.manifest_stored(m)
    return m


class PageStore:
    """Stores pages read in full, batch by batch (deduplicated); ``ids`` grows in page order."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self.idx = vault.index() if vault.dedup_known else {}
        self.writer = PackWriter(vault.storage, target_size=4 << 20)  # bounded memory while reading
        self.ids: list[bytes] = []

    def reset(self) -> None:
        self.ids = []

    def add(self, batch: list[bytes]) -> None:
        vault, writer = self.vault, self.writer
        bids = [vault.codec.chunk_id(p) for p in batch]
        self.ids.extend(bids)
        fresh = {}
        for cid, p in zip(bids, batch):
            if cid not in self.idx and not writer.has(cid) and cid not in fresh:
                fresh[cid] = p
        if fresh:
            # Compressed here, in step with the read, in blocks of up to 16 pages (64 KiB) as a
            # snapshot's are: the base of a large database never waits in memory (blocks handed to
            # the background compressor raised watch's peak to ~160 MB), and a restore from it
            # handles a block, not a page, at a time (a block a page took 0.45 s to restore the
            # benchmark's 94 MB base, against 0.40 s).
            ids, datas = list(fresh), list(fresh.values())
            per = max(1, BLOCK_TARGET // max(1, len(datas[0])))
            groups = [(ids[i : i + per], datas[i : i + per]) for i in range(0, len(ids), per)]
            blobs = vault.codec.pack_blobs([b"".join(d) for _, d in groups])
            for (gids, gdatas), blob in zip(groups, blobs):
                writer.add_block(T_PAGE, gids, [len(d) for d in gdatas], blob)

    def close(self) -> int:
        self.writer.flush()
        self.vault._absorb(self.writer)
        return self.writer.bytes_written


def store_pages(vault: Vault, pages: list[bytes]) -> tuple[list[bytes], int]:
    """Store (deduplicated) pages read in full; return their chunk ids and bytes newly stored."""
    idx = vault.index()
    writer = PackWriter(vault.storage)
    ids = []
    for start in range(0, len(pages), 512):
        batch = pages[start:start + 512]
        bids = [vault.codec.chunk_id(p) for p in batch]
        ids.extend(bids)
        fresh = {}
        for cid, p in zip(bids, batch):
            if cid not in idx and not writer.has(cid) and cid not in fresh:
                fresh[cid] = p
        if fresh:
            for (cid, p), blob in zip(fresh.items(), vault.codec.pack_blobs(list(fresh.values()))):
                writer.add(cid, T_PAGE, blob, len(p))
    writer.flush()
    vault._absorb(writer)
    return ids, writer.bytes_written


# ---- reading ----------------------------------------------------------------------
class CommitPoint(Manifest):
    """A restore point at one captured commit: a base overlaid by its chain up to the commit."""

    resolved_ids: list[bytes] | None = None


def capture_bases(vault: Vault, target_id: str, manifests: list[Manifest] | None = None) -> list[Manifest]:
    ms = manifests if manifests is not None else vault.manifests(target_id)
    return [m for m in ms if m.meta.get("capture") and m.kind != KIND_UNDO]


def segment_keys(vault: Vault, target_id: str, base_id: str) -> list[str]:
    return [k for k, _ in vault.storage.list(segment_prefix(target_id, base_id))]


def load_segment(vault: Vault, key: str) -> dict:
    return decode_segment(vault.storage.get(key), vault, key)


def last_commit(vault: Vault, base: Manifest) -> tuple[str, float, dict] | None:
    """(commit id, seen time, segment) of the newest commit in a base's chain, or None."""
    keys = segment_keys(vault, base.target_id, base.id)
    for key in reversed(keys):
        seg = load_segment(vault, key)
        if seg["commits"]:
            i = len(seg["commits"]) - 1
            return commit_id(base.id, seg["seq"], i), seg["commits"][i]["t"], seg
    return None


def _ts(m: Manifest) -> float:
    return from_iso(m.time).timestamp()


def _replay(vault: Vault, base: Manifest, *, seq: int | None = None, index: int | None = None,
            when: float | None = None) -> tuple[list[bytes], tuple[int, int, float] | None]:
    """The base's page ids overlaid by its chain's commits in order, up to commit (seq, index),
    or up to the last commit seen at or before ``when``: (ids, (seq, index, time) of the last
    commit applied, or None). One pass over the segments: a restore at a time does not read
    them once to find the commit and again to build its state. The base's tree is read only
    once a commit is to be applied (none applied: empty ids)."""
    ids: list[bytes] | None = None
    last = None
    # Segments are fetched a few at a time on an object store (Vault.get_many); a replay that
    # stops early has asked for at most a few it does not use.
    for key, body in vault.get_many(list(vault.storage.list(segment_prefix(base.target_id, base.id)))):
        if body is None:
            raise _chain_broken(ObjectMissing, f"capture segment {key} is missing from the vault", base, last)
        try:
            seg = decode_segment(body, vault, key)
        except IntegrityError as exc:
            raise _chain_broken(IntegrityError, exc.message, base, last) from None
        if (seq is not None and seg["seq"] > seq) or (when is not None and seg["time_from"] > when):
            break
        chunks = [bytes.fromhex(c) for c in seg["chunks"]]
        for i, c in enumerate(seg["commits"]):
            if when is not None and c["t"] > when:
                return ids or [], last
            if ids is None:
                ids = vault.page_ids(base)
            n = c["n"]
            if n < len(ids):
                del ids[n:]
            elif n > len(ids):
                ids.extend([b""] * (n - len(ids)))
            for pgno, pos in c["p"]:
                if pgno <= n:
                    ids[pgno - 1] = chunks[pos]
            last = (seg["seq"], i, c["t"])
            if seg["seq"] == seq and i == index:
                return ids, last
    return ids or [], last


def _chain_broken(kind, what: str, base: Manifest, last: tuple[int, int, float] | None):
    """A segment of a chain cannot be read: every commit from it on is lost to restores (each
    builds on the ones before). Say which point before it still restores, and how."""
    point = commit_id(base.id, last[0], last[1]) if last else base.id
    when = iso(last[2]) if last else base.time
    return kind(f"{what}: the commits it and the later segments of this chain hold cannot be restored; "
                f"the newest point before it is {point} ({when})",
                hint=f"restore that point ('mulligan restore {base.target_name} --snapshot {point} --to PATH'), "
                     "and run 'mulligan verify'")


def _commit_point(base: Manifest, seq: int, index: int, t: float, ids: list[bytes]) -> CommitPoint:
    if any(not x for x in ids):
        raise IntegrityError(f"commit {commit_id(base.id, seq, index)} leaves pages without content",
                             hint="run 'mulligan verify'")
    cp = CommitPoint(**{**base.to_json(), "id": commit_id(base.id, seq, index), "time": iso(t), "kind": KIND_COMMIT,
                        "page_count": len(ids), "logical_size": len(ids) * base.page_size,
                        "tag": None, "parent": base.id})
    cp.resolved_ids = ids
    return cp


def materialize_commit(vault: Vault, base: Manifest, seq: int, index: int) -> CommitPoint:
    ids, last = _replay(vault, base, seq=seq, index=index)
    if last is None or last[:2] != (seq, index):
        raise NotFound(f"no captured commit {commit_id(base.id, seq, index)}",
                       hint=f"list restore points with 'mulligan snapshots {base.target_name}'")
    return _commit_point(base, seq, index, last[2], ids)


def resolve_commit(vault: Vault, spec: str) -> CommitPoint:
    m = _COMMIT_ID.match(spec.strip().lower())
    if not m:
        raise NotFound(f"{spec!r} is not a commit point id")
    base_id, seq, index = m.group(1), int(m.group(2)), int(m.group(3))
    base = vault.resolve(base_id)
    return materialize_commit(vault, base, seq, index)


def point_at(vault: Vault, target: Target, when: datetime) -> Manifest | None:
    """The newest restore point at or before ``when``: a captured commit or a snapshot."""
    ts = when.timestamp()
    ms = [m for m in vault.manifests(target.id) if m.kind != KIND_UNDO and _ts(m) <= ts]
    if not ms:
        return None
    newest = ms[-1]
    bases = capture_bases(vault, target.id, ms)
    if bases:
        base = bases[-1]
        ids, hit = _replay(vault, base, when=ts)
        if hit is not None and hit[2] >= _ts(newest):
            return _commit_point(base, hit[0], hit[1], hit[2], ids)
    return newest


def latest_point(vault: Vault, target: Target) -> Manifest | None:
    """The last captured commit, or the newest snapshot when that is newer."""
    m = vault.latest(target.id)
    ms = None
    if m is None or not m.meta.get("capture"):
        if not any(True for _ in vault.storage.list(f"{PREFIX}{target.id}/")):
            return m  # never captured: no base to look for among every manifest of the target
        ms = vault.manifests(target.id)
        bases = capture_bases(vault, target.id, ms)
        base = bases[-1] if bases else None
    else:
        base = m
    if base is None:
        return m
    try:
        lc = last_commit(vault, base)
    except (IntegrityError, ObjectMissing):
        _replay(vault, base)  # raises at the first segment it cannot read, naming the point before it
        raise
    if lc is None:
        return m
    if m is not None and _ts(m) > lc[1]:
        return m
    _, seq, idx = lc[0].split(".")
    return materialize_commit(vault, base, int(seq), int(idx))


def coverage(vault: Vault, target: Target) -> dict:
    """From when to when every commit was captured, and the gaps."""
    bases = capture_bases(vault, target.id)
    if not bases:
        return {"from": None, "to": None, "gaps": [], "bases": 0}
    last = last_commit(vault, bases[-1])
    to = iso(last[1]) if last else bases[-1].time
    return {"from": bases[0].time, "to": to, "gaps": gaps(bases), "bases": len(bases)}


def gaps(bases: list[Manifest]) -> list[dict]:
    """The gaps between capture chains, from their bases alone (no segment is read)."""
    out = []
    for b in bases[1:]:
        g = b.meta.get("gap_before")
        if g:
            out.append({"from": g.get("from"), "to": g.get("to") or b.time, "reason": g.get("reason", "")})
    return out


def chain_chunks(vault: Vault, target_id: str, base_id: str) -> set[bytes]:
    out: set[bytes] = set()
    for key in segment_keys(vault, target_id, base_id):
        out.update(bytes.fromhex(c) for c in load_segment(vault, key)["chunks"])
    return out


def all_segment_bases(vault: Vault) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for key, _ in vault.storage.list(PREFIX):
        parts = key.split("/")
        if len(parts) == 4 and parts[3].isdigit():
            out.setdefault((parts[1], parts[2]), []).append(key)
    return out


def now_ts() -> float:
    return datetime.now(timezone.utc).timestamp()
