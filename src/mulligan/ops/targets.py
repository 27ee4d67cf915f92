"""targets: what is protected and how fresh its copies are."""

from __future__ import annotations

from ..timeparse import from_iso, human_age, utc_now
from .workspace import Workspace


def open_incident_count(ws: Workspace, target_id: str) -> int:
    n = 0
    for key, _ in ws.vault.storage.list(f"incidents/{target_id}/"):
        try:
            if ws.vault.get_json(key).get("status", "open") == "open":
                n += 1
        except Exception:
            continue
    return n


def list_targets(ws: Workspace) -> list[dict]:
    rows = []
    for t in ws.config.targets.values():
        last = ws.vault.latest(t.id)
        age = (utc_now() - from_iso(last.time)).total_seconds() if last else None
        rows.append({
            "name": t.name, "id": t.id, "env": t.env, "engine": t.engine, "path": t.path,
            "last_point": last.time if last else None,
            "last_point_id": last.id if last else None,
            "last_point_age_seconds": round(age, 3) if age is not None else None,
            "last_point_age": human_age(age) if age is not None else None,
            "open_incidents": open_incident_count(ws, t.id),
        })
    return rows
