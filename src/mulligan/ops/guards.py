"""Guards that stand between a user and a replaced database.

Live use. A database is in live use when

1. a process other than Mulligan's own has one of its files (the database,
   -wal, -shm, -journal) open — found through /proc/<pid>/fd on Linux; or
2. someone other than Mulligan committed to it in the last ``LIVE_WINDOW``
   seconds.

Rule 2 is judged by committed content. Mulligan keeps what it last knew of the
database: after each of its own writes a record ``guards/<target id>/own-write``
— ``record_own_write`` (protect, in-place restore, undo: the commit marker of
engines/sqlite/replace.py and the content digest, the same BLAKE3 tree root a
snapshot manifest carries) or ``record_own_commit`` (the watcher's stamp: its
commit's WAL salts and frame, read from nothing, since that process holds
SQLite locks) — and otherwise the newest restore point's root.
A recent foreign commit is one where

* the commit marker differs from the one Mulligan recorded (else the last commit
  is Mulligan's own, whatever the file times say), and
* the database's content files were written within the window (the main file,
  or the -wal when it holds committed frames; never the -shm, which every reader
  writes), and
* the content differs from what Mulligan last knew (a checkpoint moves pages
  from the -wal into the main file and rewrites it without a commit).

A reader can thus never make a database look live by itself. One case errs on
the side of refusing: a foreign commit made long ago, checkpointed just now by
the last connection closing, counts as recent for the next few seconds.

Which processes are Mulligan's own: this process; a process holding a live
lease in the vault (``locks/``, written by every snapshot and capture writer,
with pid and host); a process whose command line runs ``mulligan`` (the console
script, ``python -m mulligan``, or ``manage.py mulligan``). A running
``mulligan watch`` is therefore never live use.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from ..engines.sqlite import replace as sqlite_replace
from ..engines.sqlite.reader import ConsistentReader, StateMoved
from ..errors import GuardRefused, MulliganError, NotADatabase, NotFound
from ..model import Identity, Target
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
    host = socket.gethostname()
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
    rec = {"time": iso(utc_now()), "by": by, "pid": os.getpid(), "host": socket.gethostname(),
           "marker": marker if marker is not None else sqlite_replace.commit_marker(target.path),
           "digest": digest if digest is not None else state_digest(target.path, vault.codec),
           "detail": detail or {}}
    vault.put_json(_own_key(target.id), rec)
    return rec


def record_own_commit(vault: Vault, target_id: str, *, wal_salts, wal_frame: int, by: str,
                      detail: dict | None = None) -> dict:
    """The same for a process holding SQLite locks on the database (``watch``): name its commit by
    its WAL position (salts and commit frame, as the WAL hook reports them); nothing is read here."""
    rec = {"time": iso(utc_now()), "by": by, "pid": os.getpid(), "host": socket.gethostname(),
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


def knowledge(vault: Vault | None, target_id: str | None) -> dict | None:
    """The newest state of the target Mulligan knows: its own last write or the newest restore point."""
    if vault is None or not target_id:
        return None
    known = []
    try:
        known.append({**vault.get_json(_own_key(target_id)), "source": "Mulligan's own last write"})
    except (MulliganError, ValueError):
        pass
    latest = vault.latest(target_id)
    if latest is not None:
        known.append({"time": latest.time, "digest": latest.root, "marker": None,
                      "source": f"restore point {latest.id}"})
    return max(known, key=lambda k: from_iso(k["time"])) if known else None


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
            parts.append(f"someone other than Mulligan committed {human_age(rc['age_seconds'])} ago "
                         f"(the {rc['file']} was written at {rc['last_write']}; content differs from {rc['known']})")
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {"live": self.live, "holders": [h.to_json() for h in self.holders],
                "recent_commit": self.recent_commit, "notes": self.notes}


def recent_foreign_commit(path: str, known: dict | None, window: float = LIVE_WINDOW, codec=None) -> dict | None:
    """Evidence of a commit by someone other than Mulligan in the last ``window`` seconds, or None."""
    marker = sqlite_replace.commit_marker(path)
    if known and same_commit(known.get("marker"), marker):
        return None  # the last commit is the one Mulligan recorded
    wrote_at, what = sqlite_replace.last_write(path)
    age = time.time() - wrote_at
    if age > window:
        return None
    if known and known.get("digest") and state_digest(path, codec) == known["digest"]:
        return None  # rewritten (a checkpoint, Mulligan's own write), same content
    return {"last_write": iso(wrote_at), "age_seconds": round(max(age, 0.0), 3), "file": what,
            "known": f"{known['source']} at {known['time']}" if known else "nothing Mulligan recorded"}


def live_use(path: str, vault: Vault | None, target_id: str | None, window: float = LIVE_WINDOW) -> LiveUse:
    holders, notes = open_holders(path, vault)
    codec = vault.codec if vault is not None else None
    recent = recent_foreign_commit(path, knowledge(vault, target_id), window, codec)
    return LiveUse(holders, recent, notes)


# ---- identity and confirmation ----------------------------------------------------
def identity_problems(target: Target, ident: Identity | None) -> list[str]:
    """Reasons the database at the target's path may not be the target the configuration names."""
    if ident is None:
        return [f"{target.path} carries no identity stamp, so Mulligan cannot tell it is target {target.name!r}"]
    if ident.target_id != target.id:
        return [f"the database at {target.path} says it is target {ident.name!r} ({ident.env}, id {ident.target_id}), "
                f"but the configuration says {target.name!r} ({target.env}, id {target.id})"]
    if ident.env != target.env:
        return [f"the database at {target.path} says it is {ident.env}, the configuration says {target.env}"]
    if ident.kind != "original":
        return [f"the database at {target.path} is stamped as a restored copy, not the original {target.name!r}"]
    return []


def confirm(target: Target, *, confirm_name: str | None, yes: bool, interactive: bool,
            ask_name=None, ask_yes=None) -> str:
    """Apply the confirmation rules; return how the change was confirmed or raise GuardRefused.

    Production: the target's name, typed at a prompt (default no) or given as
    ``--confirm NAME``; ``--yes`` alone never suffices. Other environments:
    ``--yes``, ``--confirm NAME``, or a yes at the prompt.
    """
    unchanged = f"{target.path} was not changed"
    if confirm_name is not None:
        if confirm_name != target.name:
            raise GuardRefused(f"--confirm {confirm_name!r} does not match the target's name {target.name!r}",
                               unchanged=unchanged, hint=f"check which database you mean; the target is {target.name!r}")
        return "--confirm"
    if target.is_production:
        if yes:
            raise GuardRefused(f"--yes alone never replaces a production database ({target.name!r})", unchanged=unchanged,
                               hint=f"type the name at the prompt, or pass --confirm {target.name}")
        if not interactive or ask_name is None:
            raise GuardRefused(f"replacing production database {target.name!r} needs its name typed, and there is no terminal",
                               unchanged=unchanged, hint=f"pass --confirm {target.name} to confirm from a script")
        typed = ask_name()
        if typed is None:
            raise GuardRefused("the prompt was left without a name", unchanged=unchanged,
                               hint="nothing happens unless the target's exact name is typed")
        typed = typed.strip()
        if typed != target.name:
            raise GuardRefused(f"the name typed ({typed!r}) is not {target.name!r}", unchanged=unchanged,
                               hint="nothing happens unless the target's exact name is typed")
        return "typed name"
    if yes:
        return "--yes"
    if not interactive or ask_yes is None:
        raise GuardRefused(f"replacing {target.name!r} needs a confirmation, and there is no terminal", unchanged=unchanged,
                           hint=f"pass --yes (or --confirm {target.name}) to confirm from a script")
    if not ask_yes():
        raise GuardRefused("not confirmed at the prompt", unchanged=unchanged)
    return "prompt"


# ---- guard PATH ----------------------------------------------------------------
@dataclass
class GuardReport:
    """What a database file is, and whether changing it would pass the guards."""

    path: str
    is_database: bool
    identity: Identity | None = None
    target: Target | None = None  # the configuration's target at this path, if any
    live: LiveUse | None = None
    problems: list[str] = field(default_factory=list)  # why a change would be refused
    notes: list[str] = field(default_factory=list)

    @property
    def env(self) -> str | None:
        if self.identity is not None:
            return self.identity.env
        return self.target.env if self.target else None

    @property
    def name(self) -> str | None:
        if self.target is not None:
            return self.target.name
        return self.identity.name if self.identity else None

    @property
    def exit_code(self) -> int:
        if not self.is_database:
            return 1
        return 3 if self.problems else 0

    def to_json(self) -> dict:
        return {"path": self.path, "database": self.is_database, "name": self.name, "env": self.env,
                "production": self.env == "production", "live": bool(self.live and self.live.live),
                "identity": self.identity.to_json() if self.identity else None,
                "configured_target": self.target.name if self.target else None,
                "live_use": self.live.to_json() if self.live else None,
                "safe_to_change": self.is_database and not self.problems, "problems": self.problems,
                "notes": self.notes, "exit_code": self.exit_code}


def inspect_file(path: str, config=None, *, window: float = LIVE_WINDOW) -> GuardReport:
    """Tell a script what the database at ``path`` is before it touches it (the Python side of ``guard``).

    ``config`` is a mulligan.config.Config (or None): with it, the target
    registered at that path and Mulligan's knowledge of its state are used.
    The calling process counts as Mulligan's own and is not listed; do not call
    this in a process that holds SQLite connections to the file (it opens and
    closes the file, which drops that process's POSIX locks on it).
    """
    from ..engines.sqlite import identity as ident_mod
    from ..engines.sqlite.engine import open_conn
    from ..engines.sqlite.reader import sniff

    path = os.path.abspath(path)
    report = GuardReport(path, is_database=False)
    try:
        sniff(path)
    except (NotADatabase, NotFound) as exc:
        report.notes.append(exc.message)
        return report
    report.is_database = True
    vault = None
    if config is not None:
        report.target = next((t for t in config.targets.values() if os.path.abspath(t.path) == path), None)
        try:
            vault = Vault.open(config.vault_url)
        except MulliganError as exc:
            report.notes.append(f"the vault could not be opened ({exc.message}): Mulligan's own writes cannot be told apart")
    holders, notes = open_holders(path, vault)
    report.notes.extend(notes)
    conn = open_conn(path, readonly=True)  # a read-only connection never checkpoints on close
    try:
        report.identity = ident_mod.read(conn)
    except MulliganError:
        raise
    except Exception as exc:  # apsw errors: a damaged or locked file
        report.notes.append(f"the identity stamp could not be read: {exc}")
    finally:
        conn.close()
    target_id = report.target.id if report.target else (report.identity.target_id if report.identity else None)
    recent = recent_foreign_commit(path, knowledge(vault, target_id), window, vault.codec if vault else None)
    report.live = LiveUse(holders, recent, [])
    if report.env == "production":
        report.problems.append(f"{path} is the production database {report.name!r}")
    if report.live.live:
        report.problems.append(f"{path} is in live use: {report.live.evidence()}")
    if report.target is not None:
        report.problems.extend(identity_problems(report.target, report.identity))
    elif report.identity is None:
        report.notes.append("the database is not protected by Mulligan (no identity stamp): its environment is unknown")
    return report
