"""The HTML postmortem opens in a real browser (headless Chromium) without a console error, and is screenshotted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mulligan.ops import incidents as inc_ops
from mulligan.ops import postmortem as pm_ops
from mulligan.report import postmortem_html

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0", "--window-size=1200,1600"]
CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\]\s*(.*)")


def open_in_chromium(page: Path, work: Path, mode: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run Chromium on a file with a fresh profile; return the run and the page's console messages."""
    profile = work / f"profile-{mode}"
    out = ["--dump-dom"] if mode == "dom" else [f"--screenshot={work / 'postmortem.png'}"]
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *out, page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    console = [m.group(1) for m in map(CONSOLE.search, run.stderr.splitlines()) if m]
    return run, console


def demo_incident() -> dict:
    inc = {"id": "inc-5eed0001", "target_id": "t-1", "target_name": "blog", "kind": "rollback", "status": "closed",
           "title": "blog went back in time <script>alert(1)</script>",
           "opened_at": "2026-11-21T10:15:05.000Z", "closed_at": "2026-11-21T11:02:00.000Z",
           "detection": {"signals": ["sqlite_sequence fell", "pages match snapshot aaaa1111"],
                         "detected_at": "2026-11-21T10:15:04.100Z", "changed_at": "2026-11-21T10:15:02.000Z"},
           "last_good": {"time": "2026-11-21T10:15:01.900Z", "point": "bbbb2222"},
           "rolled_back_to": {"snapshot_id": "aaaa1111", "time": "2026-11-20T17:02:00.000Z", "age_seconds": 61982},
           "counters": {"raised": {"posts": 4120}, "no_counter": []},
           "timeline": [{"time": "2026-11-21T10:15:05.000Z", "event": "incident opened", "detail": "rolled back"}],
           "notes": [{"time": "2026-11-21T10:20:00.000Z", "author": "ops", "text": "confirmed with the app's logs & <b>metrics</b>"}],
           "alerts": [{"time": "2026-11-21T10:15:05.200Z", "channel": "team webhook", "ok": True, "detail": "rollback"}],
           "impact": {"computed_at": "2026-11-21T10:18:00.000Z", "users_affected": 42, "users": []},
           "recovery": {"planned_at": "2026-11-21T10:25:00.000Z", "applied_at": "2026-11-21T10:31:00.000Z", "applied": True,
                        "undo_point": "cccc3333",
                        "tables": {"posts": {"inserts": 80, "updates": 4, "deletes": 0, "remapped": 31, "conflicts": 2},
                                   "comments": {"inserts": 300, "updates": 0, "deletes": 1, "remapped": 120, "conflicts": 0}},
                        "conflicts": [{"table": "posts"}, {"table": "posts"}]}}
    return inc


@pytest.fixture
def page(tmp_path) -> Path:
    inc = demo_incident()
    pm = pm_ops.build(inc, inc_ops.assemble_timeline(inc, audit_entries=[]), [])
    path = tmp_path / "postmortem.html"
    path.write_text(postmortem_html.render(pm), encoding="utf-8")
    return path


def test_the_html_postmortem_is_one_self_contained_file_with_an_svg_timeline(page):
    html = page.read_text()
    assert "<svg" in html and "</svg>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no resource may come from the network"
    assert "<script" not in html.replace("&lt;script&gt;", ""), "no script: text from the record is escaped"
    assert "&lt;b&gt;metrics&lt;/b&gt;" in html


@needs_chromium
def test_the_html_postmortem_renders_in_headless_chromium_without_console_errors(page, tmp_path):
    run, console = open_in_chromium(page, tmp_path, "dom")
    assert run.returncode == 0, run.stderr[-2000:]
    assert console == [], f"console messages: {console}"
    dom = run.stdout
    assert "Postmortem (draft)" in dom and "<svg" in dom and "Action items" in dom
    shot, console = open_in_chromium(page, tmp_path, "screenshot")
    assert shot.returncode == 0 and console == []
    png = tmp_path / "postmortem.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000  # a page, not a blank
    keep = os.environ.get("MULLIGAN_SCREENSHOT_DIR")
    if keep:
        shutil.copy(png, Path(keep) / "postmortem.png")


@needs_chromium
def test_the_browser_check_would_catch_a_console_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("broken-page")</script></body></html>')
    run, console = open_in_chromium(bad, tmp_path, "dom")
    assert any("broken-page" in c for c in console)
