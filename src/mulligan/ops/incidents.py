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
from datetime import timedelta

from ..errors import NotFound, UsageError
from ..model import Target
from ..storage import ObjectMissing
from ..timeparse import from_iso, iso, utc_now
from ..vault import Vault


def _key(target_id: str, inc_id: str) -> str:
    return f"incidents/{target_id}/{inc_id}"


def open_incident(vault: Vault, target: Target, *, kind: str, title: str, store: bool = True, **fields) -> dict:
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
    if store:
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


# ---- facts recorded by the steps of the response ---------------------------------
#
# impact:   {computed_at, base, lost, users_affected, ...the `impact --json` shape: users: [{id, label, total,
#            tables: {table: {insert, update, delete}}}], tables: {table: {insert, update, delete}}}
# recovery: {planned_at, applied_at | null, applied, base, lost, undo_point,
#            tables: {table: {inserts, updates, deletes, remapped, conflicts, ...}},
#            rows_recovered, remapped, conflicts: [..] | int, ...}
# alerts:   [{time, channel, ok, detail}] (the watcher's: [{time, kind, text, channels}])


def record_alert(vault: Vault, inc: dict, *, channel: str, ok: bool, detail: str = "", time: str | None = None) -> dict:
    now = time or iso(utc_now())
    inc.setdefault("alerts", []).append({"time": now, "channel": channel, "ok": ok, "detail": detail})
    event = f"alert sent to {channel}" if ok else f"alert to {channel} failed"
    return add_event(vault, inc, event, detail, time=now)


def record_impact(vault: Vault, inc: dict, impact: dict, *, base: str | None = None, lost: str | None = None) -> dict:
    now = iso(utc_now())
    rec = dict(impact)
    rec.setdefault("computed_at", now)
    rec.setdefault("base", base)
    rec.setdefault("lost", lost)
    if "users_affected" not in rec:
        rec["users_affected"] = len(rec.get("users") or [])
    inc["impact"] = rec
    n = rec["users_affected"]
    return add_event(vault, inc, "impact computed", f"{n} user{'s' if n != 1 else ''} potentially lost data",
                     time=rec["computed_at"])


def record_recovery(vault: Vault, inc: dict, result: dict, *, applied: bool) -> dict:
    """Keep the plan (and, once applied, the outcome) of ``recover --incident``."""
    now = iso(utc_now())
    rec = dict(inc.get("recovery") or {})
    rec.update(result)
    rec["applied"] = bool(applied) or bool(rec.get("applied"))
    if not applied:
        rec["planned_at"] = result.get("planned_at") or now
    else:
        rec["applied_at"] = result.get("applied_at") or now
    inc["recovery"] = rec
    counts = recovery_counts(rec)
    detail = (f"{counts['rows']} lost row{'s' * (counts['rows'] != 1)} written back, {counts['remapped']} with new ids, "
              f"{counts['conflicts']} conflict{'s' * (counts['conflicts'] != 1)} for review")
    if not applied:
        detail = detail.replace("written back", "to write back")
    if applied:
        if rec.get("undo_point"):
            add_event(vault, inc, "undo point taken", f"restore point {rec['undo_point']} before the merge",
                      time=rec.get("undo_point_time") or rec["applied_at"])
        return add_event(vault, inc, "recovery applied", detail, time=rec["applied_at"])
    return add_event(vault, inc, "recovery planned", detail, time=rec["planned_at"])


def recovery_counts(rec: dict | None) -> dict:
    """Rows written back, rows given new ids, conflicts, per table and in total."""
    rec = rec or {}
    tables = {}
    for name, t in (rec.get("tables") or {}).items():
        t = t or {}
        rows = sum(int(t.get(k) or 0) for k in ("inserts", "updates", "deletes"))
        tables[name] = {"rows": rows, "remapped": int(t.get("remapped") or 0),
                        "conflicts": int(t.get("conflicts") or 0), "skipped": int(t.get("skipped") or 0)}
    conflicts = rec.get("conflicts")
    n_conf = len(conflicts) if isinstance(conflicts, list) else int(conflicts or 0)
    if not n_conf:
        n_conf = sum(t["conflicts"] for t in tables.values())
    rows = rec.get("rows_recovered")
    return {
        "rows": int(rows) if rows is not None else sum(t["rows"] for t in tables.values()),
        "remapped": int(rec.get("remapped") or sum(t["remapped"] for t in tables.values())),
        "conflicts": n_conf,
        "tables": tables,
    }


def recovery_states(inc: dict, base: str | None = None, lost: str | None = None) -> tuple[str, str]:
    """BASE and LOST for ``recover --incident``: the snapshot restored by mistake, the last good point
    (``base`` and ``lost``, given by the user, win over the record)."""
    impact = inc.get("impact") or {}  # the states an impact was computed between (incident impact --base/--lost)
    base = base or inc.get("base") or (inc.get("rolled_back_to") or {}).get("snapshot_id") or impact.get("base")
    last_good = inc.get("last_good") or {}
    lost = (lost or inc.get("lost") or last_good.get("point") or (f"@{last_good['time']}" if last_good.get("time") else None)
            or impact.get("lost"))
    missing = [n for n, v in (("BASE (the state production was rolled back to)", base),
                               ("LOST (the last good state)", lost)) if not v]
    if missing:
        raise UsageError(
            f"incident {inc['id']} does not record {' or '.join(missing)}",
            unchanged="nothing was planned or written",
            hint="give them yourself with --base STATE --lost STATE",
        )
    return base, lost


# ---- the timeline, assembled from facts ---------------------------------------------

# (fact, kind, words): how an event written in the record is recognised; first match wins.
# Kinds: good, mistake, detect, alert, assess, recover, note, incident (the colours of the picture).
_FACTS = (
    ("undo", "recover", ("undo point",)),
    ("applied", "recover", ("recovery applied", "merge applied", "applied")),
    ("planned", "recover", ("recovery planned", "plan")),
    ("counters", "recover", ("counter",)),
    ("impact", "assess", ("impact",)),
    ("alert", "alert", ("alert", "summary sent", "notif")),
    ("detected", "detect", ("detect",)),
    ("change", "mistake", ("rolled back", "went back", "rollback", "replaced", "mistake")),
    ("last_good", "good", ("last good", "last-known-good", "frozen", "froze")),
    ("snapshot", "good", ("snapshot", "capture")),
    ("note", "note", ("note",)),
    ("opened", "incident", ("opened",)),
    ("closed", "incident", ("closed",)),
)
_CHANGING = ("restore", "undo", "recover", "prune")
# Facts that share a timestamp are told in the order they happen.
_ORDER = ("snapshot", "last_good", "change", "detected", "counters", "opened", "alert", "impact", "planned",
          "undo", "audit", "applied", "note", "other", "closed")


def classify(event: str) -> tuple[str, str]:
    """(fact, kind) of an event by its wording."""
    low = (event or "").lower()
    for fact, kind, words in _FACTS:
        if any(w in low for w in words):
            return fact, kind
    return "other", "incident"


def assemble_timeline(inc: dict, *, audit_entries: list[dict] | None = None, manifests: list | None = None) -> list[dict]:
    """Every known fact about the incident as one ordered list of {time, event, detail, kind, source}.

    Facts come from the record itself (what the watcher, the response commands and people
    wrote), from the audit log (what Mulligan ran against the target around the change) and
    from the vault (undo points taken while the incident was open).
    """
    events: list[dict] = []

    def add(time, event, detail, fact, kind, source):
        if time:
            events.append({"time": time, "event": event, "detail": detail, "kind": kind, "fact": fact, "source": source})

    rb = inc.get("rolled_back_to") or {}
    if rb.get("time"):
        add(rb["time"], "snapshot taken (the state production was later rolled back to)", rb.get("snapshot_id"),
            "snapshot", "good", "vault")
    lg = inc.get("last_good") or {}
    add(lg.get("time"), "last good capture", lg.get("point"), "last_good", "good", "watcher")
    change = change_time(inc)
    ran = what_ran_it(inc, audit_entries)
    if change:
        add(change, "production rolled back" if inc.get("kind") == "rollback" else "the change",
            ran["detail"], "change", "mistake", "watcher")
    det = inc.get("detection") or {}
    if det.get("detected_at"):
        signals = ", ".join(det.get("signals") or [])
        add(det["detected_at"], "rollback detected" if inc.get("kind") == "rollback" else "change detected",
            signals or _text(det.get("detail")), "detected", "detect", "watcher")
    for a in inc.get("alerts") or []:
        ok, channel = a.get("ok", True), alert_channel(a)
        add(a.get("time"), f"alert sent to {channel}" if ok else f"alert to {channel} failed",
            a.get("detail") or a.get("text"), "alert", "alert", "incident")
    imp = inc.get("impact") or {}
    if imp.get("computed_at"):
        add(imp["computed_at"], "impact computed", f"{users_affected(inc)} users potentially lost data",
            "impact", "assess", "incident")
    rec = inc.get("recovery") or {}
    if rec.get("planned_at"):
        add(rec["planned_at"], "recovery planned", None, "planned", "recover", "incident")
    if rec.get("applied_at"):
        add(rec["applied_at"], "recovery applied", None, "applied", "recover", "incident")
    for e in audit_entries or []:
        if e.get("command") in _CHANGING and e.get("time") and e is not ran.get("entry") \
                and e.get("time", "") >= (lg.get("time") or inc.get("opened_at", "")):
            fact = "applied" if e["command"] == "recover" and "--apply" in (e.get("argv") or "") else "audit"
            add(e["time"], f"mulligan {e['command']} ({e.get('outcome')})", _who(e), fact, "recover", "audit")
    for m in manifests or []:
        if getattr(m, "kind", None) == "undo" and m.time >= inc.get("opened_at", ""):
            add(m.time, "undo point taken", m.id, "undo", "recover", "vault")
    for e in inc.get("timeline") or []:
        fact, kind = classify(e.get("event", ""))
        add(e.get("time"), e.get("event", ""), _text(e.get("detail")), fact, e.get("kind") or kind, "record")
    return _dedupe(events)


def _text(detail) -> str | None:
    if detail is None or isinstance(detail, str):
        return detail
    if isinstance(detail, dict):
        return detail.get("summary") or detail.get("message") or ", ".join(f"{k}: {v}" for k, v in detail.items())
    return str(detail)


def _dedupe(events: list[dict]) -> list[dict]:
    """A derived fact gives way to the record's own event for the same fact within two seconds."""
    records = [e for e in events if e["source"] == "record"]
    out = list(records)
    for e in (e for e in events if e["source"] != "record"):
        t = from_iso(e["time"])
        near = [o for o in out if o["fact"] == e["fact"] and abs((from_iso(o["time"]) - t).total_seconds()) < 2]
        if any(o["source"] == "record" or o["event"] == e["event"] for o in near):
            for o in near:
                if o["source"] == "record" and e["detail"] and str(e["detail"]) not in str(o.get("detail") or ""):
                    o["detail"] = f"{o['detail']}; {e['detail']}" if o.get("detail") else e["detail"]
            continue
        out.append(e)
    out.sort(key=lambda e: (e["time"], _ORDER.index(e["fact"]) if e["fact"] in _ORDER else len(_ORDER)))
    return out


def change_time(inc: dict, *, exact: bool = False) -> str | None:
    """When production changed: the watcher's or a person's reading of it, else (unless ``exact``)
    the detection time, the latest it can have been."""
    det = inc.get("detection") or {}
    for key in ("changed_at", "change_time", "rolled_back_at"):
        if det.get(key):
            return det[key]
        if isinstance(det.get("detail"), dict) and det["detail"].get(key):
            return det["detail"][key]
    if inc.get("changed_at"):
        return inc["changed_at"]
    told = [e["time"] for e in inc.get("timeline") or [] if classify(e.get("event", ""))[0] == "change"]
    if told:
        return min(told)
    return None if exact else det.get("detected_at")


def alert_channel(a: dict) -> str:
    if a.get("channel"):
        return a["channel"]
    channels = [c for c in a.get("channels") or [] if c != "log"]
    return " and ".join(channels) if channels else "the log"


def what_ran_it(inc: dict, audit_entries: list[dict] | None) -> dict:
    """The Mulligan command that changed the target around the change, when the audit log knows one."""
    change = change_time(inc)
    lg = (inc.get("last_good") or {}).get("time")
    if not change or audit_entries is None:
        return {"known": False, "outside": None, "entry": None, "detail": None}
    lo = lg or change
    hi = _plus(change, 5)
    if inc.get("opened_at") and inc.get("kind") == "rollback":
        hi = min(hi, _plus(inc["opened_at"], 1))
    # A command that changed the target and finished around the change; a response to this
    # incident (recover --incident) is never its cause.
    hits = [e for e in audit_entries if e.get("command") in ("restore", "undo", "recover")
            and lo <= e.get("time", "") <= hi and e.get("outcome") == "done"
            and "--incident" not in (e.get("argv") or "")]
    if hits:
        e = hits[-1]
        return {"known": True, "outside": False, "entry": e, "detail": f"by {_who(e)}"}
    return {"known": False, "outside": True, "entry": None,
            "detail": "no Mulligan command ran against the target then: the change was made outside Mulligan"}


def _who(e: dict) -> str:
    # The command and where it ran; never who: the record is for a blameless review.
    return f"`{e.get('argv') or e.get('command')}` (on {e.get('host')}, pid {e.get('pid')})"


def _plus(t: str, seconds: float) -> str:
    return iso(from_iso(t) + timedelta(seconds=seconds))


def users_affected(inc: dict) -> int | None:
    """From the impact when it was computed, else from the owners of the rows the recovery found lost."""
    imp = inc.get("impact")
    if imp:
        return int(imp["users_affected"]) if imp.get("users_affected") is not None else len(imp.get("users") or [])
    rows = (inc.get("recovery") or {}).get("rows") or []
    owners = {repr((r.get("owner") or {}).get("user")) for r in rows if (r.get("owner") or {}).get("user") is not None}
    return len(owners) if owners else None


def timeline_for(vault: Vault, inc: dict) -> list[dict]:
    """assemble_timeline with the audit log and the vault's restore points of the target."""
    from .audit import read as read_audit

    entries = [e for e in read_audit(vault).entries if (e.get("target") or {}).get("id") == inc.get("target_id")]
    manifests = vault.manifests(inc["target_id"]) if inc.get("target_id") else []
    return assemble_timeline(inc, audit_entries=entries, manifests=manifests)
