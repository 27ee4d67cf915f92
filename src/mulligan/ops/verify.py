"""verify: re-read every manifest, pack and chunk; optionally restore the latest point."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Iterable

from ..errors import IntegrityError, MulliganError
from ..storage import ObjectMissing
from ..vault import tree
from ..vault.packs import decode_index, decode_pack_trailer, pack_key
from .workspace import Workspace

# Other record kinds (audit log, capture segments) add checks here: check(ws, res, target_id,
# sound), ``sound`` a :class:`Sound` (which chunks verify found sound).
EXTRA_CHECKS: list = []


def _audit_chain(ws: Workspace, res: "VerifyResult", target_id, sound: "Sound") -> None:
    """The audit log is vault-wide: its hash chain is checked whatever the target."""
    from .audit import PREFIX, read

    for p in read(ws.vault).problems:
        res.problem(PREFIX, f"audit log: {p}")


EXTRA_CHECKS.append(_audit_chain)


@dataclass
class Sound:
    """What verify read: the ids of the chunks it found sound, and the packs it read."""

    vault: object
    good: set[bytes]
    read: set[str]
    gone: set[str] = field(default_factory=set)  # packs an index names that are missing
    later: set[str] = field(default_factory=set)  # packs written since verify listed them

    def unsound(self, cids: Iterable[bytes]) -> list[bytes]:
        """Of these chunk ids, those missing from the vault or damaged. A chunk in a pack written
        since verify listed the packs (a running watch stores one every half second) is not
        missing: that pack goes into ``later``, read and checked at the end."""
        rest = [c for c in dict.fromkeys(cids) if c not in self.good]
        if not rest:
            return []
        found = self.vault.locate(rest)  # one pass over the index objects, only for these
        out = []
        for c in rest:
            e = found.get(c)
            if e is None or pack_key(e.pack) in self.read or pack_key(e.pack) in self.gone:
                out.append(c)
            else:
                self.later.add(pack_key(e.pack))
        return out


@dataclass
class VerifyResult:
    packs: int = 0
    chunks: int = 0
    manifests: int = 0
    bytes_read: int = 0
    problems: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    restore_test: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, obj: str, what: str) -> None:
        self.problems.append({"object": obj, "problem": what})

    def to_json(self) -> dict:
        return {"ok": self.ok, "packs": self.packs, "chunks": self.chunks, "manifests": self.manifests,
                "bytes_read": self.bytes_read, "problems": self.problems, "notes": self.notes,
                "restore_test": self.restore_test}


def verify(ws: Workspace, target_name: str | None = None, restore_test: bool = False, progress=None) -> VerifyResult:
    vault, st = ws.vault, ws.vault.storage
    res = VerifyResult()
    good: set[bytes] = set()
    naming: dict[bytes, list[str]] = {}  # pack id -> index objects that name it
    # The chunk index is not held (Vault.lean): only the ids of the sound chunks are, and the
    # restore points' tree nodes are looked up an index object at a time (every pack is read
    # anyway; a loaded index would add some 195 bytes a chunk to the ~100 each sound id costs).
    vault.lean_if_large(limit=0)
    damaged_index: list[str] = []
    # Objects are fetched a few at a time on an object store (Vault.get_many); None: gone.
    for key, data in vault.get_many(list(st.list("index/"))):
        if data is None:
            # watch merges its small index objects and prune rewrites indexes (the replacement
            # is written first): listed a moment ago, gone now, is not damage.
            res.notes.append(f"{key} was replaced while verify ran")
            continue
        try:
            for pack_id in decode_index(data, key):
                naming.setdefault(pack_id, []).append(key)
        except MulliganError as exc:
            res.problem(key, exc.message)
            damaged_index.append(key)
    packs = list(st.list("packs/"))
    indexed_packs = set(naming)
    vanished = set()
    for key, body in vault.get_many(packs):
        res.packs += 1
        if body is None:
            vanished.add(key)
            res.notes.append(f"{key} was removed while verify ran (prune)")
            continue
        if not _check_pack(vault, key, body, res, good):
            continue
        pack_id = bytes.fromhex(key.rsplit("/", 1)[-1])
        if pack_id not in indexed_packs and damaged_index:
            # The damaged object may be the one naming it: prune stops at a damaged index object.
            res.notes.append(f"{key} is not in any index that can be read ({damaged_index[0]} is damaged and may "
                             "name it); prune leaves it while that object is damaged")
        elif pack_id not in indexed_packs:
            res.notes.append(f"{key} is not in any index (left by an interrupted write); prune removes it")
        if progress:
            progress(1, len(packs))
    read = {key for key, _ in packs} - vanished
    sound = Sound(vault, good, read)
    for pack_id in indexed_packs:
        # A pack read above is there; any other may have been written since the listing or
        # removed since: a stat says (one request for those only, not for every pack).
        if pack_key(pack_id) not in read and st.stat(pack_key(pack_id)) is None:
            if all(st.stat(k) is None for k in naming.get(pack_id, [])):
                # prune rewrote the index, then deleted the pack, while verify ran
                res.notes.append(f"{pack_key(pack_id)} was removed with its index while verify ran (prune)")
                continue
            res.problem(pack_key(pack_id), "pack named by an index is missing")
            sound.gone.add(pack_key(pack_id))
    target_id = ws.target(target_name).id if target_name else None
    seen: dict[str, object] = {}
    for m in _manifests(ws, target_id, res):
        seen[m.key] = m
        res.manifests += 1
    if not _all_trees_whole(vault, seen.values(), sound):
        for m in seen.values():  # one at a time, to name each restore point that is damaged
            _check_tree(vault, m, sound, res)
    _catalogs(ws, target_id, seen, res)
    for check in EXTRA_CHECKS:
        check(ws, res, target_id, sound)
    if sound.later:
        # Packs written since the listing that restore points checked above need (a running watch
        # stores some every second): read now, so that a damaged one is reported, not passed.
        for key, body in vault.get_many([(k, st.stat(k) or 0) for k in sorted(sound.later)]):
            if body is None:
                res.notes.append(f"{key} was removed while verify ran (prune)")
                continue
            res.packs += 1
            _check_pack(vault, key, body, res, good)
        res.notes.append(f"{len(sound.later)} packs written since verify listed the packs (a running watch "
                         "stores some every second) were read at the end")
    if restore_test:
        res.restore_test = _restore_test(ws, target_name)
        if not res.restore_test.get("ok"):
            res.problem("restore-test", res.restore_test.get("error", "failed"))
    return res


def _check_pack(vault, key: str, body: bytes, res: VerifyResult, good: set[bytes]) -> bool:
    """Every chunk of a pack decompressed and hashed: the sound ones go into ``good``, the rest
    are problems. False when the pack's trailer cannot be read."""
    try:
        res.bytes_read += len(body)
        entries = decode_pack_trailer(body, key)
    except MulliganError as exc:
        res.problem(key, exc.message)
        return False
    blocks: dict[int, list] = {}
    for e in entries:
        blocks.setdefault(e[2], []).append(e)
    for off, members in blocks.items():
        slen = members[0][3]
        try:
            block = vault.codec.decompress(body[off:off + slen], f"at offset {off} of {key}")
        except MulliganError as exc:
            res.problem(key, exc.message)
            continue
        for cid, _t, _off, _slen, ln, inner in members:
            try:
                vault.codec.check(block[inner:inner + ln], cid, ln)
                good.add(cid)
                res.chunks += 1
            except MulliganError as exc:
                res.problem(key, exc.message)
    return True


def _all_trees_whole(vault, manifests, sound: Sound) -> bool:
    """All trees walked at once, each shared node read once (tree.reachable): true when every
    chunk they need is among the sound ones and each lists as many pages as its manifest
    says. Anything else is looked at restore point by restore point."""
    ms = list(manifests)
    counts: dict = {}
    good = sound.good
    unread = []  # leaves (pages) not among the sound chunks, gathered as the walk reaches them

    def check_leaves(ids: list[bytes]) -> None:
        unread.extend(c for c in ids if c not in good)

    try:
        nodes = tree.reachable({(bytes.fromhex(m.root), m.depth) for m in ms},
                               lambda ids: vault.iter_chunks(ids, tree=True),
                               counts=counts, leaves=check_leaves)
    except (MulliganError, ValueError, TypeError, KeyError):  # a root that is not hex, a depth not a number
        return False
    if not all(counts[(bytes.fromhex(m.root), m.depth)] == m.page_count for m in ms):
        return False
    return not sound.unsound(unread + [c for c in nodes if c not in good])


def _check_tree(vault, m, sound: Sound, res: VerifyResult) -> None:
    try:
        nodes = tree.node_ids(bytes.fromhex(m.root), m.depth, vault.load_chunk)
        leaves = vault.page_ids(m)
    except MulliganError as exc:
        res.problem(m.key, f"restore point {m.id} cannot be read: {exc.message}")
        return
    except (ValueError, TypeError):
        res.problem(m.key, f"restore point {m.id} names a tree root or depth that cannot be: the manifest is damaged")
        return
    missing = sound.unsound(set(nodes) | set(leaves))
    if missing:
        res.problem(m.key, f"restore point {m.id} needs {len(missing)} chunks that are missing or damaged "
                           f"(first: {missing[0].hex()})")


def _manifests(ws: Workspace, target_id, res: VerifyResult):
    from ..vault import Manifest

    for key, _ in ws.vault.storage.list(f"snapshots/{target_id}/" if target_id else "snapshots/"):
        try:
            yield Manifest.decode(ws.vault.storage.get(key))
        except (ValueError, TypeError, AttributeError):
            res.problem(key, "manifest is damaged")
        except ObjectMissing:
            res.notes.append(f"{key} was removed while verify ran (prune)")


def _catalogs(ws: Workspace, target_id, manifests: dict, res: VerifyResult) -> None:
    """Each catalog decodes, and each of its entries whose manifest exists is that manifest."""
    from ..vault import catalog

    st = ws.vault.storage
    for key, _ in st.list(catalog.PREFIX):
        if target_id and key != catalog.catalog_key(target_id):
            continue
        try:
            entries = catalog.decode(st.get(key), key[len(catalog.PREFIX):], key)
        except ObjectMissing:
            continue  # removed by a prune of a target with no restore point left
        except MulliganError as exc:
            res.problem(key, exc.message)
            continue
        for mkey, m in entries.items():
            real = manifests.get(mkey)
            if real is not None and real != m:  # every field, as Vault._confirm compares them
                res.problem(key, f"its copy of restore point {m.id} differs from the manifest {mkey}; "
                                 "the next prune of the target writes a new catalog")


def _restore_test(ws: Workspace, target_name: str | None) -> dict:
    from .restore import restore_new

    names = [target_name] if target_name else list(ws.config.targets)
    out = {"ok": True, "points": []}
    for name in names:
        t = ws.target(name)
        m = ws.vault.latest(t.id)
        if m is None:
            continue
        with tempfile.TemporaryDirectory(prefix="mulligan-restore-test-") as d:
            path = os.path.join(d, "restore-test.db")
            try:
                restore_new(ws, m, path, check="full")
                out["points"].append({"target": name, "snapshot": m.id, "ok": True})
            except MulliganError as exc:
                out["ok"] = False
                out["error"] = f"restore test of {name} ({m.id}) failed: {exc.message}"
                out["points"].append({"target": name, "snapshot": m.id, "ok": False, "error": exc.message})
    return out


def raise_if_bad(res: VerifyResult) -> None:
    if not res.ok:
        first = res.problems[0]
        raise IntegrityError(
            f"{len(res.problems)} problem(s) in the vault; first: {first['object']}: {first['problem']}",
            unchanged="verify changes nothing",
            hint="the listed restore points cannot be trusted; restore from another point or a copy of the vault",
            details=res.to_json(),
        )



from . import capture_retention as _capture_retention  # noqa: E402  (capture segments are checked too)

_capture_retention.register()
