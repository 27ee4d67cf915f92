"""incident summary: a short text for the team channel, and posting it to a webhook.

The text says what happened, which window of data is at risk, how many users are
affected, the status and the next step, in that order, one line each, so it reads
well in Slack, Mattermost, Teams or a plain terminal. ``send`` posts it as JSON with a
Slack-compatible ``text`` field.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import MulliganError, UsageError
from ..timeparse import from_iso, human_age
from .incidents import change_time, recovery_counts, recovery_states, users_affected


class WebhookFailed(MulliganError):
    """The team channel's webhook did not accept the message."""

    kind = "webhook"


@dataclass
class Summary:
    incident_id: str
    text: str
    lines: dict

    def to_json(self) -> dict:
        return {"incident": self.incident_id, "text": self.text, **self.lines}


def short_time(t: str | None) -> str:
    if not t:
        return "unknown time"
    return from_iso(t).strftime("%Y-%m-%d %H:%M:%S UTC")


def short_title(inc: dict) -> str:
    """The title up to its first clause (the watcher's titles carry every detail after a colon)."""
    title = inc.get("title") or inc.get("kind") or "incident"
    return title.split(": ", 1)[0] if len(title) > 80 else title


def window(inc: dict) -> dict | None:
    """The data at risk: writes made after the state production went back to, up to the change."""
    start = (inc.get("rolled_back_to") or {}).get("time")
    end = change_time(inc) or (inc.get("last_good") or {}).get("time")
    if not start or not end:
        return None
    seconds = max(0.0, (from_iso(end) - from_iso(start)).total_seconds())
    return {"from": start, "to": end, "seconds": seconds, "human": human_age(seconds)}


def what_happened(inc: dict) -> str:
    target = inc.get("target_name") or inc.get("target_id")
    rb = inc.get("rolled_back_to") or {}
    det = inc.get("detection") or {}
    change = change_time(inc)
    if inc.get("kind") == "rollback":
        to = f" to the snapshot of {short_time(rb['time'])}" if rb.get("time") else " to an older state"
        age = f" ({human_age(rb['age_seconds'])} old)" if rb.get("age_seconds") is not None else ""
        exact = change_time(inc, exact=True)
        lg = (inc.get("last_good") or {}).get("time")
        if exact or not lg:
            when = f"at {short_time(exact or change)}"
        elif short_time(lg) == short_time(change):
            when = f"at about {short_time(change)}"
        else:
            when = f"between {short_time(lg)} and {short_time(change)}"
        text = f"{target} was rolled back{to}{age} {when}"
        since = exact or lg
        if det.get("detected_at") and since:
            delay = max(0.0, (from_iso(det["detected_at"]) - from_iso(since)).total_seconds())
            if delay < 1:
                text += "; Mulligan noticed within a second"
            else:
                text += f"; Mulligan noticed {human_age(delay)} later" if exact else f"; Mulligan noticed within {human_age(delay)}"
        return text + "."
    return f"{inc.get('title') or 'incident'} on {target}, opened {short_time(inc.get('opened_at'))}."


def next_step(inc: dict) -> str:
    iid, target = inc["id"], inc.get("target_name")
    rec = inc.get("recovery") or {}
    if inc.get("status") == "closed":
        return f"hold the blameless review of the postmortem draft: mulligan postmortem {iid}."
    if not inc.get("impact"):
        try:
            recovery_states(inc)
        except UsageError:
            return (f"find the states to compare (mulligan snapshots {target}), then who lost data: "
                    f"mulligan incident impact {iid} --base STATE --lost STATE.")
        return f"find who lost data: mulligan incident impact {iid}."
    if not rec:
        return f"plan the recovery: mulligan recover {target} --incident {iid}."
    counts = recovery_counts(rec)
    if not rec.get("applied"):
        return f"review the plan, then apply it: mulligan recover {target} --incident {iid} --apply --confirm {target}."
    if counts["conflicts"]:
        return f"a person decides the {counts['conflicts']} conflicts listed in the recovery report, then closes the incident."
    return f"tell the affected users, then close the incident: mulligan incident close {iid}."


def build(inc: dict) -> Summary:
    w = window(inc)
    n = users_affected(inc)
    rec = inc.get("recovery") or {}
    counts = recovery_counts(rec)
    status = inc.get("status", "open")
    if rec.get("applied"):
        status += (f"; recovery applied: {counts['rows']} lost rows written back"
                   f" ({counts['remapped']} under new ids), {counts['conflicts']} conflicts for review")
    elif rec:
        status += f"; recovery planned ({counts['rows']} rows), not applied yet"
    lines = {
        "what_happened": what_happened(inc),
        "data_at_risk": (f"writes between {short_time(w['from'])} and {short_time(w['to'])} ({w['human']})"
                         if w else "not known yet"),
        "users_affected": (f"{n} user{'s' if n != 1 else ''} potentially lost data" if n is not None
                           else "not assessed yet"),
        "status": status,
        "next_step": next_step(inc),
    }
    head = f"Incident {inc['id']} on {inc.get('target_name')}: {short_title(inc)}"
    text = "\n".join([
        head,
        f"What happened: {lines['what_happened']}",
        f"Data at risk: {lines['data_at_risk']}",
        f"Users affected: {lines['users_affected']}",
        f"Status: {lines['status']}",
        f"Next step: {lines['next_step']}",
    ])
    return Summary(inc["id"], text, lines)


def send(webhook: str, text: str, *, timeout: float = 10.0) -> int:
    """POST {"text": ...} to the webhook; return the HTTP status."""
    if not webhook.startswith(("http://", "https://")):
        raise UsageError(f"the webhook {webhook!r} is not an http(s) URL", hint='set [alerts] webhook = "https://..." in mulligan.toml')
    req = urllib.request.Request(webhook, data=json.dumps({"text": text}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "mulligan"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"the webhook answered HTTP {exc.code}", unchanged="the summary was not posted",
                            hint="check [alerts] webhook in mulligan.toml; the text is printed above") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookFailed(f"cannot reach the webhook: {reason}", unchanged="the summary was not posted",
                            hint="check the network and [alerts] webhook in mulligan.toml") from None
