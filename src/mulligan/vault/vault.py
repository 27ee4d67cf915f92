"""The content-addressed vault: chunks in packs, trees of chunk ids, manifests, refs.

Ordering invariants (docs/design.md has the full list):
1. packs are stored before their index, indexes before any manifest that uses them;
2. a manifest is stored last, in one atomic put: its arrival makes the restore
   point exist, so a crash leaves whole restore points or none;
3. ``refs/<target>/latest`` is advisory (a shortcut for reading the newest
   state without a listing); the manifests are the truth.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..errors import IntegrityError, NotFound, StorageError, UsageError
from ..storage import ObjectMissing, Storage, open_storage
from . import catalog
from . import format as fmt
from . import tree
from .blocks import BLOCK_PAGES, BlockDigests
from .codec import ID_LEN, PlainCodec
from .locks import writer_lease
from .workers import REQUESTS_PER_READ_AHEAD, requests, worker
from .manifest import KIND_UNDO, Manifest, manifest_key, new_snapshot_id
from .packs import (T_PAGE, T_TREE, ChunkIndex, Entry, PackWriter, find_in_index, index_key, merge_indexes,
                    pack_key)

Progress = Callable[[int], None]

# Each pack stored adds an index object, and every process that writes or restores lists and
# reads them all: past this many, a writer merges the small ones into one.
INDEX_OBJECTS_MAX = 64
# Most a restore hands its reading thread in one call when it groups several packs (one pack
# alone may give 256 blocks): decompressed blocks of a part live until its pages are written.
PART_BLOCKS = 64
PART_BYTES = 8 << 20
GROUP_BLOCKS = 256  # a large pack is read in parts of this many blocks
GET_MANY_BYTES = 64 << 20  # objects fetched ahead at once (Vault.get_many) hold at most this much
INDEX_SMALL = 1 << 20
# A restore whose vault's index objects hold more than this reads them one at a time (Vault.lean)
# instead of holding them: ~1.3 million chunks, about an hour of busy capture. Past it the lean
# read is also the faster (docs/benchmarks.md: 1.28-1.40 s and 113 MB against 1.55-1.85 s and
# 568 MB over 152 MB of index objects; 3 % slower over 10 MB).
LEAN_READ_INDEX_BYTES = 64 << 20


@dataclass
class SaveStats:
    new_chunks: int = 0
    new_bytes: int = 0


def _decode_manifest(key: str, data: bytes) -> Manifest:
    try:
        return Manifest.decode(data)
    except (ValueError, TypeError, AttributeError):
        raise IntegrityError(f"manifest {key} is damaged", hint="run 'mulligan verify'") from None


def _merge_groups(by_pack: dict, more: dict) -> None:
    """Add ``ChunkIndex.group``'s ``more`` into ``by_pack`` (same shape)."""
    for pack_id, blocks in more.items():
        have = by_pack.setdefault(pack_id, {})
        for off, (slen, chunks) in blocks.items():
            if off in have:
                have[off][1].extend(chunks)
            else:
                have[off] = (slen, chunks)


class Vault:
    def __init__(self, storage: Storage, config: dict):
        self.storage = storage
        self.config = config
        self.codec = PlainCodec(level=int(config.get("zstd_level", 1)))
        self._index: ChunkIndex | None = None
        self._loaded_index_keys: set[str] = set()
        # A lean vault (a watcher's) never loads the whole chunk index, which grows with the
        # vault's history (~195 bytes a chunk, 1.3 million chunks an hour of busy capture):
        # what it reads is looked up one index object at a time (locate), the tree nodes it
        # read are kept, and a writer tells it which chunks to deduplicate against
        # (know_present).
        self.lean = False
        # False while what this process knows of the vault's chunks may be out of date in a way
        # that matters (a watcher whose lease is overdue: a prune may be removing chunks its
        # index names). Writers then deduplicate only against what they store themselves.
        self.dedup_known = True
        self.index_problems: dict[str, str] = {}  # damaged index objects passed over: key -> why
        self._known: dict[str, Manifest] = {}  # manifest key -> manifest (they never change)
        self._catalogs: dict[str, set[str]] = {}  # target id -> manifest keys its catalog holds
        self.catalog_problems: dict[str, str] = {}  # target id -> why its catalog was ignored

    # ---- opening -------------------------------------------------------
    @classmethod
    def create(cls, url: str) -> "Vault":
        storage = open_storage(url)
        if storage.stat("config") is not None:
            raise StorageError(
                f"a vault already exists at {url}",
                unchanged="the existing vault was left as it was",
                hint="use it as it is (point mulligan.toml at it), or choose another --vault",
            )
        if any(True for _ in storage.list("snapshots/")):
            raise StorageError(f"{url} holds vault objects but no config", hint="point --vault at an empty folder")
        storage.create_root()
        storage.check_writes()
        config = {
            "format_version": fmt.FORMAT_VERSION,
            "features": list(fmt.DEFAULT_FEATURES),
            "vault_id": os.urandom(8).hex(),
            "chunking": {"kind": "page", "id_len": ID_LEN, "tree_fanout": tree.FANOUT},
            "encryption": "none",
            "zstd_level": 1,
        }
        storage.put("config", fmt.encode(config))
        return cls(storage, config)

    @classmethod
    def open(cls, url: str) -> "Vault":
        storage = open_storage(url)
        try:
            raw = storage.get("config")
        except ObjectMissing:
            raise NotFound(
                f"no vault at {url}",
                hint="run 'mulligan init' to create one, or fix [vault] url in mulligan.toml",
            ) from None
        try:
            config = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"the vault config at {url} is damaged", hint="restore it from a copy of the vault") from None
        fmt.check(config, url)
        return cls(storage, config)

    # ---- chunk index -----------------------------------------------------
    def index(self, refresh: bool = False) -> ChunkIndex:
        """Chunk id -> where it is. Loaded once; a stale index only costs a duplicate
        write (dedup is an optimisation), and a read that misses refreshes it."""
        if self._index is None:
            self._index = ChunkIndex()
            refresh = not self.lean
        if refresh and not self.lean:
            listed = [(key, size) for key, size in self.storage.list("index/") if key not in self._loaded_index_keys]
            for key, data in self.get_many(listed):
                # None: replaced since the listing (prune rewrites indexes, watch merges small
                # ones): the replacement was written first, and a later miss lists again.
                if data is None:
                    continue
                try:
                    self._add_index(key, data)
                except IntegrityError as exc:
                    self._skip_damaged(key, exc)
        return self._index

    def _skip_damaged(self, key: str, exc: IntegrityError) -> None:
        """A damaged index object is passed over, not a reason to stop: pages are checked
        against their ids wherever they are found, a writer stores a page it cannot find again,
        and prune reads the index objects itself (it stops at a damaged one). A chunk named only
        there is missing, and the error says which object may name it."""
        self.index_problems[key] = exc.message
        self._loaded_index_keys.add(key)

    def _chunk_missing(self, cid: bytes) -> IntegrityError:
        damaged = "".join(f" (the vault's {m}: it may name it)" for m in list(self.index_problems.values())[:1])
        return IntegrityError(f"chunk {cid.hex()} is not in any pack of the vault{damaged}",
                              hint="run 'mulligan verify'")

    def get_many(self, listed: list[tuple[str, int]]) -> Iterator[tuple[str, bytes | None]]:
        """(key, object or None if it is gone) for each listed (key, size), in order. On an object
        store several requests are in flight: up to REQUESTS_PER_READ_AHEAD per ``read_ahead``
        (a round trip each, for mostly small objects: index objects, segments) and up to
        GET_MANY_BYTES of objects."""
        ahead = self.storage.read_ahead
        if ahead <= 1 or len(listed) < 2:
            for key, _size in listed:
                yield key, self._get_or_none(key)
            return
        pool = requests(ahead)
        most = REQUESTS_PER_READ_AHEAD * ahead
        pending: deque = deque()
        held = nxt = 0
        for i, (key, _size) in enumerate(listed):
            while nxt < len(listed) and (nxt <= i or (nxt - i < most and held + listed[nxt][1] <= GET_MANY_BYTES)):
                pending.append(pool.submit(self._get_or_none, listed[nxt][0]))
                held += listed[nxt][1]
                nxt += 1
            data = pending.popleft().result()
            held -= listed[i][1]
            yield key, data

    def _get_or_none(self, key: str) -> bytes | None:
        try:
            return self.storage.get(key)
        except ObjectMissing:
            return None

    def revalidate_index(self) -> None:
        """Drop the cached index if an index object it was loaded from is gone.

        A writer calls this once its lease is held: a prune that ran since the index was loaded
        (in another process, while this one held no lease) may have deleted packs, and
        deduplicating against their chunks would make a manifest name data that no longer
        exists. Prune rewrites an index before deleting a pack it names, so a deleted pack
        always shows as a vanished index key."""
        if self._index is None:
            return
        present = {key for key, _ in self.storage.list("index/")}
        if not self._loaded_index_keys <= present:
            self._index = None
            self._loaded_index_keys = set()

    def compact_indexes(self) -> int:
        """Merge the small index objects into one when there are more than
        ``INDEX_OBJECTS_MAX``: the merged object is stored first, then the small ones are
        deleted (a reader that listed them a moment ago skips the ones gone and finds the
        merged one when it looks again). Called with a writer lease held, so no prune is
        rewriting indexes meanwhile. Returns how many objects were merged."""
        if len(self._loaded_index_keys) <= INDEX_OBJECTS_MAX and not self.lean:
            return 0  # what this process loaded and wrote: no listing on every write to find out
        listing = list(self.storage.list("index/"))
        small = [key for key, size in listing if size < INDEX_SMALL]
        if len(listing) <= INDEX_OBJECTS_MAX or len(small) < 2:
            return 0
        read: list[str] = []

        def objects():  # one at a time: up to INDEX_OBJECTS_MAX objects of up to INDEX_SMALL each
            for key in small:
                try:
                    data = self.storage.get(key)
                except ObjectMissing:
                    continue  # merged or rewritten by another process since the listing
                read.append(key)
                yield key, data

        try:
            merged = merge_indexes(objects())
        except IntegrityError:
            return 0  # a damaged index object: left as it is for verify to report
        key = index_key(os.urandom(ID_LEN))
        self.storage.put(key, merged)
        del merged
        for old in read:
            self.storage.delete(old)
        if self._index is not None:  # same entries, now under one key
            self._loaded_index_keys -= set(read)
            self._loaded_index_keys.add(key)
        return len(read)

    def _add_index(self, key: str, data: bytes) -> None:
        assert self._index is not None
        self._index.add_index(data, key)
        self._loaded_index_keys.add(key)

    def lean_if_large(self, limit: int | None = None) -> bool:
        """A reader's vault (a restore) whose index objects are larger than ``limit`` (default
        LEAN_READ_INDEX_BYTES) becomes lean: loaded whole, the index would take some 2.4 times
        its bytes of memory (a restore over a few days of busy capture: gigabytes). Every tree
        node is then read in one pass, and the pages a restore wants in one more. Not for a
        writer: it would deduplicate against nothing (know_present)."""
        if self._index is not None or self.lean:
            return self.lean
        limit = LEAN_READ_INDEX_BYTES if limit is None else limit
        if sum(size for _, size in self.storage.list("index/")) <= limit:
            return False
        self.lean = True
        self.index().update(self._scan_index(None, T_TREE))
        return True

    def locate(self, wanted: Iterable[bytes], *, tree: bool = False) -> ChunkIndex:
        """A chunk index of the wanted chunks alone, found by reading every index object in the
        vault, one at a time (memory: one object, not the vault's whole index). For a lean
        vault's reads, and for a chunk the cached index does not name although an object it
        counts as loaded does (a watcher forgets the tree nodes of its older bases,
        ``ChunkIndex.forget``). ``tree``: the wanted chunks are tree nodes, and the packs
        holding none (nearly all of a capture's) are passed over without reading their ids."""
        found = ChunkIndex()
        found.update(self._scan_index(set(wanted), T_TREE if tree else None))
        return found

    def _scan_index(self, wanted: set[bytes] | None, only_type: int | None) -> dict[bytes, tuple]:
        """{id: entry} of the wanted chunks (every chunk of ``only_type`` when None) over every
        index object, one object held at a time, each from the copy ``pack_rank`` puts first.
        An object gone between the listing and its read was replaced (watch merges its small
        ones every half minute, prune rewrites them) by one written first but maybe not listed:
        the chunks still missing are then looked for in a new listing's objects."""
        out: dict[bytes, tuple] = {}
        if wanted is not None and not wanted:
            return out
        seen: set[str] = set()
        for _ in range(4):
            got, replaced = self._scan_objects(wanted if wanted is None else wanted - out.keys(), only_type, seen)
            out.update(got)
            if not replaced or (wanted is not None and out.keys() >= wanted):
                break
        return out

    def _scan_objects(self, wanted: set[bytes] | None, only_type: int | None,
                      seen: set[str]) -> tuple[dict[bytes, tuple], bool]:
        best: dict[bytes, tuple[tuple, tuple]] = {}
        replaced = False
        listed = [(key, size) for key, size in self.storage.list("index/") if key not in seen]
        for key, data in self.get_many(listed):
            seen.add(key)
            if data is None:
                replaced = True
                continue
            try:
                for cid, rank, entry in find_in_index(data, key, wanted, only_type):
                    if cid not in best or best[cid][0] < rank:
                        best[cid] = (rank, entry)
            except IntegrityError as exc:  # raised before any entry of it is taken
                self._skip_damaged(key, exc)
            del data  # not held while the next object is read
        return {cid: entry for cid, (_rank, entry) in best.items()}, replaced

    def remember_where(self, cids: Iterable[bytes]) -> None:
        """A lean reader about to read these chunks a few at a time (a diff: SQLite asks for
        pages as it goes): their places looked up in one pass and kept, not a pass per read."""
        self.index().update(self._scan_index(set(cids), None))

    def _present_now(self, likely: Callable[[], Iterable[bytes]] | None) -> ChunkIndex:
        """For a lean writer holding its lease: the chunks of ``likely()`` the vault holds now."""
        if likely is None:
            return ChunkIndex()
        try:
            return self.locate(set(likely()))
        except (IntegrityError, ObjectMissing):
            return ChunkIndex()  # unreadable: every page is stored, which is only slower

    def know_present(self, cids: Iterable[bytes]) -> int:
        """Tell a lean vault's index which of these chunks the vault holds (one pass over its
        index objects), for a writer to deduplicate against. Returns how many it holds."""
        found = self.locate(cids)
        self.index().add_present(found)
        return len(found)

    def _where(self, cid: bytes) -> Entry:
        e = self.index().get(cid)
        if e is None and not self.lean:
            e = self.index(refresh=True).get(cid)
        if e is None:
            e = self.locate([cid]).get(cid)
        if e is None:
            raise self._chunk_missing(cid)
        return e

    def _absorb(self, writer: PackWriter) -> None:
        if self._index is None:
            self._index = ChunkIndex()
        self._index.update(writer.written)
        self._loaded_index_keys.update(writer.index_keys)

    # ---- reading chunks -----------------------------------------------------
    def load_chunk(self, cid: bytes) -> bytes:
        e = self._where(cid)
        key = pack_key(e.pack)
        try:
            blob = self.storage.get_range(key, e.offset, e.stored_len)
        except ObjectMissing:
            raise IntegrityError(f"pack {key} is missing from the vault", hint="run 'mulligan verify'") from None
        block = self.codec.decompress(blob, f"in {key}")
        return self.codec.check(block[e.inner : e.inner + e.length], cid, e.length)

    def iter_chunks(self, wanted: Iterable[bytes], *, tree: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Yield (id, data) for each wanted chunk, reading each pack once, verified (``tree``: the
        wanted chunks are tree nodes, see ``locate``)."""
        for batch in self.iter_chunk_batches(wanted, tree=tree):
            yield from batch

    def iter_chunk_batches(self, wanted: Iterable[bytes], *, tree: bool = False) -> Iterator[list[tuple[bytes, bytes]]]:
        """Lists of (id, data) of the wanted chunks, a few MiB at a time, each verified."""
        check = self.codec.check
        for part in self._read_blocks(dict.fromkeys(wanted), tree=tree):
            yield [(c, check(bytes(block[i : i + n]), c, n)) for block, chunks in part for i, n, c, _ in chunks]

    def _read_blocks(self, wanted: dict, tree: bool = False) -> Iterator[list[tuple[memoryview, list]]]:
        """The blocks holding the wanted chunks (id -> tag), decompressed, as lists of
        (block, [(inner, length, id, tag), ...]): a part at a time (up to 256 blocks of one
        pack, or up to PART_BLOCKS blocks of several small ones), the next part read and
        decompressed in a worker thread meanwhile."""
        return self._read_parts(self._plan_reads(wanted, tree=tree))

    def _plan_reads(self, wanted: dict, tree: bool = False, part_blocks: int = 0) -> list[list]:
        """Where the wanted chunks are, cut into parts to read: each part a list of
        (pack id, {block offset: (stored length, chunks)}, [block offsets]), of up to
        ``part_blocks`` blocks if given."""
        idx = self.index()
        by_pack, missing = idx.group(wanted)
        if missing and not self.lean:  # written since the index was loaded: a read that misses refreshes it
            more, missing = self.index(refresh=True).group({c: wanted[c] for c in missing})
            _merge_groups(by_pack, more)
        if missing:  # a lean vault's, or forgotten by a long-running writer (Vault.locate)
            found = self.locate(missing, tree=tree)
            if tree and self.lean:  # the tree nodes read are kept
                idx.update({c: e for c in missing if (e := found.raw(c)) is not None})
            more, missing = found.group({c: wanted[c] for c in missing})
            _merge_groups(by_pack, more)
        if missing:
            raise self._chunk_missing(missing[0])
        # Work for the reading thread in parts: a large pack is cut every GROUP_BLOCKS blocks,
        # small packs (a captured history's flushes hold a few blocks each) are read together
        # up to PART_BLOCKS blocks and PART_BYTES read (from a pack's first wanted block to its
        # last), so the thread is handed one call per part, not one per pack, and memory stays
        # where one pack a call kept it.
        group_blocks = min(GROUP_BLOCKS, part_blocks or GROUP_BLOCKS)
        most = min(PART_BLOCKS, part_blocks or PART_BLOCKS)
        parts: list[list[tuple[bytes, dict, list[int]]]] = []
        part: list[tuple[bytes, dict, list[int]]] = []
        count = nbytes = 0
        for pack_id, blocks in by_pack.items():
            offsets = sorted(blocks)
            for start in range(0, len(offsets), group_blocks):
                group = offsets[start : start + group_blocks]
                span = group[-1] + blocks[group[-1]][0] - group[0]
                if part and (count + len(group) > most or nbytes + span > PART_BYTES):
                    parts.append(part)
                    part, count, nbytes = [], 0, 0
                part.append((pack_id, blocks, group))
                count += len(group)
                nbytes += span
        if part:
            parts.append(part)
        return parts

    def _read_parts(self, parts: list[list]) -> Iterator[list[tuple[memoryview, list]]]:
        # One part is read ahead of the caller's work (several on an object store, whose requests
        # each wait a round trip: Storage.read_ahead); parts are handed over in order.
        ahead = max(1, self.storage.read_ahead)
        pool = worker("read") if ahead == 1 else worker(f"read-{ahead}", ahead)
        pending = deque(pool.submit(self._read_part, p) for p in parts[:ahead])
        for i, part in enumerate(parts):
            decoded = pending.popleft().result()
            if i + ahead < len(parts):
                pending.append(pool.submit(self._read_part, parts[i + ahead]))
            out = []
            it = iter(decoded)
            for _pack_id, blocks, group in part:
                out.extend((next(it), blocks[o][1]) for o in group)
            yield out

    def _pack_range(self, key: str, lo: int, hi: int) -> bytes:
        try:
            body = self.storage.get_range(key, lo, hi - lo)
        except ObjectMissing:
            raise IntegrityError(f"pack {key} is missing from the vault", hint="run 'mulligan verify'") from None
        if len(body) < hi - lo:
            raise IntegrityError(f"pack {key} is truncated", hint="run 'mulligan verify'")
        return body

    def _read_part(self, part: list[tuple[bytes, dict, list[int]]]) -> list:
        """Read the given blocks of each pack (one ranged read a pack) and decompress them all
        in one call."""
        raws: list = []
        spans = []
        ranges = [(pack_key(pack_id), offsets[0], max(o + blocks[o][0] for o in offsets))
                  for pack_id, blocks, offsets in part]
        ahead = self.storage.read_ahead
        if ahead > 1 and len(ranges) > 1:  # several small packs a round trip away: ask for them at once
            bodies = list(requests(ahead).map(lambda r: self._pack_range(*r), ranges))
        else:
            bodies = [self._pack_range(*r) for r in ranges]
        for (_pack_id, blocks, offsets), (key, lo, _hi), body in zip(part, ranges, bodies):
            view = memoryview(body)
            spans.append((key, len(raws), len(offsets)))
            raws.extend(view[o - lo : o - lo + blocks[o][0]] for o in offsets)
        if len(spans) == 1:
            return self.codec.decompress_many(raws, f"in {spans[0][0]}")
        try:
            return self.codec.decompress_many(raws)
        except IntegrityError:
            for key, first, n in spans:  # name the pack holding the damaged block
                self.codec.decompress_many(raws[first : first + n], f"in {key}")
            raise

    # ---- writing states --------------------------------------------------
    def save_pages(
        self,
        *,
        target_id: str,
        target_name: str,
        page_size: int,
        batches: Iterable[list[bytes]],
        time: str,
        kind: str = "snapshot",
        tag: str | None = None,
        meta: dict | None = None,
        progress: Progress | None = None,
        snapshot_id: str | None = None,
        previous: BlockDigests | None = None,
        likely: Callable[[], Iterable[bytes]] | None = None,
    ) -> Manifest:
        """Store a state given as page batches in page order; return its manifest.

        A batch may also carry ``raw`` (its pages end to end, as read) and ``patched``
        (indexes of pages not taken from ``raw``): whole blocks are then hashed
        without copying. ``previous`` (vault/blocks.py) lets unchanged blocks take
        their page ids from an earlier snapshot; the returned manifest carries the
        new snapshot's digests as ``block_digests``.

        A lean vault (``lean_if_large``) deduplicates only against the chunks ``likely`` names
        (the pages the state most likely shares with stored ones), looked up once the lease is
        held: what it learned before may name a pack a prune deleted in between."""
        with writer_lease(self.storage, f"{kind} of {target_name}"):
            self.revalidate_index()
            idx = self._present_now(likely) if self.lean else self.index()
            writer = PackWriter(self.storage, codec=self.codec)
            ids = bytearray()
            digests: dict[int, bytes] = {}
            stats = SaveStats()
            page_count = 0
            chunk_id = self.codec.chunk_id
            reuse = self._reusable(target_id, page_size, previous)
            B = BLOCK_PAGES
            for batch in batches:
                first, n = page_count, len(batch)
                page_count += n
                raw = getattr(batch, "raw", None)
                view = memoryview(raw) if raw is not None and len(raw) >= n * page_size else None
                patched = {i // B for i in getattr(batch, "patched", ())}
                fresh: list[tuple[bytes, bytes]] = []
                if reuse is None:
                    batch_ids = [chunk_id(p) for p in batch]
                    ids += b"".join(batch_ids)
                    fresh = [(cid, p) for cid, p in zip(batch_ids, batch) if cid not in idx]
                whole = n - n % B if first % B == 0 else 0  # pages in whole blocks (batches start on one)
                for k in range(0, whole, B):
                    block = (first + k) // B
                    data = view[k * page_size : (k + B) * page_size] if view is not None and k // B not in patched \
                        else b"".join(batch[k : k + B])
                    d = digests[block] = chunk_id(data)
                    if reuse is None:
                        continue
                    if reuse.digests[block * ID_LEN : (block + 1) * ID_LEN] == d:
                        ids += reuse.ids[(first + k) * ID_LEN : (first + k + B) * ID_LEN]
                        continue
                    self._hash_pages(batch[k : k + B], ids, fresh, idx)
                if reuse is not None and whole < n:  # pages outside whole blocks
                    self._hash_pages(batch[whole:], ids, fresh, idx)
                if fresh:
                    stats.new_chunks += writer.add_raw_many(fresh, T_PAGE)
                if progress:
                    progress(n)

            def store_node(node: bytes) -> bytes:
                cid = self.codec.chunk_id(node)
                if cid not in idx and not writer.has(cid):
                    writer.add_raw(cid, T_TREE, node)
                    stats.new_chunks += 1
                return cid

            root, depth = tree.build(bytes(ids), store_node)
            writer.flush()
            stats.new_bytes = writer.stored_bytes
            self._absorb(writer)
            parent = self.latest(target_id)
            m = Manifest(
                id=snapshot_id or new_snapshot_id(),
                target_id=target_id,
                target_name=target_name,
                time=time,
                kind=kind,
                tag=tag,
                page_size=page_size,
                page_count=page_count,
                root=root.hex(),
                depth=depth,
                logical_size=page_count * page_size,
                new_bytes=stats.new_bytes,
                new_chunks=stats.new_chunks,
                new_objects=writer.objects_written + 1,
                parent=parent.id if parent else None,
                meta=meta or {},
            )
            m.new_bytes += len(m.encode())  # the manifest itself counts as newly stored
            self.storage.put(m.key, m.encode())
            zero = bytes(ID_LEN)  # a block without a digest (the reader's batches were not aligned to blocks)
            m.block_digests = BlockDigests(m.id, m.root, page_size, bytes(ids),
                                           b"".join(digests.get(b, zero) for b in range(page_count // B)))
            if kind != KIND_UNDO:
                current = self.latest(target_id)
                if current is None or (current.time, current.id) <= (m.time, m.id):
                    self.storage.put(f"refs/{target_id}/latest", m.id.encode(), overwrite=True)
            self.manifest_stored(m)
            try:
                self.compact_indexes()  # the restore point exists already: this only tidies
            except StorageError:
                pass
            return m

    def _hash_pages(self, pages: list[bytes], ids: bytearray, fresh: list, idx: ChunkIndex) -> None:
        chunk_id = self.codec.chunk_id
        page_ids = [chunk_id(p) for p in pages]
        ids += b"".join(page_ids)
        fresh.extend((cid, p) for cid, p in zip(page_ids, pages) if cid not in idx)

    def _reusable(self, target_id: str, page_size: int, previous: BlockDigests | None) -> BlockDigests | None:
        """``previous`` if its snapshot is still in the vault as it describes it, else None.

        Called with the writer lease held: a prune cannot remove that snapshot's chunks
        until this write is over, so page ids taken from it name stored chunks."""
        if previous is None or previous.page_size != page_size or previous.block_pages != BLOCK_PAGES:
            return None
        try:
            m = self.manifest(target_id, previous.snapshot_id)
        except (NotFound, IntegrityError):
            return None
        if m.root != previous.root or m.page_size != page_size or m.page_count != previous.page_count:
            return None
        if len(previous.digests) // ID_LEN > m.page_count // BLOCK_PAGES:
            return None
        return previous

    # ---- reading states ----------------------------------------------------
    def page_ids(self, m: Manifest) -> list[bytes]:
        return self.page_ids_many([m])[m.id]

    def page_ids_many(self, ms: list[Manifest]) -> dict[str, list[bytes]]:
        """{point id: its page ids} of several restore points, their trees read a level at a time
        for all of them (a lean vault looks each level up in one pass over its index objects)."""
        out, trees = {}, {}
        for m in ms:
            resolved = getattr(m, "resolved_ids", None)  # a captured commit point (ops/capture_store.py)
            if resolved is not None:
                out[m.id] = list(resolved)
                continue
            if getattr(m, "from_catalog", False):
                self._confirm(m)
            trees[m.id] = (bytes.fromhex(m.root), m.depth)
        flats = tree.expand_many(
            trees, lambda level: {c: d for batch in self.iter_chunk_batches(level, tree=True) for c, d in batch})
        for m in ms:
            if m.id in out:
                continue
            flat = flats[m.id]
            ids = [flat[i : i + ID_LEN] for i in range(0, len(flat), ID_LEN)]
            if len(ids) != m.page_count:
                raise IntegrityError(
                    f"restore point {m.id} lists {len(ids)} pages but says it has {m.page_count}",
                    hint="run 'mulligan verify'",
                )
            out[m.id] = ids
        return out

    def iter_pages(self, m: Manifest) -> Iterator[tuple[list[int], bytes]]:
        """Yield (page numbers starting at 1, page bytes) for every distinct page, verified."""
        where: dict[bytes, list[int]] = defaultdict(list)
        for i, cid in enumerate(self.page_ids(m), 1):
            where[cid].append(i)
        check = self.codec.check
        for part in self._read_blocks(where):
            for block, chunks in part:
                for inner, n, cid, pgnos in chunks:
                    self._check_page(m, cid, n)
                    yield pgnos, check(bytes(block[inner : inner + n]), cid, n)

    def iter_page_batches(self, m: Manifest) -> Iterator[list[tuple[int, bytes]]]:
        """Lists of (page number starting at 1, page bytes) covering every page once, verified;
        pages come in the order the vault holds them, a few MiB at a time."""
        yield from self.page_batch_shards(m, 1)[0]

    def page_batch_shards(self, m: Manifest, n: int) -> list[Iterator[list[tuple[int, bytes]]]]:
        """The pages of ``m`` as up to ``n`` iterators of batches like :meth:`iter_page_batches`',
        each page in exactly one of them, of about as many pages each (fewer iterators when
        there are fewer parts to share out). Where every page is, is looked up here, once (a
        missing one raises here); the pages are read, decompressed and checked as each
        iterator is consumed, which may be in a process of its own (engines/sqlite/engine.py,
        ``parallel.fan_out``)."""
        ids = self.page_ids(m)
        where = dict(zip(ids, range(1, len(ids) + 1)))  # id -> the last page holding it
        also: dict[bytes, list[int]] = {}  # id -> the other pages with the same content
        if len(where) < len(ids):
            for pgno, cid in enumerate(ids, 1):
                if where[cid] != pgno:
                    also.setdefault(cid, []).append(pgno)
        if n <= 1:
            return [self._page_batches(m, self._plan_reads(where), also)]
        # Parts small enough to share out evenly (a base stored whole is a few large packs):
        # some 16 parts a share, if its pages are in blocks of 16.
        parts = self._plan_reads(where, part_blocks=max(1, len(where) // (16 * 16 * n)))
        shares: list[list] = [[] for _ in range(n)]
        load = [0] * n
        for part in parts:  # each to the share with the fewest pages so far
            k = load.index(min(load))
            shares[k].append(part)
            load[k] += sum(len(in_pack[o][1]) for _pack, in_pack, group in part for o in group)
        return [self._page_batches(m, share, also) for share in shares if share] or [iter(())]

    def _page_batches(self, m: Manifest, parts: list[list], also: dict) -> Iterator[list[tuple[int, bytes]]]:
        ps, check = m.page_size, self.codec.check
        for part in self._read_parts(parts):
            out = []
            for block, chunks in part:
                for inner, n, cid, pgno in chunks:
                    if n != ps:
                        self._check_page(m, cid, n)
                    data = check(bytes(block[inner : inner + n]), cid, n)
                    out.append((pgno, data))
                    if also and cid in also:
                        out.extend((p, data) for p in also[cid])
            yield out

    @staticmethod
    def _check_page(m: Manifest, cid: bytes, length: int) -> None:
        if length != m.page_size:
            raise IntegrityError(f"chunk {cid.hex()} has {length} bytes, not a {m.page_size}-byte page")

    # ---- manifests -----------------------------------------------------------
    def manifests(self, target_id: str | None = None, *, direct: bool = False) -> list[Manifest]:
        """Restore points of one target (or all), oldest first. Which exist is decided by
        listing ``snapshots/``; their contents come from the target's catalog when it holds
        them (vault/catalog.py), else from the manifests themselves (always, when ``direct``:
        prune decides what data is still referenced from the manifests alone)."""
        prefix = f"snapshots/{target_id}/" if target_id else "snapshots/"
        keys = [key for key, _ in self.storage.list(prefix)]
        if direct:
            return sorted((_decode_manifest(k, self.storage.get(k)) for k in keys), key=lambda m: (m.time, m.id))
        self._drop_unlisted(prefix, set(keys))
        return self._read_manifests(keys)

    def _drop_unlisted(self, prefix: str, listed: set[str]) -> None:
        """Forget cached manifests under ``prefix`` that a listing no longer shows (pruned): a
        long-running watcher's cache stays the size of the vault's restore points."""
        for key in [k for k in self._known if k.startswith(prefix) and k not in listed]:
            del self._known[key]

    def _read_manifests(self, keys: list[str]) -> list[Manifest]:
        out = []
        for key in keys:
            m = self._known.get(key)
            if m is None:
                tid = key.split("/", 2)[1]
                if tid not in self._catalogs:
                    self._load_catalog(tid)
                    m = self._known.get(key)
                if m is None:
                    m = self._known[key] = _decode_manifest(key, self.storage.get(key))
            out.append(m)
        out.sort(key=lambda m: (m.time, m.id))
        return out

    def _load_catalog(self, target_id: str) -> None:
        self._catalogs[target_id] = set()
        key = catalog.catalog_key(target_id)
        try:
            entries = catalog.decode(self.storage.get(key), target_id, key)
        except ObjectMissing:
            return
        except IntegrityError as exc:
            self.catalog_problems[target_id] = exc.message  # ignored: the manifests are read instead
            return
        self._catalogs[target_id] = set(entries)
        for k, m in entries.items():
            if k not in self._known:
                m.from_catalog = True  # a copy: confirmed against its manifest before pages are read
                self._known[k] = m

    def refresh_catalog(self, target_id: str, *, always: bool = False) -> bool:
        """Rewrite the target's catalog from a fresh listing when it lacks (or holds gone)
        at least ``catalog.SLACK`` manifests, or whenever it differs when ``always``.
        Returns whether it was written. Only writers call this; readers never write."""
        keys = [key for key, _ in self.storage.list(f"snapshots/{target_id}/")]
        if target_id not in self._catalogs:
            self._load_catalog(target_id)
        held, listed = self._catalogs[target_id], set(keys)
        self._drop_unlisted(f"snapshots/{target_id}/", listed)
        close = held == listed or (not always and len(listed - held) < catalog.SLACK
                                   and len(held - listed) < catalog.SLACK)
        if close and target_id not in self.catalog_problems:
            return False
        ms = self._read_manifests(keys)  # only now: the ones the catalog lacks are read one by one
        key = catalog.catalog_key(target_id)
        if ms:
            self.storage.put(key, catalog.encode(target_id, ms), overwrite=True)
        else:
            self.storage.delete(key)
        self._catalogs[target_id] = listed
        self.catalog_problems.pop(target_id, None)
        return True

    def _confirm(self, m: Manifest) -> None:
        """Before a restore point's pages are read through a catalog's copy of its manifest,
        the manifest itself is read once and must say the same (one read, not one per point)."""
        real = self.manifest(m.target_id, m.id)
        if real != m:  # every field
            raise IntegrityError(
                f"the catalog's copy of restore point {m.id} differs from its manifest",
                unchanged="nothing was written",
                hint=f"delete the object {catalog.catalog_key(m.target_id)} from the vault (a copy of the "
                     "manifests, rebuilt by the next prune) and run the command again; then run 'mulligan verify'",
            )
        m.from_catalog = False

    def manifest_stored(self, m: Manifest) -> None:
        """After a writer stored ``m``: now and then bring the target's catalog up to date."""
        if catalog.due(m.id):
            try:
                self.refresh_catalog(m.target_id)
            except (StorageError, IntegrityError):
                pass  # the restore point exists already: this only tidies

    def manifest(self, target_id: str, snapshot_id: str) -> Manifest:
        key = manifest_key(target_id, snapshot_id)
        try:
            data = self.storage.get(key)
        except ObjectMissing:
            raise NotFound(f"no restore point {snapshot_id}", hint="list them with 'mulligan snapshots NAME'") from None
        return _decode_manifest(key, data)

    def resolve(self, prefix: str) -> Manifest:
        """A snapshot id or a unique prefix of one, across the whole vault."""
        prefix = prefix.strip().lower()
        if len(prefix) < 4:
            raise UsageError(f"snapshot id prefix {prefix!r} is too short", hint="give at least 4 characters")
        hits = [key for key, _ in self.storage.list("snapshots/") if key.rsplit("/", 1)[-1].startswith(prefix)]
        if not hits:
            raise NotFound(f"no restore point has an id starting with {prefix!r}", hint="list them with 'mulligan snapshots NAME'")
        if len(hits) > 1:
            raise UsageError(
                f"the id prefix {prefix!r} matches {len(hits)} restore points",
                hint="give more characters of the id",
            )
        return _decode_manifest(hits[0], self.storage.get(hits[0]))

    def latest(self, target_id: str) -> Manifest | None:
        """Newest restore point of a target's own history (never an undo point)."""
        try:
            sid = self.storage.get(f"refs/{target_id}/latest").decode()
            return self.manifest(target_id, sid)
        except (ObjectMissing, NotFound):
            pass
        candidates = [m for m in self.manifests(target_id) if m.kind != KIND_UNDO]
        return candidates[-1] if candidates else None

    def delete_manifest(self, m: Manifest) -> None:
        self.storage.delete(m.key)
        self._known.pop(m.key, None)
        try:
            if self.storage.get(f"refs/{m.target_id}/latest").decode() == m.id:
                self.storage.delete(f"refs/{m.target_id}/latest")
        except ObjectMissing:
            pass

    # ---- small JSON records (targets, incidents, audit) ---------------------
    def put_json(self, key: str, obj, *, overwrite: bool = True) -> None:
        self.storage.put(key, json.dumps(obj, indent=1, sort_keys=True).encode(), overwrite=overwrite)

    def get_json(self, key: str):
        return json.loads(self.storage.get(key))
