"""status: per target, the last capture, its lag, coverage and open incidents.

Read from the vault only (the watcher's heartbeat object and the capture
chain), so it works from any machine that can read the vault.
"""

from __future__ import annotations

import time

from ..errors import MulliganError
from ..model import Target
from ..storage import ObjectMissing
from ..timeparse import from_iso, human_age, iso
from ..units import human_size
from . import capture_store as cs
from . import incidents as inc_mod
from .workspace import Workspace

STALE_AFTER = 60.0


def target_status(ws: Workspace, target: Target, stale_after: float = STALE_AFTER) -> dict:
    vault = ws.vault
    now = time.time()
    try:
        hb = vault.get_json(cs.status_key(target.id))
    except (ObjectMissing, MulliganError, ValueError):
        hb = None
    cov = cs.coverage(vault, target)
    last = vault.latest(target.id)
    last_capture = cov["to"] or (last.time if last else None)
    age = now - from_iso(last_capture).timestamp() if last_capture else None
    # A heartbeat is written every heartbeat_every seconds (5 s by default): one missed is not yet
    # a watcher gone. A heartbeat from before it was recorded gets the old 10 s.
    every = hb.get("heartbeat_every") if hb else None
    floor = 2 * float(every) + 1 if isinstance(every, (int, float)) else 10
    running = bool(hb and hb.get("running") and now - hb.get("heartbeat_ts", 0) < max(stale_after, floor))
    capturing = None if hb is None else running and hb.get("capturing", True)
    problems = []
    if hb is None:
        problems.append("no watch has ever captured this target")
    elif not running:
        problems.append("watch is not running for this target" if not hb.get("running") else
                        f"the watcher's heartbeat is {human_age(now - hb.get('heartbeat_ts', 0))} old")
    if running and not capturing:
        problems.append(f"watch is running but capturing nothing since {hb.get('last_ok')}: {hb.get('error')}")
    elif hb and hb.get("error"):
        problems.append(f"last capture error: {hb['error']}")
    room = vault.storage.room()
    if room is not None and room[1] and room[0] < 2 * room[1]:
        problems.append(f"the disk holding the vault has {human_size(room[0])} free; snapshots and captures stop "
                        f"storing at {human_size(room[1])} ([vault] min_free): prune old restore points or free space")
    open_incidents = [
        {"id": i["id"], "kind": i.get("kind"), "opened_at": i.get("opened_at"), "title": i.get("title")}
        for i in inc_mod.list_incidents(vault, target.id) if i.get("status", "open") == "open"
    ]
    return {
        "name": target.name, "id": target.id, "env": target.env, "path": target.path,
        "watch": {"running": running, "capturing": capturing, "pid": hb.get("pid") if hb else None, "host": hb.get("host") if hb else None,
                  "heartbeat": hb.get("heartbeat") if hb else None, "commits": hb.get("commits") if hb else None,
                  "bytes_stored": hb.get("bytes_stored") if hb else None,
                  "repacks": hb.get("repacks") if hb else None},
        "last_capture": last_capture,
        "last_capture_age_seconds": round(age, 3) if age is not None else None,
        "lag_seconds": hb.get("lag_seconds") if hb and capturing else None,
        "stale": not capturing,
        "coverage": cov,
        "open_incidents": open_incidents,
        "problems": problems,
    }


def status(ws: Workspace, name: str | None = None, stale_after: float = STALE_AFTER) -> list[dict]:
    targets = [ws.target(name)] if name else list(ws.config.targets.values())
    return [target_status(ws, t, stale_after) for t in targets]


def stale_alert_key(target_id: str) -> str:
    """When ``status --alert`` last alerted for the target, and for which stale capture."""
    return f"{cs.PREFIX}{target_id}/stale-alerted"


def alert_stale(ws: Workspace, rows: list[dict], alerter) -> list[tuple[str, str | None]]:
    """A stale-capture alert through the configured channels for each stale target of ``rows``
    (``status``): for a timer that watches the watcher, which cannot say it died or hung.

    Once per stale capture: a timer running every few minutes alerts when capture stops, not at
    every run. A capture is the same stale one while its last capture does not move; once a
    target is captured again, its next stale capture alerts again. Returns (name, None when
    alerted now, else when it was alerted) for each stale target."""
    vault, out = ws.vault, []
    for r in rows:
        key = stale_alert_key(r["id"])
        if not r["stale"]:
            try:
                if vault.storage.stat(key) is not None:
                    vault.storage.delete(key)  # working again: the next stale capture is news
            except MulliganError:
                pass  # a vault this machine may only read: the record stays, the check goes on
            continue
        episode = r["last_capture"] or "never"
        try:
            prev = vault.get_json(key)
        except (ObjectMissing, MulliganError, ValueError):
            prev = None
        if isinstance(prev, dict) and prev.get("episode") == episode:
            out.append((r["name"], prev.get("alerted_at")))
            continue
        age = r["last_capture_age_seconds"]
        text = (f"capture of {r['env']} database {r['name']!r} ({r['path']}) is stale: "
                + "; ".join(r["problems"] or ["no running watch captures it"])
                + (f"; last capture {r['last_capture']} ({human_age(age)} ago)" if age is not None else "; never captured"))
        alerter.alert("stale-capture", text, {"target": r["name"], "last_capture": r["last_capture"],
                                              "problems": r["problems"], "found_by": "mulligan status --alert"})
        try:
            vault.put_json(key, {"episode": episode, "alerted_at": iso(time.time())})
        except MulliganError:
            pass  # not recorded (a vault this machine may only read): the next run alerts again
        out.append((r["name"], None))
    return out
