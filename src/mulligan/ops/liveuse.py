"""Live use: is anyone other than Mulligan using a database right now? (docs/restoring-safely.md)

A database is in live use when a process other than Mulligan's own has one of
its files open (/proc/<pid>/fd on Linux: ``open_holders``), or someone other
than Mulligan committed to it within the last ``LIVE_WINDOW`` seconds — judged
by content, never by file times alone (readers write -shm; the last connection
to close checkpoints the -wal into the main file without committing): see
``recent_foreign_commit``. Mulligan's own writes are recorded in the vault
(``record_own_write``, ``record_own_commit``) so they never count. Mulligan's
own processes: this one; one holding a live lease in the vault's ``locks/`` on
this host (every snapshot and capture writer, ``mulligan watch`` included); one
whose command line runs ``mulligan`` (the console script, ``python -m
mulligan``, ``manage.py mulligan``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..engines.sqlite import replace as sqlite_replace
from ..engines.sqlite.reader import ConsistentReader, StateMoved
from ..errors import MulliganError
from ..model import Target
from ..runtime import hostname
from ..timeparse import from_iso, human_age, iso, utc_now
from ..vault import Vault, tree
from ..vault.codec import PlainCodec
from ..vault.locks import live_leases

LIVE_WINDOW = 10.0
SUFFIXES = {"": "database", "-wal": "write-ahead log", "-shm": "shared memory", "-journal": "rollback journal"}


# ---- who has the file open ----------------------------------------------------
@dataclass
class Holder:
    pid: int
    command: str
    files: list[str]
    mulligan: str | None = None  # why this process counts as Mulligan's own

    def to_json(self) -> dict:
        return {"pid": self.pid, "command": self.command, "files": self.files, "mulligan": self.mulligan}


def looks_like_mulligan(argv: list[str]) -> bool:
    if any(os.path.basename(a) == "mulligan" for a in argv[:3]):
        return True
    return any(a == "-m" and i + 1 < len(argv) and argv[i + 1].split(".")[0] == "mulligan"
               for i, a in enumerate(argv[:3]))


def open_holders(path: str, vault: Vault | None = None) -> tuple[list[Holder], list[str]]:
    """Processes other than this one with the database's files open, and notes on what could not be seen."""
    real = os.path.realpath(path)
    names = {real + s: label for s, label in SUFFIXES.items()}
    if not os.path.isdir("/proc/self/fd"):
        return [], ["open files cannot be listed on this system (no /proc): only recent commits were checked"]
    lease_pids = _lease_pids(vault)
    me, hidden, out = os.getpid(), 0, []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except PermissionError:
            hidden += 1
            continue
        except OSError:
            continue
        hits = set()
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link in names:
                hits.add(names[link])
        if hits:
            argv = _cmdline(pid)
            why = lease_pids.get(pid) or ("runs mulligan" if looks_like_mulligan(argv) else None)
            out.append(Holder(pid, " ".join(argv) or "?", sorted(hits), why))
    notes = [f"{hidden} processes of other users could not be inspected (run as their user or root to see them)"] if hidden else []
    return out, notes


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _lease_pids(vault: Vault | None) -> dict[int, str]:
    if vault is None:
        return {}
    host = hostname()
    out = {}
    try:
        for kind in ("writer", "prune"):
            for lease in live_leases(vault.storage, kind):
                if lease.get("host") == host and isinstance(lease.get("pid"), int):
                    out[lease["pid"]] = f"holds a Mulligan lease ({lease.get('purpose', kind)})"
    except MulliganError:
        pass
    return out


# ---- what Mulligan last knew ------------------------------------------------------
def _own_key(target_id: str) -> str:
    return f"guards/{target_id}/own-write"


def state_digest(path: str, codec=None) -> str:
    """The content digest of the committed state: the tree root a snapshot of it would have."""
    codec = codec or PlainCodec()
    for _ in range(5):
        try:
            with ConsistentReader(path) as state:
                ids = bytearray()
                for batch in state.batches():
                    ids += b"".join(codec.chunk_id(p) for p in batch)
            root, _depth = tree.build(bytes(ids), codec.chunk_id)
            return root.hex()
        except StateMoved:
            continue
    raise StateMoved(f"the WAL of {path} kept restarting while it was read", hint="run the command again")


def record_own_write(vault: Vault, target: Target, *, by: str, digest: str | None = None,
                     marker: dict | None = None, detail: dict | None = None) -> dict:
    """Note that Mulligan itself just committed to the target, so it never counts as live use.

    Call it right after the commit, before any other process could write. The marker
    is read from the files: in a process that holds SQLite locks on the database,
    pass ``marker`` yourself (see engines/sqlite/replace.commit_marker).
    """
    rec = {"time": iso(utc_now()), "by": by, "pid": os.getpid(), "host": hostname(),
           "marker": marker if marker is not None else sqlite_replace.commit_marker(target.path),
           "digest": digest if digest is not None else state_digest(target.path, vault.codec),
           "detail": detail or {}}
    vault.put_json(_own_key(target.id), rec)
    return rec


def record_own_commit(vault: Vault, target_id: str, *, wal_salts, wal_frame: int, by: str,
                      detail: dict | None = None) -> dict:
    """The same for a process holding SQLite locks on the database (``watch``): name its commit by
    its WAL position (salts and commit frame, as the WAL hook reports them); nothing is read here."""
    rec = {"time": iso(utc_now()), "by": by, "pid": os.getpid(), "host": hostname(),
           "marker": {"wal": {"salts": list(wal_salts), "frame": int(wal_frame)}}, "digest": None,
           "detail": detail or {}}
    vault.put_json(_own_key(target_id), rec)
    return rec


def same_commit(known: dict | None, marker: dict) -> bool:
    """Does ``marker`` name the commit Mulligan recorded? With WAL frames, salts and commit frame
    name a commit uniquely (salt-1 grows at every WAL restart, salt-2 is random)."""
    if not known:
        return False
    if known.get("wal") and marker.get("wal"):
        k, m = known["wal"], marker["wal"]
        return list(k["salts"]) == list(m["salts"]) and k["frame"] == m["frame"]
    return known == marker


def own_record(vault: Vault | None, target_id: str | None) -> dict | None:
    if vault is None or not target_id:
        return None
    try:
        return vault.get_json(_own_key(target_id))
    except (MulliganError, ValueError):
        return None


def _captured(vault: Vault, target_id: str, codec) -> dict | None:
    """What ``watch`` captured: the digest of its last captured state, and when it last saw a
    commit by others. Commits before the newest base (taken at start and after any gap) are
    not dated: the base's own time stands for them. None without continuous capture."""
    try:
        from . import capture_store as cs
    except ImportError:
        return None
    try:
        bases = cs.capture_bases(vault, target_id)
        if not bases:
            return None
        base, last, foreign = bases[-1], None, None
        for key in reversed(cs.segment_keys(vault, target_id, base.id)):
            seg = cs.load_segment(vault, key)
            for i in range(len(seg["commits"]) - 1, -1, -1):
                last = last or (seg["seq"], i)
                if not str(seg["commits"][i].get("by", "app")).startswith("mulligan"):
                    foreign = seg["commits"][i]["t"]
                    break
            if foreign is not None:
                break
        ids = cs.materialize_commit(vault, base, *last).resolved_ids if last else vault.page_ids(base)
        return {"digest": tree.build(b"".join(ids), codec.chunk_id)[0].hex(), "dated": foreign is not None,
                "last_foreign": foreign if foreign is not None else from_iso(base.time).timestamp()}
    except (MulliganError, KeyError, TypeError, ValueError, IndexError):
        return None  # a capture this code cannot read: judged without it


# ---- live use ------------------------------------------------------------------
@dataclass
class LiveUse:
    holders: list[Holder] = field(default_factory=list)
    recent_commit: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def others(self) -> list[Holder]:
        return [h for h in self.holders if not h.mulligan]

    @property
    def live(self) -> bool:
        return bool(self.others) or self.recent_commit is not None

    def evidence(self) -> str:
        parts = [f"pid {h.pid} ({h.command}) has the {', '.join(h.files)} open" for h in self.others]
        if self.recent_commit:
            rc = self.recent_commit
            parts.append(f"someone other than Mulligan committed {human_age(rc['age_seconds'])} ago ({rc['how']})")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {"live": self.live, "holders": [h.to_json() for h in self.holders],
                "recent_commit": self.recent_commit, "notes": self.notes}


def recent_foreign_commit(path: str, vault: Vault | None, target_id: str | None,
                          window: float = LIVE_WINDOW) -> dict | None:
    """Evidence of a commit by someone other than Mulligan in the last ``window`` seconds, or None.

    1. Nothing written within the window: no commit within it.
    2. The last commit is the one Mulligan recorded as its own (commit marker), or the content
       is what Mulligan itself last wrote (digest; a checkpoint moved it since): not foreign.
    3. ``watch`` captured everything up to now (same digest as its last captured state): it
       saw every commit and when; live if the last one by others is within the window.
    4. The content equals a restore point older than the window: no commit since.
    5. Otherwise something other than Mulligan wrote lately and Mulligan cannot tell it apart.
    """
    wrote_at, what = sqlite_replace.last_write(path)
    now = time.time()
    if now - wrote_at > window:
        return None
    own = own_record(vault, target_id)
    if own and same_commit(own.get("marker"), sqlite_replace.commit_marker(path)):
        return None
    codec = vault.codec if vault is not None else PlainCodec()
    digest = state_digest(path, codec)
    if own and own.get("digest") == digest:
        return None
    if vault is not None and target_id:
        cap = _captured(vault, target_id, codec)
        if cap and cap["digest"] == digest:
            seen = cap["last_foreign"]
            if now - seen > window:
                return None
            how = (f"watch saw the commit at {iso(seen)}" if cap["dated"] else
                   f"watch began a new base at {iso(seen)}; commits before it are not dated")
            return {"at": iso(seen), "age_seconds": round(max(now - seen, 0.0), 3), "how": how}
        point = vault.latest(target_id)
        if point is not None and point.root == digest and now - from_iso(point.time).timestamp() > window:
            return None
    known = (f"Mulligan's own last write at {own['time']}" if own
             else "anything Mulligan recorded")
    return {"at": iso(wrote_at), "age_seconds": round(max(now - wrote_at, 0.0), 3),
            "how": f"the {what} was written at {iso(wrote_at)}; the content differs from {known}"}


def live_use(path: str, vault: Vault | None, target_id: str | None, window: float = LIVE_WINDOW) -> LiveUse:
    holders, notes = open_holders(path, vault)
    return LiveUse(holders, recent_foreign_commit(path, vault, target_id, window), notes)
