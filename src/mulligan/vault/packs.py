"""Pack files: many compressed chunks in one object, and their indexes.

Pack object ``packs/<xx>/<pack_id>``::

    block block block ... | index-bytes | u32 len(index-bytes) | b"MPK1"

A block is one zstd frame holding one chunk or several consecutive chunks
(new pages of a snapshot are compressed 16 at a time: per-frame overhead
dominates at 4 KiB, and neighbouring pages compress better together). Dedup
stays per chunk: a chunk is found by (block offset, block stored length,
offset inside the decompressed block, length).

Index object ``index/<index_id>`` (may cover several packs once merged)::

    b"MIX2" then per pack: pack_id(16) u32 count, then count entries of
    id(16) type(1) block_offset(u64) block_stored_len(u32) length(u32) inner(u32)

    type: 0 page, 1 tree node, 2 other engine data, 3 a page stored again by a repack
    (readers that do not know 3 read it as a page: only which copy is preferred differs)

Write order: a pack is stored, then its index, and only then may a manifest
refer to its chunks. A pack without an index is garbage that prune removes; an
index never names a pack that was not stored whole first.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import Future
from typing import Iterable, NamedTuple

from ..errors import IntegrityError
from ..storage import Storage
from .codec import ID_LEN
from .workers import worker

T_PAGE = 0
T_TREE = 1
T_DATA = 2  # other engine data (WAL segments, row batches)
T_REPACKED = 3  # a page stored again, with the current pages around it, by watch's repack

_ENTRY = struct.Struct(f"<{ID_LEN}sBQIII")
_PACK_HDR = struct.Struct(f"<{ID_LEN}sI")
PACK_MAGIC = b"MPK1"
INDEX_MAGIC = b"MIX2"
BLOCK_TARGET = 64 << 10


class Entry(NamedTuple):
    pack: bytes
    type: int
    offset: int  # of the block in the pack
    stored_len: int  # of the block
    length: int  # of the chunk
    inner: int = 0  # offset of the chunk in the decompressed block


def pack_key(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"packs/{h[:2]}/{h}"


def index_key(index_id: bytes) -> str:
    return f"index/{index_id.hex()}"


def encode_index(packs: Iterable[tuple[bytes, list[tuple]]]) -> bytes:
    return _index_object((pack_id, [_ENTRY.pack(*e) for e in entries]) for pack_id, entries in packs)


def _index_object(sections: Iterable[tuple[bytes, list[bytes]]]) -> bytes:
    """An index object from (pack id, its entries already packed) pairs."""
    out = [INDEX_MAGIC]
    for pack_id, packed in sections:
        out.append(_PACK_HDR.pack(pack_id, len(packed)))
        out.extend(packed)
    return b"".join(out)


def _pack_spans(data: bytes, key: str) -> list[tuple[bytes, int, int]]:
    """(pack id, start, end) of each pack's entries in an index object, checked whole first."""
    if not data.startswith(INDEX_MAGIC):
        raise IntegrityError(f"{key} is not a Mulligan index object", hint="run 'mulligan verify'")
    pos = len(INDEX_MAGIC)
    spans = []
    try:
        while pos < len(data):
            pack_id, count = _PACK_HDR.unpack_from(data, pos)
            pos += _PACK_HDR.size
            end = pos + count * _ENTRY.size
            if end > len(data):
                raise struct.error("truncated")
            spans.append((pack_id, pos, end))
            pos = end
    except struct.error:
        raise IntegrityError(f"{key} is truncated or damaged", hint="run 'mulligan verify'") from None
    return spans


def merge_indexes(objects: Iterable[tuple[str, bytes]]) -> bytearray:
    """One index object holding every pack section of the given index objects (each pack
    once: an object merged earlier and one it was merged from may both still exist, and
    every object lists the whole of each pack it names). Sections are copied into one buffer,
    returned as it is (no copy of the whole): given the objects one at a time (a generator),
    memory is the merged object and the object being read."""
    out, seen = bytearray(INDEX_MAGIC), set()
    for key, data in objects:
        view = memoryview(data)
        for pack_id, pos, end in _pack_spans(data, key):
            if pack_id not in seen:
                seen.add(pack_id)
                out += view[pos - _PACK_HDR.size : end]
        view.release()
    return out


def decode_index(data: bytes, key: str = "index") -> dict[bytes, list[tuple[bytes, int, int, int, int]]]:
    return {pack_id: list(_ENTRY.iter_unpack(data[pos:end])) for pack_id, pos, end in _pack_spans(data, key)}


def pack_rank(pack_id: bytes, count: int, repacked: bool = False) -> tuple[bool, int, bytes]:
    """Which copy of a chunk stored in several packs is read (the greater rank): one a repack
    stored (its pack holds the current pages in page order), else the one in the pack with
    more chunks; ties go by pack id. A restore then reads the few packs a repack wrote rather
    than the many flush packs a capture first stored those pages in, however large those are."""
    return (repacked, count, pack_id)


def find_in_index(data: bytes, key: str, wanted: set[bytes] | None, only_type: int | None = None):
    """(id, rank, entry as a plain tuple) of each wanted chunk an index object names (every
    chunk of ``only_type`` when ``wanted`` is None), a pack's section at a time (memory: one
    section's ids), the last entry of a chunk in a section; ``only_type``: sections holding no
    chunk of that type are passed over, their entries' type bytes looked at in one slice."""
    size = _ENTRY.size
    wanted_type = None if only_type is None else bytes([only_type])
    for pack_id, pos, end in _pack_spans(data, key):
        types = data[pos + ID_LEN : end : size]
        if wanted_type is not None and wanted_type not in types:
            continue
        rank = pack_rank(pack_id, len(types), bool(types) and types[0] == T_REPACKED)
        if wanted is None:
            for i, t in enumerate(types):
                if t == only_type:
                    p = pos + i * size
                    yield data[p : p + ID_LEN], rank, (pack_id, *_ENTRY.unpack_from(data, p)[1:])
            continue
        ids = [data[p : p + ID_LEN] for p in range(pos, end, size)]
        hits = wanted.intersection(ids)
        if not hits:
            continue
        at = dict(zip(ids, range(pos, end, size)))
        for cid in hits:
            yield cid, rank, (pack_id, *_ENTRY.unpack_from(data, at[cid])[1:])


class ChunkIndex:
    """Chunk id -> :class:`Entry`, loaded from index objects without unpacking them.

    An index object's entries stay in its bytes; the mapping holds only
    id -> (segment << 32 | offset of the entry), and an :class:`Entry` is built
    when one is asked for. Loading is one slice per chunk; the dict insert waits
    until something needs the whole mapping (a restore only looks its chunks up,
    section by section). Memory is the ids plus the index bytes themselves (about
    70 bytes a chunk instead of a tuple of six objects), which matters because
    the index grows with the number of distinct pages in the vault.
    """

    __slots__ = ("_where", "_segments", "_ranks", "_written", "_pending", "_upto", "_singles")

    SINGLES = 16  # lookups of one chunk each before every pending entry is settled
    SETTLE_SHARE = 4  # a lookup of more than a quarter of the pending entries settles them all

    def __init__(self) -> None:
        self._where: dict[bytes, int] = {}
        self._segments: list[tuple[bytes, bytes]] = []  # (pack id, index object bytes)
        self._ranks: list[tuple[bool, int, bytes]] = []  # pack_rank of each segment
        self._written: dict[bytes, tuple] = {}  # chunks this process stored (as PackWriter.written)
        # Sections loaded but not yet in _where: (segment << 32, start of its entries, their ids).
        # A restore asks where a few thousand chunks are among hundreds of thousands: they are
        # looked up in these (a set intersection a section) instead of building the whole dict.
        self._pending: list[tuple[int, int, list[bytes]]] = []
        self._upto: dict[bytes, int] = {}  # chunk looked up lazily -> pending sections it was looked up in
        self._singles = 0

    def add_index(self, data: bytes, key: str = "index") -> None:
        """Add an index object's entries. A chunk stored in several packs (a repacked page, or
        one two writers stored at once) is read from the pack :func:`pack_rank` puts first,
        whatever order the objects are loaded in; a chunk this process stored itself keeps
        the place it was stored at. The entries wait in their sections until a lookup needs
        them (:meth:`group`, :meth:`raw` find a few; anything else settles them all)."""
        size, segments, ranks = _ENTRY.size, self._segments, self._ranks
        for pack_id, pos, end in _pack_spans(data, key):  # a damaged object raises before any entry is added
            seg = len(segments) << 32
            segments.append((pack_id, data))
            ranks.append(pack_rank(pack_id, (end - pos) // size, end > pos and data[pos + ID_LEN] == T_REPACKED))
            self._pending.append((seg, pos, [data[p : p + ID_LEN] for p in range(pos, end, size)]))

    def _settle(self) -> None:
        """Every pending entry into the mapping, the better-ranked copy of a chunk kept."""
        pending, self._pending, self._upto = self._pending, [], {}
        where, ranks, size = self._where, self._ranks, _ENTRY.size
        for seg, pos, ids in pending:
            rank = ranks[seg >> 32]
            keep = []
            if where:
                for cid in where.keys() & ids:
                    h = where[cid]
                    if h == -1 or (h >= 0 and ranks[h >> 32] >= rank):  # -2: present, place unknown
                        keep.append((cid, h))
            where.update(zip(ids, range(seg | pos, seg | (pos + len(ids) * size), size)))
            if keep:
                where.update(keep)

    def _look_up(self, cids) -> None:
        """Bring the given chunks' best entries from the pending sections into the mapping."""
        pending = self._pending
        n = len(pending)
        upto, where, ranks, segments, size = self._upto, self._where, self._ranks, self._segments, _ENTRY.size
        todo = {c for c in cids if upto.get(c, 0) < n}
        if not todo:
            return
        first = min(upto.get(c, 0) for c in todo)
        for k in range(first, n):
            seg, pos, ids = pending[k]
            hits = todo.intersection(ids)
            if not hits:
                continue
            data = segments[seg >> 32][1]
            end, rank = pos + len(ids) * size, ranks[seg >> 32]
            # Many hits: the section's own mapping (one C-level pass); a few: searched for.
            local = dict(zip(ids, range(pos, end, size))) if len(hits) > 16 else None
            for cid in hits:
                if upto.get(cid, 0) > k:
                    continue  # this section was looked at for it already
                if local is not None:
                    off = local[cid]
                else:
                    hi = end
                    while True:  # the last entry of the chunk in the section, on an entry boundary
                        off = data.rfind(cid, pos, hi)
                        if off < 0 or (off - pos) % size == 0:
                            break
                        hi = off + ID_LEN - 1
                    if off < 0:
                        continue
                h = where.get(cid)
                if h is None or h == -2 or (h >= 0 and ranks[h >> 32] < rank):
                    where[cid] = seg | off
        upto.update(dict.fromkeys(todo, n))

    def update(self, written: dict[bytes, tuple]) -> None:
        """Chunks this process stored: id -> (pack, type, offset, stored_len, length, inner)."""
        self._written.update(written)
        self._where.update(dict.fromkeys(written, -1))

    def add_present(self, cids) -> None:
        """Chunks known to be in the vault, without where: a writer deduplicates against them
        (``in``); a read of one finds it with ``Vault.locate``. About 42 bytes a chunk beside its
        id's own 49 (measured with tracemalloc over a million)."""
        where = self._where
        for cid in cids:
            if cid not in where:
                where[cid] = -2

    def forget(self, cids) -> None:
        """Drop chunks given by :meth:`update` (a long-running writer's old tree nodes): a
        later lookup of one misses here and is found by reading the vault's index objects
        again (``Vault.locate``)."""
        written, where = self._written, self._where
        for cid in cids:
            if written.pop(cid, None) is not None and where.get(cid) == -1:
                del where[cid]

    def get(self, cid: bytes, default=None) -> Entry | None:
        e = self.raw(cid)
        return default if e is None else Entry(*e)

    def raw(self, cid: bytes) -> tuple | None:
        """The entry as a plain tuple (pack, type, offset, stored_len, length, inner): the hot path."""
        if self._pending:
            # One chunk costs a pass over every pending section: a caller asking one at a time
            # (verify walking trees node by node) gets the whole mapping after a few.
            self._singles += 1
            if self._singles > self.SINGLES:
                self._settle()
            else:
                self._look_up((cid,))
        h = self._where.get(cid)
        if h is None:
            return None
        if h < 0:
            return self._written.get(cid)  # None: known to be in the vault, not where (add_present)
        pack_id, data = self._segments[h >> 32]
        return (pack_id, *_ENTRY.unpack_from(data, h & 0xFFFFFFFF)[1:])

    def group(self, wanted: dict) -> tuple[dict, list[bytes]]:
        """Where the wanted chunks (id -> any tag) are, grouped for reading:
        ``{pack id: {block offset: (block stored length, [(inner, length, id, tag), ...])}}``,
        and the ids this index does not know. One pass, no Entry built: a restore asks this
        for every page of a database."""
        if self._pending:
            if len(wanted) * self.SETTLE_SHARE >= sum(len(ids) for _seg, _pos, ids in self._pending):
                self._settle()  # most of the index is wanted (a restore of a recent snapshot): no search is cheaper
            else:
                self._look_up(wanted)
        by_pack: dict[bytes, dict[int, tuple[int, list]]] = {}
        missing = []
        where, segments, written, unpack = self._where, self._segments, self._written, _ENTRY.unpack_from
        for cid, tag in wanted.items():
            h = where.get(cid)
            if h is None:
                missing.append(cid)
                continue
            if h < 0:
                e = written.get(cid)
                if e is None:  # known to be in the vault, not where (add_present)
                    missing.append(cid)
                    continue
                pack_id, _, off, slen, length, inner = e
            else:
                pack_id, data = segments[h >> 32]
                _, _, off, slen, length, inner = unpack(data, h & 0xFFFFFFFF)
            blocks = by_pack.get(pack_id)
            if blocks is None:
                blocks = by_pack[pack_id] = {}
            block = blocks.get(off)
            if block is None:
                blocks[off] = (slen, [(inner, length, cid, tag)])
            else:
                block[1].append((inner, length, cid, tag))
        return by_pack, missing

    def __getitem__(self, cid: bytes) -> Entry:
        e = self.get(cid)
        if e is None:
            raise KeyError(cid)
        return e

    def __contains__(self, cid: object) -> bool:
        if self._pending:
            self._settle()  # writers ask for every page they store: one dict, built once
        return cid in self._where

    def __len__(self) -> int:
        self._settle()
        return len(self._where)

    def __iter__(self):
        self._settle()
        return iter(self._where)

    def items(self):
        self._settle()
        return ((cid, self[cid]) for cid in self._where)

    def values(self):
        return (e for _, e in self.items())


def decode_pack_trailer(data: bytes, key: str) -> list[tuple[bytes, int, int, int, int]]:
    if len(data) < 8 or data[-4:] != PACK_MAGIC:
        raise IntegrityError(f"pack {key} is truncated or damaged (no trailer)", hint="run 'mulligan verify'")
    (n,) = struct.unpack_from("<I", data, len(data) - 8)
    start = len(data) - 8 - n
    if start < 0:
        raise IntegrityError(f"pack {key} is truncated or damaged", hint="run 'mulligan verify'")
    idx = decode_index(data[start : len(data) - 8], key)
    return next(iter(idx.values()), [])


class PackWriter:
    """Accumulates new chunks; flushes a pack (then its index) at ``target_size``.

    ``add_raw`` takes plain chunk bytes and compresses them in blocks, many
    blocks at once in parallel; ``add`` takes a chunk its caller compressed
    alone (its own block). Bookkeeping is per block, not per chunk, until a
    pack is cut: a full snapshot adds tens of thousands of chunks, and with a
    tuple or two per chunk on the way it took 1.27 s instead of 1.09 s
    (docs/benchmarks.md).
    """

    def __init__(self, storage: Storage, target_size: int = 8 << 20, codec=None):
        self.storage = storage
        self.target_size = target_size
        self.codec = codec
        self._parts: list[bytes] = []  # compressed blocks, in pack order
        self._blocks: list[tuple] = []  # (type, ids, lengths, offset, stored length) per block, in pack order
        self._size = 0
        self._pending_ids: set[bytes] = set()
        self._raw_blocks: list[tuple[int, list[bytes], list]] = []  # (type, ids, data) waiting for compression
        self._open_ids: list[bytes] = []
        self._open_data: list = []
        self._open_type = T_PAGE
        self._open_size = 0
        self._raw_size = 0
        self._inflight: list[tuple[list, Future]] = []
        self._stores: list[tuple[Future, list]] = []
        self.written: dict[bytes, tuple] = {}  # id -> (pack, type, offset, stored_len, length, inner)
        self.bytes_written = 0
        self.stored_bytes = 0  # compressed bytes of new chunks and blocks
        self.objects_written = 0
        self.index_keys: list[str] = []

    def has(self, chunk_id: bytes) -> bool:
        return chunk_id in self._pending_ids or chunk_id in self.written

    def add(self, chunk_id: bytes, type_: int, blob: bytes, length: int) -> None:
        if self.has(chunk_id):
            return
        self.add_block(type_, [chunk_id], [length], blob)

    def add_block(self, type_: int, ids: list[bytes], lengths: list[int], blob) -> None:
        """A block its caller compressed: the chunks ``ids`` (none held by this writer yet),
        their bytes joined in that order."""
        self._drain()  # keep pack order: blocks already handed to the compressor come first
        self._pending_ids.update(ids)
        self._blocks.append((type_, ids, lengths, self._size, len(blob)))
        self._parts.append(blob)
        self._size += len(blob)
        self.stored_bytes += len(blob)
        if self._size + self._raw_size >= self.target_size:
            self.flush(wait=False)

    def add_raw(self, chunk_id: bytes, type_: int, data: bytes) -> None:
        self.add_raw_many([(chunk_id, data)], type_)

    def add_raw_many(self, items: list[tuple[bytes, bytes]], type_: int) -> int:
        """``add_raw`` for many (id, data) pairs; returns how many were new to this writer."""
        if type_ != self._open_type:
            self._seal()  # a block holds one type of chunk
            self._open_type = type_
        n = 0
        pending, written = self._pending_ids, self.written
        ids, datas = self._open_ids, self._open_data
        for cid, data in items:
            if cid in pending or cid in written:
                continue
            n += 1
            pending.add(cid)
            ids.append(cid)
            datas.append(data)
            self._open_size += len(data)
            if self._open_size >= BLOCK_TARGET:
                self._seal()
                ids, datas = self._open_ids, self._open_data
                if len(self._raw_blocks) >= 64:
                    self._compress()
                if self._size + self._raw_size >= self.target_size:
                    self.flush(wait=False)
                    pending = self._pending_ids
        return n

    def _seal(self) -> None:
        if self._open_ids:
            self._raw_blocks.append((self._open_type, self._open_ids, self._open_data))
            self._raw_size += self._open_size // 3  # rough compressed size, for the flush threshold
            self._open_ids, self._open_data, self._open_size = [], [], 0

    def _compress(self) -> None:
        """Hand the sealed blocks to a compressor thread (zstd releases the GIL), so
        hashing and reading go on while they compress; results are placed in order."""
        if not self._raw_blocks:
            return
        blocks, self._raw_blocks = self._raw_blocks, []
        raws = [b"".join(datas) for _, _, datas in blocks]
        self._inflight.append((blocks, worker("zstd").submit(self.codec.pack_blobs, raws)))
        while len(self._inflight) > 2:
            self._place(*self._inflight.pop(0))

    def _drain(self) -> None:
        while self._inflight:
            self._place(*self._inflight.pop(0))

    def _place(self, blocks: list, future: Future) -> None:
        blobs = future.result()
        for (t, ids, datas), blob in zip(blocks, blobs):
            lengths = [len(d) for d in datas]
            self._blocks.append((t, ids, lengths, self._size, len(blob)))
            self._parts.append(blob)
            self._size += len(blob)
            self.stored_bytes += len(blob)
            self._raw_size -= sum(lengths) // 3

    def flush(self, wait: bool = True) -> None:
        """Cut a pack from what is pending and store it (pack, then its index) in a
        background thread; with ``wait``, return only when every pack is stored."""
        self._seal()
        self._compress()
        self._drain()
        if self._blocks:
            pack_id = os.urandom(ID_LEN)
            blocks, parts = self._blocks, self._parts
            written = self.written
            for t, ids, lengths, off, slen in blocks:
                inner = 0
                for cid, ln in zip(ids, lengths):
                    written[cid] = (pack_id, t, off, slen, ln, inner)
                    inner += ln
            self._parts, self._blocks, self._size, self._pending_ids = [], [], 0, set()
            self._raw_size = 0
            self._stores.append((worker("store").submit(self._store, pack_id, parts, blocks), blocks))
        while len(self._stores) > (0 if wait else 3):
            future, blocks = self._stores.pop(0)
            try:
                future.result()
            except BaseException:
                for _, ids, _, _, _ in blocks:  # not stored: a later write must store these chunks again
                    for cid in ids:
                        self.written.pop(cid, None)
                raise

    def _store(self, pack_id: bytes, parts: list[bytes], blocks: list[tuple]) -> None:
        pack = _ENTRY.pack
        entries = []
        for t, ids, lengths, off, slen in blocks:
            inner = 0
            for cid, ln in zip(ids, lengths):
                entries.append(pack(cid, t, off, slen, ln, inner))
                inner += ln
        index = _index_object([(pack_id, entries)])
        body = b"".join([*parts, index, struct.pack("<I", len(index)), PACK_MAGIC])
        self.storage.check_room(len(body))
        self.storage.put(pack_key(pack_id), body)
        ikey = index_key(os.urandom(ID_LEN))
        self.storage.put(ikey, index)
        self.index_keys.append(ikey)
        self.bytes_written += sum(map(len, parts)) + len(index) + 8
        self.objects_written += 2
