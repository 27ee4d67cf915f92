"""`mulligan demo`: the story told end to end, in plain words, in under a minute.

The narration is the command's output (standard output; with --json it moves to
standard error and the facts of the run are printed as JSON).
"""

from __future__ import annotations

import random
import textwrap
import time
from pathlib import Path
from typing import Callable

from ..ops.incidents import recovery_counts
from ..ops.summary import short_title
from ..timeparse import from_iso, human_age
from . import blog
from .channel import TeamChannel
from .drill import TARGET, Drill

Say = Callable[[str], None]


def _indent(text: str, prefix: str = "     ") -> str:
    return textwrap.indent(text, prefix)


def _key(key) -> str:
    if isinstance(key, (list, tuple)):
        return str(key[0]) if len(key) == 1 else "(" + ", ".join(map(str, key)) + ")"
    return str(key)


def _as_users(db: str, *steps) -> list[dict]:
    """Writes made by named users, as the app would make them (one transaction each)."""
    conn = blog.connect(db)
    rnd = random.Random(99)
    done = []
    try:
        for fn, kwargs in steps:
            with conn:
                done.append(fn(conn, rnd, **kwargs))
    finally:
        conn.close()
    return done


def run_drill(directory: Path, say: Say, *, lost_seconds: float = 5.0, after_seconds: float = 2.0) -> dict:
    started = time.monotonic()
    messages: list[str] = []
    with TeamChannel(on_message=messages.append) as channel:
        drill = Drill(directory, channel)
        try:
            return _story(drill, say, messages, started, lost_seconds, after_seconds)
        finally:
            drill.stop()


def _story(drill: Drill, say: Say, messages: list[str], started: float, lost_seconds: float, after_seconds: float) -> dict:
    say("Mulligan demo: the day a 17-hour-old snapshot was restored over a live production database,")
    say(f"replayed for real in under a minute. Everything is written to {drill.dir}.\n")

    drill.prepare_dir()
    drill.create_app()
    drill.protect()
    c = blog.counts(drill.db)
    say(f"1. The app. A small blog in SQLite (WAL mode): {c['users']} users, {c['posts']} posts, {c['comments']} comments,")
    say("   tags, AUTOINCREMENT ids and foreign keys. Mulligan protects it as target 'blog', environment production;")
    say("   that identity is stamped inside the database file itself.")

    drill.start_watch()
    say("2. Watching. `mulligan watch blog` now captures every committed transaction and checks, many times a")
    say("   second, that production never goes back in time. Alerts go to the team channel (a local webhook here).")

    drill.start_users()
    time.sleep(1.0)
    say("3. Users write. Simulated users sign up, post, comment and fix titles, around 30 writes a second,")
    say("   from a separate process that never stops for anyone.")

    nightly = drill.nightly_backup()
    say("4. Last night's backup. The nightly job copies blog.db to backups/blog-nightly.db; Mulligan holds the")
    say(f"   same moment as snapshot {nightly.id[:8]}. In the story that copy is 17 hours old; here it is seconds old.")
    time.sleep(lost_seconds / 2)
    hedy, edit = _as_users(drill.db, (blog.sign_up, {"username": "hedy"}),
                           (blog.edit_title, {"post_id": 57, "title": "Frequency hopping, explained"}))
    _as_users(drill.db, (blog.write_post, {"author": hedy["id"]}))
    say("   Meanwhile life goes on: hedy signs up and writes her first post; the author of post 57 fixes its title.")
    time.sleep(lost_seconds / 2)

    before = len(drill.writes())
    changed_at = drill.restore_over_production()
    lost_window = (from_iso(changed_at) - from_iso(nightly.time)).total_seconds()
    say("5. The mistake. Believing the terminal is on the test server, an engineer restores the backup:")
    say('     sqlite3 blog.db ".restore backups/blog-nightly.db"')
    say(f"   No error; the app keeps running. {human_age(lost_window)} of writes are gone from production, and users")
    say("   keep writing into the old state, on ids that the lost rows had.")
    _as_users(drill.db, (blog.sign_up, {"username": "hedy"}),
              (blog.edit_title, {"post_id": 57, "title": "Frequency hopping (draft 2)"}))
    say("   hedy finds her account gone and signs up again; a co-author edits post 57's title too.")

    inc = drill.wait_for_incident()
    det = inc.get("detection") or {}
    delay = (from_iso(det.get("detected_at") or inc["opened_at"]) - from_iso(changed_at)).total_seconds()
    rb = inc.get("rolled_back_to") or {}
    say(f"6. Detection. {'Less than a second' if delay < 1 else human_age(delay)} later the watcher opened incident "
        f"{inc['id']}: {short_title(inc)}.")
    if rb.get("snapshot_id"):
        same = " (the nightly one)" if nightly.id == rb["snapshot_id"] else ""
        say(f"   It recognised the state production went back to: snapshot {rb['snapshot_id'][:8]}{same}.")
    for signal in det.get("signals") or []:
        say(_indent(f"signal: {signal}"))
    raised = (inc.get("counters") or {}).get("raised") or {}
    if raised:
        say("   It raised the id counters (" + ", ".join(f"{t} to {v}" for t, v in raised.items())
            + ") so new rows stop taking the lost rows' ids.")
    deadline = time.monotonic() + 3
    while not messages and time.monotonic() < deadline:  # the watcher delivers alerts in the background
        time.sleep(0.05)
    for text in messages[:1]:
        say("   The team channel received:")
        say(_indent(text.strip()[:600], "     | "))

    drill.report_the_mistake()
    say("   The engineer who ran the restore adds a note to the incident saying how it happened.")

    impact = drill.assess()
    n = impact["users_affected"]
    say("7. Impact. Who wrote between the old snapshot and the mistake?")
    say(f"   {n} users potentially lost data")
    top = ", ".join(f"{u['label'] or u['id']} ({u['total']} rows)" for u in impact["users"][:5])
    if top:
        say(f"   most affected: {top}")

    time.sleep(after_seconds)
    plan = drill.recover(apply=False)
    say(f"8. Recovery. `mulligan recover blog --incident {inc['id']}` plans a three-way merge: replay what was")
    say(f"   lost, keep what users wrote since. Plan: {plan['rows_recovered']} rows to write back, "
        f"{plan['remapped']} of them under new ids because their ids were taken again.")
    result = drill.recover(apply=True)
    counts = recovery_counts(result)
    say(f"   Applied with --confirm blog, after an undo point ({result.get('undo_point')}), while users kept writing:")
    say(f"   {counts['rows']} lost rows are back; {counts['remapped']} got new ids, with their comments and tags following.")
    for table, pairs in list((result.get("key_map") or {}).items())[:3]:
        sample = ", ".join(f"{_key(p['lost'])}→{_key(p['now'])}" for p in pairs[:4])
        say(f"     {table}: {sample}{' …' if len(pairs) > 4 else ''}")
    conflicts = result.get("conflicts") or []
    say(f"   {len(conflicts)} conflicts are listed for a person (the live value was kept):")
    for cf in conflicts[:6]:
        say(f"     - {cf['table']} {_key(cf['key'])}: {cf['reason']}")

    drill.stop()
    users_wrote = len(drill.writes()) - before
    summary = drill.send_summary()
    say("9. Telling the team. The summary, posted to the team channel:")
    say(_indent(summary.text, "     | "))

    md, html, pm = drill.close_and_write_postmortem()
    say("10. The postmortem. A blameless draft built from the recorded facts, with action items:")
    for a in pm.actions[:3]:
        say(f"     - {a['action']}")
    say(f"    Written to {md} and {html} (open the HTML in a browser).")
    seconds = time.monotonic() - started
    say(f"\nDone in {seconds:.1f} s.")
    return {
        "dir": str(drill.dir), "incident": inc["id"], "users_affected": n,
        "rows_recovered": counts["rows"], "remapped": counts["remapped"], "conflicts": counts["conflicts"],
        "lost_window_seconds": round(lost_window, 3), "detection_seconds": round(delay, 3),
        "writes_after_mistake": users_wrote, "postmortem": [str(md), str(html)], "seconds": round(seconds, 1),
        "timeline": [e["event"] for e in pm.timeline], "channel_messages": len(messages),
        "target": TARGET,
    }
