"""The tamper-evident audit log.

Every state-changing operation appends one entry: time, user, host, pid,
command line, target identity, outcome (done, refused and why, failed). Each
entry carries the BLAKE3 hash of the previous entry and its own, so editing,
removing or reordering an entry breaks the chain, and `audit`/`verify` say so.

Entries are objects ``audit/<seq:012d>`` written with put-if-absent: two
processes appending at once cannot both take the same place in the chain. Each
entry carries a random nonce: a put of the very bytes already under a key
succeeds (a retried write whose answer was lost), so two appenders in the same
second, process and command must never write the same bytes.
``refs/audit/head`` says which entry was appended last, so an append reads one
entry instead of listing them all (one per command, a year of snapshots taken
every minute is half a million); it is advisory: an append steps past it while
the next entry exists, and lists the log when it is missing or names no entry.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import sys
from dataclasses import dataclass, field

import blake3

from ..runtime import hostname
from ..storage import ObjectExists, ObjectMissing
from ..timeparse import iso, utc_now
from ..vault import Vault

PREFIX = "audit/"
HEAD = "refs/audit/head"
GENESIS = "0" * 64


def _hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}"


def _tail(vault: Vault) -> tuple[int, str]:
    """(seq, hash) of the last entry: from the head, stepping past entries appended after it."""
    st = vault.storage
    try:
        seq = int(json.loads(st.get(HEAD))["seq"])
    except (ObjectMissing, ValueError, KeyError, TypeError):
        seq = -1
    if seq < 0 or (seq > 0 and st.stat(_key(seq)) is None):
        keys = [k for k, _ in st.list(PREFIX)]  # no usable head: the slow way, once
        if not keys:
            return 0, GENESIS
        last = json.loads(st.get(keys[-1]))
        return int(last["seq"]), last["hash"]
    while st.stat(_key(seq + 1)) is not None:
        seq += 1
    if seq == 0:
        return 0, GENESIS
    last = json.loads(st.get(_key(seq)))
    return int(last["seq"]), last["hash"]


def record(vault: Vault, *, command: str, outcome: str, target=None, detail=None, argv: list[str] | None = None) -> dict:
    """Append an entry; return it. ``target`` is a Target or a dict with name/id/env."""
    if target is not None and not isinstance(target, dict):
        target = {"name": target.name, "id": target.id, "env": target.env, "path": target.path}
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    for _ in range(50):
        seq, prev = _tail(vault)
        entry = {
            "seq": seq + 1,
            "time": iso(utc_now()),
            "user": user,
            "host": hostname(),
            "pid": os.getpid(),
            "command": command,
            "argv": shlex.join(argv if argv is not None else ["mulligan", *sys.argv[1:]]),
            "target": target,
            "outcome": outcome,
            "detail": detail,
            "prev": prev,
            "nonce": os.urandom(8).hex(),
        }
        entry["hash"] = _hash(entry)
        try:
            vault.storage.put(_key(entry["seq"]), json.dumps(entry, sort_keys=True).encode())
        except ObjectExists:
            continue
        try:
            vault.storage.put(HEAD, json.dumps({"seq": entry["seq"]}).encode(), overwrite=True)
        except Exception:  # noqa: BLE001 - the entry is written; a stale head only costs the next append a step
            pass
        return entry
    raise RuntimeError("could not append to the audit log")


@dataclass
class AuditCheck:
    entries: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read(vault: Vault, target_name: str | None = None) -> AuditCheck:
    """All entries, with the chain checked; filtered to a target after checking."""
    res = AuditCheck()
    prev = GENESIS
    expected_seq = 1
    for key, _ in vault.storage.list(PREFIX):
        try:
            entry = json.loads(vault.storage.get(key))
        except ValueError:
            res.problems.append(f"{key} is not readable")
            continue
        seq = entry.get("seq")
        if key != _key(seq or 0):
            res.problems.append(f"{key} holds entry {seq}: entries were moved")
        if seq != expected_seq:
            res.problems.append(f"entry {expected_seq} is missing (next is {seq})")
        if entry.get("prev") != prev:
            res.problems.append(f"entry {seq} does not follow entry {seq - 1 if seq else '?'}: the chain is broken")
        if _hash(entry) != entry.get("hash"):
            res.problems.append(f"entry {seq} was edited after it was written (its hash does not match)")
        prev = entry.get("hash")
        expected_seq = (seq or expected_seq) + 1
        if target_name is None or (entry.get("target") or {}).get("name") == target_name:
            res.entries.append(entry)
    return res
