"""The incident record, kept in the vault at ``incidents/<target_id>/<incident_id>``.

Shape (every field is optional but id/target/kind/status/opened_at):

    id, target_id, target_name, kind ("rollback" | "mass-change" | "manual"),
    title, status ("open" | "closed"), opened_at, closed_at,
    detection: {signals: [..], detected_at, detail},
    last_good: {time, point},          # point: a STATE spec (snapshot id or @TIME)
    rolled_back_to: {snapshot_id, time, age_seconds} | null,
    base: STATE | null, lost: STATE | null,   # what `recover --incident` uses
    counters: {raised: {table: value}, no_counter: [table, ..]},
    snapshot_refs: [snapshot ids prune must keep while open],
    timeline: [{time, event, detail}], notes: [{time, author, text}],
    alerts: [..], impact: {..} | null, recovery: {..} | null
"""

from __future__ import annotations

import getpass
import os

from ..errors import NotFound, UsageError
from ..model import Target
from ..storage import ObjectMissing
from ..timeparse import iso, utc_now
from ..vault import Vault


def _key(target_id: str, inc_id: str) -> str:
    return f"incidents/{target_id}/{inc_id}"


def open_incident(vault: Vault, target: Target, *, kind: str, title: str, **fields) -> dict:
    now = iso(utc_now())
    inc = {
        "id": "inc-" + os.urandom(4).hex(),
        "target_id": target.id,
        "target_name": target.name,
        "kind": kind,
        "title": title,
        "status": "open",
        "opened_at": now,
        "closed_at": None,
        "snapshot_refs": [],
        "timeline": [{"time": now, "event": "incident opened", "detail": title}],
        "notes": [],
        "alerts": [],
        "impact": None,
        "recovery": None,
    }
    inc.update(fields)
    save(vault, inc)
    return inc


def save(vault: Vault, inc: dict) -> None:
    inc["timeline"] = sorted(inc.get("timeline", []), key=lambda e: e["time"])
    vault.put_json(_key(inc["target_id"], inc["id"]), inc)


def list_incidents(vault: Vault, target_id: str | None = None) -> list[dict]:
    out = []
    for key, _ in vault.storage.list(f"incidents/{target_id}/" if target_id else "incidents/"):
        out.append(vault.get_json(key))
    out.sort(key=lambda i: i["opened_at"])
    return out


def get(vault: Vault, prefix: str) -> dict:
    hits = [k for k, _ in vault.storage.list("incidents/") if k.rsplit("/", 1)[-1].startswith(prefix)]
    if not hits:
        raise NotFound(f"no incident {prefix!r}", hint="list them with 'mulligan incidents'")
    if len(hits) > 1:
        raise UsageError(f"{prefix!r} matches {len(hits)} incidents", hint="give more of the id")
    try:
        return vault.get_json(hits[0])
    except ObjectMissing:
        raise NotFound(f"no incident {prefix!r}") from None


def add_event(vault: Vault, inc: dict, event: str, detail=None, time: str | None = None) -> dict:
    inc.setdefault("timeline", []).append({"time": time or iso(utc_now()), "event": event, "detail": detail})
    save(vault, inc)
    return inc


def add_note(vault: Vault, inc: dict, text: str) -> dict:
    try:
        author = getpass.getuser()
    except Exception:
        author = "unknown"
    now = iso(utc_now())
    inc.setdefault("notes", []).append({"time": now, "author": author, "text": text})
    return add_event(vault, inc, "note", text, time=now)


def close(vault: Vault, inc: dict) -> dict:
    inc["status"] = "closed"
    inc["closed_at"] = iso(utc_now())
    return add_event(vault, inc, "incident closed", None, time=inc["closed_at"])
