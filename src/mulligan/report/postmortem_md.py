"""The postmortem draft as Markdown."""

from __future__ import annotations

from ..ops.postmortem import Postmortem
from ..timeparse import from_iso


def _t(ts: str) -> str:
    return from_iso(ts).strftime("%Y-%m-%d %H:%M:%S")


def _ms(ts: str) -> str:
    return from_iso(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _cell(v) -> str:
    return "-" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def render(pm: Postmortem) -> str:
    inc = pm.incident
    out = [f"# {pm.title}", ""]
    out.append(f"Incident `{inc['id']}` · target `{inc.get('target_name')}` · status **{inc.get('status', 'open')}** · "
               f"opened {_t(inc['opened_at'])} UTC" + (f" · closed {_t(inc['closed_at'])} UTC" if inc.get("closed_at") else ""))
    out += ["", "> Blameless draft written by Mulligan from recorded facts. Causes are conditions and systems, "
            "not people. Edit freely before the review.", ""]
    out += ["## Summary", "", pm.summary, ""]
    out += ["## Impact", ""] + [f"- {line}" for line in pm.impact] + [""]
    if pm.impact_tables:
        out += ["| table | rows lost | rows recovered | new ids | conflicts |", "|---|---:|---:|---:|---:|"]
        for t in pm.impact_tables:
            out.append(f"| {_cell(t['table'])} | {_cell(t['lost'])} | {_cell(t['recovered'])} | "
                       f"{_cell(t['remapped'])} | {_cell(t['conflicts'])} |")
        out.append("")
    out += ["## Timeline (UTC)", "", "| time (UTC) | event | detail |", "|---|---|---|"]
    for e in pm.timeline:
        out.append(f"| {_ms(e['time'])} | {_cell(e['event'])} | {_cell(e.get('detail') or '')} |")
    out.append("")
    out += ["## Detection", ""] + [f"- {x}" for x in pm.detection] + [""]
    out += ["## Response and recovery", ""] + [f"- {x}" for x in pm.response] + [""]
    if pm.conflicts:
        shown = len(pm.conflicts)
        total = pm.facts.get("conflicts") or shown
        out += [f"Conflicts left for a person ({shown} of {total} shown; the live value was kept):", "",
                "| table | key | why |", "|---|---|---|"]
        out += [f"| {_cell(c['table'])} | {_cell(c['key'])} | {_cell(c['reason'])} |" for c in pm.conflicts] + [""]
    out += ["## What went well", ""] + [f"- {x}" for x in pm.went_well] + [""]
    out += ["## What went poorly", ""] + [f"- {x}" for x in pm.went_poorly] + [""]
    out += ["## Where we got lucky", ""] + [f"- {x}" for x in pm.lucky] + [""]
    out += ["## Contributing factors", ""] + [f"- {x}" for x in pm.factors] + [""]
    out += ["## Action items", "", "| priority | action | because |", "|---|---|---|"]
    for a in pm.actions:
        out.append(f"| {a['priority']} | {_cell(a['action'])} | {_cell(a['why'])} |")
    out.append("")
    notes = inc.get("notes") or []
    if notes:
        out += ["## Notes from the response", ""]
        out += [f"- {_t(n['time'])} UTC: {n['text']}" for n in notes] + [""]
    return "\n".join(out)
