"""The postmortem draft as one self-contained HTML file: inline CSS, an inline SVG
timeline, no script, no external resource, so it opens offline in any browser."""

from __future__ import annotations

from html import escape

from ..ops.postmortem import Postmortem
from ..timeparse import from_iso, human_age

COLORS = {
    "good": "#2e7d32", "mistake": "#c62828", "detect": "#ef6c00", "alert": "#f9a825",
    "assess": "#6a1b9a", "recover": "#1565c0", "note": "#546e7a", "incident": "#37474f",
}
LEGEND = (("good", "good state"), ("mistake", "the change"), ("detect", "detection"), ("alert", "alert"),
          ("assess", "impact"), ("recover", "recovery"), ("note", "note / incident"))

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2327;max-width:1100px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#555}.draft{background:#fff8e1;border-left:4px solid #f9a825;padding:.5em 1em}
table{border-collapse:collapse;width:100%;margin:.6em 0}th,td{border:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right}.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em}
.facts{display:flex;gap:1em;flex-wrap:wrap}.fact{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;flex:1 1 0;min-width:8em}
.fact b{display:block;font-size:1.6em}.pri-high{color:#c62828;font-weight:600}.pri-medium{color:#ef6c00}.pri-low{color:#555}
svg{max-width:100%;height:auto;border:1px solid #eee;border-radius:6px;background:#fcfcfc}
"""


def _t(ts: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return from_iso(ts).strftime(fmt)


def _ms(ts: str) -> str:
    return from_iso(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _short(text: str, n: int = 38) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def timeline_svg(events: list[dict], facts: dict) -> str:
    """A vertical timeline: one row per event in time order, coloured by kind, a marked gap where
    time jumps (seconds to hours apart), and bars for the data-loss window and for the time users
    wrote into the rolled-back database."""
    if not events:
        return ""
    row, gap_row, top, axis = 26, 18, 16, 232
    ys, y, gaps = [], top, []
    for i, e in enumerate(events):
        if i:
            jump = (from_iso(e["time"]) - from_iso(events[i - 1]["time"])).total_seconds()
            if jump >= 60:
                gaps.append((y + gap_row / 2, jump))
                y += gap_row
        ys.append(y + row / 2)
        y += row
    legend_y = y + 18
    height, width = legend_y + 16, 900
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'role="img" aria-label="Incident timeline" font-family="system-ui, sans-serif">',
             "<title>Incident timeline (UTC)</title>",
             f'<line x1="{axis}" y1="{top}" x2="{axis}" y2="{y}" stroke="#90a4ae" stroke-width="2"/>']

    def index_of(pred) -> int | None:
        return next((i for i, e in enumerate(events) if pred(e)), None)

    start = index_of(lambda e: e.get("fact") == "snapshot" and e["kind"] == "good")
    change = index_of(lambda e: e["kind"] == "mistake")
    applied = index_of(lambda e: e.get("fact") == "applied")
    if start is not None and change is not None and change > start:
        parts.append(_bar(axis - 40, ys[start], ys[change], "#ef9a9a"))
    if change is not None:
        end = ys[applied] if applied is not None else ys[-1]
        if end > ys[change]:
            parts.append(_bar(axis - 22, ys[change], end, "#ffcc80"))
    for gy, jump in gaps:
        parts.append(f'<text x="{axis + 16}" y="{gy + 4}" font-size="11" font-style="italic" fill="#78909c">'
                     f"… {escape(human_age(jump))} later …</text>")
    day = None
    for y_, e in zip(ys, events):
        color = COLORS.get(e["kind"], COLORS["incident"])
        stamp = _ms(e["time"])
        label = stamp[11:] if stamp[:10] == day else stamp
        day = stamp[:10]
        parts.append(f'<text x="{axis - 50}" y="{y_ + 4}" text-anchor="end" font-size="12" fill="#555">{label}</text>')
        parts.append(f'<circle cx="{axis}" cy="{y_}" r="6" fill="{color}" stroke="#fff" stroke-width="2">'
                     f'<title>{escape(e["time"])} {escape(e["event"])}</title></circle>')
        parts.append(f'<text x="{axis + 16}" y="{y_ + 4}" font-size="13" fill="#1d2327">{escape(_short(e["event"], 90))}</text>')
    window = f" ({facts['window']['human']})" if facts.get("window") else ""
    parts.append(f'<rect x="10" y="{legend_y - 9}" width="12" height="10" fill="#ef9a9a"/>'
                 f'<text x="28" y="{legend_y}" font-size="12" fill="#1d2327">data-loss window{escape(window)}</text>'
                 f'<rect x="250" y="{legend_y - 9}" width="12" height="10" fill="#ffcc80"/>'
                 f'<text x="268" y="{legend_y}" font-size="12" fill="#1d2327">users write into the rolled-back database, '
                 "until the recovery</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def _bar(x: float, y1: float, y2: float, fill: str) -> str:
    return f'<rect x="{x}" y="{y1}" width="10" height="{max(2.0, y2 - y1)}" fill="{fill}" rx="3"/>'


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(x)}</li>" for x in items) + "</ul>"


def _num(v) -> str:
    return "–" if v is None else escape(str(v))


def render(pm: Postmortem) -> str:
    inc, f = pm.incident, pm.facts
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{escape(pm.title)}</title><style>{CSS}</style></head><body>"]
    h.append(f"<h1>{escape(pm.title)}</h1>")
    h.append(f'<p class="meta">Incident <code>{escape(inc["id"])}</code> · target <code>{escape(str(inc.get("target_name")))}</code>'
             f' · status <b>{escape(inc.get("status", "open"))}</b> · opened {escape(_t(inc["opened_at"]))} UTC</p>')
    h.append('<p class="draft">Blameless draft written by Mulligan from recorded facts. Causes are conditions and '
             "systems, not people. Edit freely before the review.</p>")
    h.append("<h2>Summary</h2>" + f"<p>{escape(pm.summary)}</p>")
    h.append('<div class="facts">')
    for label, value in (("users potentially lost data", f["users_affected"]), ("rows lost", f["rows_lost"]),
                         ("rows recovered", f["rows_recovered"]), ("conflicts for a person", f["conflicts"]),
                         ("data-loss window", (f["window"] or {}).get("human"))):
        h.append(f'<div class="fact"><b>{_num(value)}</b>{escape(label)}</div>')
    h.append("</div>")
    h.append("<h2>Impact</h2>" + _list(pm.impact))
    if pm.impact_tables:
        h.append("<table><tr><th>table</th><th>rows lost</th><th>rows recovered</th><th>new ids</th><th>conflicts</th></tr>")
        for t in pm.impact_tables:
            h.append(f"<tr><td>{escape(t['table'])}</td>" + "".join(
                f'<td class="num">{_num(t[k])}</td>' for k in ("lost", "recovered", "remapped", "conflicts")) + "</tr>")
        h.append("</table>")
    h.append("<h2>Timeline (UTC)</h2>" + timeline_svg(pm.timeline, f))
    h.append("<p>" + " ".join(f'<span><span class="dot" style="background:{COLORS[k]}"></span>{escape(v)}</span> '
                              for k, v in LEGEND) + "</p>")
    h.append("<table><tr><th>time (UTC)</th><th>event</th><th>detail</th></tr>")
    for e in pm.timeline:
        dot = f'<span class="dot" style="background:{COLORS.get(e["kind"], COLORS["incident"])}"></span>'
        h.append(f"<tr><td>{escape(_ms(e['time']))}</td><td>{dot}{escape(e['event'])}</td>"
                 f"<td>{escape(str(e.get('detail') or ''))}</td></tr>")
    h.append("</table>")
    h.append("<h2>Detection</h2>" + _list(pm.detection))
    h.append("<h2>Response and recovery</h2>" + _list(pm.response))
    if pm.conflicts:
        total = pm.facts.get("conflicts") or len(pm.conflicts)
        h.append(f"<p>Conflicts left for a person ({len(pm.conflicts)} of {total} shown; the live value was kept):</p>"
                 "<table><tr><th>table</th><th>key</th><th>why</th></tr>")
        h += [f"<tr><td>{escape(str(c['table']))}</td><td>{escape(str(c['key']))}</td><td>{escape(str(c['reason']))}</td></tr>"
              for c in pm.conflicts]
        h.append("</table>")
    for title, items in (("What went well", pm.went_well), ("What went poorly", pm.went_poorly),
                         ("Where we got lucky", pm.lucky), ("Contributing factors", pm.factors)):
        h.append(f"<h2>{title}</h2>" + _list(items))
    h.append("<h2>Action items</h2><table><tr><th>priority</th><th>action</th><th>because</th></tr>")
    for a in pm.actions:
        h.append(f'<tr><td class="pri-{escape(a["priority"])}">{escape(a["priority"])}</td>'
                 f"<td>{escape(a['action'])}</td><td>{escape(a['why'])}</td></tr>")
    h.append("</table>")
    notes = inc.get("notes") or []
    if notes:
        h.append("<h2>Notes from the response</h2>" + _list(
            [f"{_t(n['time'])} UTC: {n['text']}" for n in notes]))
    h.append("</body></html>")
    return "\n".join(h)
