"""The blameless postmortem draft: the incident's facts turned into sections.

Every sentence is derived from a fact in the incident record, the audit log or the
vault; where a fact is missing the draft says so rather than guessing. Causes are
phrased as conditions and systems, never as a person. Action items follow from the
facts by the rules in ``_actions`` (each says which fact triggered it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..timeparse import from_iso, human_age
from ..errors import UsageError
from .incidents import change_time, recovery_counts, recovery_states, users_affected, what_ran_it
from .summary import short_time, short_title, what_happened, window

FAST_DETECTION_S = 60  # noticed within a minute: went well
STALE_CAPTURE_S = 300  # the last capture was older than this when production changed: went poorly
GUARD_BYPASS_FLAGS = ("--yes", "--force-live", "--allow-cross-target")


@dataclass
class Postmortem:
    incident: dict
    title: str
    facts: dict
    summary: str
    impact: list[str]
    impact_tables: list[dict]
    timeline: list[dict]
    detection: list[str]
    response: list[str]
    went_well: list[str]
    went_poorly: list[str]
    lucky: list[str]
    factors: list[str]
    actions: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)  # {table, key, reason}: what a person must decide

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "incident"} | {"incident": self.incident["id"]}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _states(inc: dict) -> tuple[str, str]:
    try:
        return recovery_states(inc)
    except UsageError:
        return "BASE", "LOST"


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _be(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _age(seconds: float) -> str:
    return "less than a second" if seconds < 1 else human_age(seconds)


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (from_iso(b) - from_iso(a)).total_seconds()


def gather(inc: dict, timeline: list[dict], audit_entries: list[dict] | None) -> dict:
    """The numbers the draft is written from."""
    counts = recovery_counts(inc.get("recovery"))
    rec = inc.get("recovery") or {}
    imp = inc.get("impact") or {}
    per_table = []
    for name, t in counts["tables"].items():
        lost = t["rows"] + t["conflicts"] + t["skipped"]
        if not lost:
            continue
        per_table.append({"table": name, "lost": lost, "recovered": t["rows"], "remapped": t["remapped"],
                          "conflicts": t["conflicts"]})
    if not per_table:
        for name, n in (imp.get("tables") or {}).items():
            per_table.append({"table": name, "lost": int(n if not isinstance(n, dict) else sum(n.values())),
                              "recovered": None, "remapped": None, "conflicts": None})
    det = inc.get("detection") or {}
    exact = change_time(inc, exact=True)
    change = exact or change_time(inc)
    ran = what_ran_it(inc, audit_entries)
    lg = (inc.get("last_good") or {}).get("time")
    since = exact or lg  # when the change time is unknown, it came after the last good capture
    return {
        "target": inc.get("target_name"),
        "incident": inc["id"],
        "impact_csv": f"mulligan impact {inc.get('target_name')} {' '.join(_states(inc))} --format csv",
        "users_affected": users_affected(inc),
        "rows_lost": sum(t["lost"] for t in per_table) if per_table else None,
        "rows_recovered": counts["rows"] if rec else None,
        "remapped": counts["remapped"] if rec else None,
        "conflicts": counts["conflicts"] if rec else None,
        "recovery_applied": bool(rec.get("applied")),
        "undo_point": rec.get("undo_point"),
        "window": window(inc),
        "changed_at": change,
        "detected_at": det.get("detected_at"),
        "detection_seconds": _seconds(since, det.get("detected_at")),
        "change_time_known": exact is not None,
        "signals": list(det.get("signals") or []),
        "capture_age_seconds": _seconds(lg, exact or det.get("detected_at")),
        "alerts_ok": sum(1 for a in inc.get("alerts") or [] if a.get("ok", True)),
        "alerts_failed": sum(1 for a in inc.get("alerts") or [] if not a.get("ok", True)),
        "first_alert_at": min((a["time"] for a in inc.get("alerts") or [] if a.get("ok", True) and a.get("time")), default=None),
        "recovered_at": rec.get("applied_at"),
        "changed_outside_mulligan": ran["outside"],
        "changed_by_command": (ran["entry"] or {}).get("argv"),
        "guard_flags": [f for f in GUARD_BYPASS_FLAGS if f in ((ran["entry"] or {}).get("argv") or "").split()],
        "no_counter_tables": list((inc.get("counters") or {}).get("no_counter") or []),
        "counters_raised": dict((inc.get("counters") or {}).get("raised") or {}),
        "skipped_tables": list(rec.get("skipped_tables") or []),
        "per_table": per_table,
        "timeline_order": [e["event"] for e in timeline],
    }


def build(inc: dict, timeline: list[dict], audit_entries: list[dict] | None = None) -> Postmortem:
    f = gather(inc, timeline, audit_entries)
    return Postmortem(
        incident=inc,
        title=f"Postmortem (draft): {short_title(inc)}",
        facts=f,
        summary=_summary(inc, f),
        impact=_impact(f),
        impact_tables=f["per_table"],
        timeline=timeline,
        detection=_detection(inc, f),
        response=_response(inc, f, timeline),
        went_well=_well(f),
        went_poorly=_poorly(f),
        lucky=_lucky(f),
        factors=_factors(f),
        actions=_actions(f),
        conflicts=_conflicts(inc),
    )


def _conflicts(inc: dict, limit: int = 50) -> list[dict]:
    listed = (inc.get("recovery") or {}).get("conflicts")
    if not isinstance(listed, list):
        return []
    out = []
    for c in listed[:limit]:
        key = c.get("key")
        if isinstance(key, (list, tuple)):
            key = key[0] if len(key) == 1 else "(" + ", ".join(map(str, key)) + ")"
        out.append({"table": c.get("table"), "key": key, "reason": c.get("reason") or c.get("kind")})
    return out


def _summary(inc: dict, f: dict) -> str:
    parts = [what_happened(inc)]
    if f["window"]:
        parts.append(f"Writes made in the {f['window']['human']} before the change were no longer in the live database.")
    if f["users_affected"] is not None:
        parts.append(f"{_plural(f['users_affected'], 'user')} potentially lost data.")
    if f["recovery_applied"]:
        parts.append(f"Mulligan wrote {_plural(f['rows_recovered'], 'lost row')} back without touching what users "
                     f"wrote since; {_plural(f['conflicts'], 'conflict')} went to a person.")
    elif inc.get("recovery"):
        parts.append("A recovery was planned but not applied when this draft was written.")
    parts.append(f"The incident is {inc.get('status', 'open')}.")
    return " ".join(parts)


def _impact(f: dict) -> list[str]:
    out = []
    if f["users_affected"] is not None:
        out.append(f"{_plural(f['users_affected'], 'user')} potentially lost data (the impact report lists who and what).")
    else:
        out.append("Who was affected was not assessed.")
    if f["window"]:
        w = f["window"]
        out.append(f"Data-loss window: {short_time(w['from'])} to {short_time(w['to'])} ({w['human']}): anything "
                   "written in it was gone from production until the recovery.")
    if f["rows_lost"] is not None:
        out.append(f"{_plural(f['rows_lost'], 'row')} changed in that window were missing from production.")
    if f["rows_recovered"] is not None:
        kept = f"{_plural(f['rows_recovered'], 'row')} {'were' if f['rows_recovered'] != 1 else 'was'} written back"
        kept += f", {f['remapped']} of them under new ids because users had reused theirs" if f["remapped"] else ""
        out.append(kept + (f"; {_plural(f['conflicts'], 'conflict')} {_be(f['conflicts'], 'waits', 'wait')} for a decision."
                           if f["conflicts"] else "."))
        if not f["recovery_applied"]:
            out[-1] = "Planned, not yet applied: " + out[-1][0].lower() + out[-1][1:]
    if f["rows_lost"] and f["rows_recovered"] is not None and f["recovery_applied"]:
        share = 100.0 * f["rows_recovered"] / f["rows_lost"]
        out.append(f"In business terms: {share:.0f}% of the lost writes are back in production; "
                   f"{f['rows_lost'] - f['rows_recovered']} {_be(f['rows_lost'] - f['rows_recovered'], 'needs', 'need')} a person.")
        back = [f"{t['recovered']} {t['table']}" for t in sorted(f["per_table"], key=lambda t: -(t["recovered"] or 0))
                if t["recovered"]]
        if back:
            out.append("What came back, by table: " + ", ".join(back) + ".")
    return out


def _detection(inc: dict, f: dict) -> list[str]:
    if not f["detected_at"]:
        return ["The change was not detected by Mulligan; the incident was opened by hand."]
    how = ", ".join(f["signals"]) or "the watcher's checks"
    out = [f"Detected by `mulligan watch` at {short_time(f['detected_at'])} from: {how}."]
    if f["detection_seconds"] is not None:
        if f["change_time_known"]:
            out.append(f"Time from the change to detection: {_age(f['detection_seconds'])}.")
        else:
            about = "" if f["detection_seconds"] < 1 else "about "
            out.append(f"Time from the change to detection: {about}{_age(f['detection_seconds'])}, counted from the "
                       "last good capture (the exact time of the change is not recorded).")
    if f["first_alert_at"]:
        out.append(f"The team was alerted at {short_time(f['first_alert_at'])} "
                   f"({_age(max(0.0, _seconds(f['changed_at'], f['first_alert_at']) or 0))} after the change).")
    elif f["alerts_failed"]:
        out.append("Every alert failed to send.")
    else:
        out.append("No alert was sent.")
    if f["counters_raised"]:
        out.append("On detection the watcher raised the id counters of "
                   f"{', '.join(sorted(f['counters_raised']))} so new writes stopped reusing lost ids.")
    return out


def _response(inc: dict, f: dict, timeline: list[dict]) -> list[str]:
    out = [f"{short_time(e['time'])}: {e['event']}" + (f" ({_clip(str(e['detail']))})" if e.get("detail") else "")
           for e in timeline if e["kind"] in ("assess", "recover", "alert") or e.get("fact") in ("note",)]
    if f["recovery_applied"] and f["changed_at"] and f["recovered_at"]:
        out.append(f"Time from the change to the data being back: {human_age(_seconds(f['changed_at'], f['recovered_at']))}.")
    return out or ["No response steps are recorded yet."]


def _well(f: dict) -> list[str]:
    out = []
    if f["detection_seconds"] is not None and f["detection_seconds"] <= FAST_DETECTION_S:
        out.append(f"The rollback was noticed {'' if f['change_time_known'] or f['detection_seconds'] < 1 else 'about '}"
                   f"{_age(f['detection_seconds'])} after it happened, not hours later.")
    if f["capture_age_seconds"] is not None and f["capture_age_seconds"] <= STALE_CAPTURE_S:
        out.append(f"The last good state was captured {_age(f['capture_age_seconds'])} before the change, "
                   "so almost nothing was beyond reach.")
    if f["recovery_applied"]:
        out.append("The lost writes were merged back while the app stayed up; what users wrote since was kept.")
    if f["remapped"]:
        out.append(f"{_plural(f['remapped'], 'row')} whose ids had been reused got new ids, with their references rewritten.")
    if f["undo_point"]:
        out.append(f"An undo point ({f['undo_point']}) was taken before the merge.")
    if f["alerts_ok"]:
        out.append("The team was alerted automatically.")
    return out or ["Nothing is recorded yet; add what helped."]


def _poorly(f: dict) -> list[str]:
    out = []
    if f["changed_outside_mulligan"]:
        out.append("Production was replaced by a tool outside Mulligan, so no guard asked for the target's name "
                   "and no undo point was taken.")
    if f["guard_flags"]:
        out.append(f"The change ran with {', '.join(f['guard_flags'])}, which skipped a guard.")
    if f["detection_seconds"] is not None and f["detection_seconds"] > FAST_DETECTION_S:
        out.append(f"Detection took {human_age(f['detection_seconds'])}.")
    if f["capture_age_seconds"] is not None and f["capture_age_seconds"] > STALE_CAPTURE_S:
        out.append(f"The newest capture was {human_age(f['capture_age_seconds'])} old when production changed.")
    if f["alerts_failed"]:
        out.append(f"{_plural(f['alerts_failed'], 'alert')} could not be delivered.")
    if f["window"] and f["users_affected"]:
        out.append(f"{_plural(f['users_affected'], 'user')} had data go missing, and the app kept taking writes "
                   "into the rolled-back database until the recovery.")
    if f["conflicts"]:
        out.append(f"{_plural(f['conflicts'], 'conflict')} could not be resolved by a machine.")
    if f["recovery_applied"] is False and f["rows_lost"]:
        out.append("The lost rows are not back in production yet.")
    return out or ["Nothing is recorded yet; add what hurt."]


def _lucky(f: dict) -> list[str]:
    out = []
    if f["recovery_applied"] and not f["conflicts"]:
        out.append("No lost row clashed with a later change, so no person had to decide anything.")
    if f["recovery_applied"] and not f["skipped_tables"]:
        out.append("The schema had not changed between the old snapshot and the mistake, so every table could be merged.")
    if f["window"] and f["window"]["seconds"] < 3600:
        out.append(f"The state production went back to was only {f['window']['human']} old.")
    said = " ".join(f["signals"]).lower()
    if any(w in said for w in ("generation", "counter", "keys fell")) and not any(
            w in said for w in ("inode", "replaced", "another file", "different file")):
        out.append("The restore went through SQLite and kept the file, so the app's open connections saw the old "
                   "data instead of writing into a deleted file.")
    return out or ["Nothing identified; discuss in the review."]


def _factors(f: dict) -> list[str]:
    out = []
    if f["changed_outside_mulligan"]:
        out.append("The production database file could be overwritten directly (backup API, `sqlite3 .restore`, "
                   "`cp`) by anyone with shell access; nothing on that path reads the identity stamped inside the "
                   "file, so a production database and a test copy look the same to it.")
    if f["guard_flags"]:
        out.append(f"The restore command accepted {', '.join(f['guard_flags'])} for production.")
    if f["users_affected"]:
        out.append("The app kept accepting writes into the rolled-back database, and its id counters went back too, "
                   "so new rows took ids that lost rows had used.")
    if f["no_counter_tables"]:
        out.append(f"Some tables have no AUTOINCREMENT counter ({', '.join(f['no_counter_tables'])}): their new keys "
                   "are the largest key + 1, so keys the lost rows used can be handed out again, and nothing can be "
                   "raised to fence them off after a rollback.")
    if f["capture_age_seconds"] is not None and f["capture_age_seconds"] > STALE_CAPTURE_S:
        out.append("Continuous capture was behind or stopped, and nothing alerted on that.")
    return out or ["To be discussed in the review (conditions and systems, not people)."]


def _actions(f: dict) -> list[dict]:
    out = []

    def act(action: str, why: str, priority: str = "high") -> None:
        out.append({"action": action, "why": why, "priority": priority})

    if f["changed_outside_mulligan"]:
        act("Make production restores go through `mulligan restore --in-place`, which requires typing the target's "
            "name and always keeps an undo point; remove write access to the production file for ad-hoc tools.",
            "production was replaced outside Mulligan")
        act("Call `mulligan guard PATH` in every script that writes a database file, and stop when it says production.",
            "nothing told the operator which database the file was")
    if f["guard_flags"]:
        act("Require the typed target name for every in-place restore of production; forbid "
            f"{', '.join(f['guard_flags'])} there in scripts.", "a restore into production bypassed a guard")
    if f["detection_seconds"] is not None and f["detection_seconds"] > FAST_DETECTION_S:
        act("Run `mulligan watch` on every production database as a supervised service.",
            f"detection took {human_age(f['detection_seconds'])}")
    if f["capture_age_seconds"] is not None and f["capture_age_seconds"] > STALE_CAPTURE_S:
        act("Alert when the newest capture of a production target is older than 5 minutes (`mulligan status`).",
            "the capture was stale when production changed")
    if not f["alerts_ok"]:
        act('Configure `[alerts] webhook = "URL"` so the team hears about incidents in its channel.',
            "no alert reached the team")
    if f["no_counter_tables"]:
        act(f"Where {', '.join(f['no_counter_tables'])} use surrogate integer ids, declare them INTEGER PRIMARY KEY "
            "AUTOINCREMENT, so a rollback can be fenced off by raising their counters.",
            "some tables had no counter to raise after the rollback", "medium")
    if f["conflicts"]:
        act(f"Assign an owner to decide the {_plural(f['conflicts'], 'conflict')} in the recovery report.",
            "the merge left conflicts for a person")
    if f["rows_lost"] and not f["recovery_applied"]:
        act(f"Apply the recovery: `mulligan recover {f['target']} --incident {f['incident']} --apply --confirm "
            f"{f['target']}`.", "lost rows are still missing")
    if f["users_affected"]:
        act(f"Write to the {_plural(f['users_affected'], 'affected user')} with what was lost and that it is back "
            f"(`{f['impact_csv']}`).", "users lost data for a while", "medium")
    act("Rehearse the drill every quarter (`mulligan demo`, `mulligan verify --restore-test`).",
        "the response is faster when it has been practised", "low")
    return sorted(out, key=lambda a: ("high", "medium", "low").index(a["priority"]))
