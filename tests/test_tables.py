"""Long listings are drawn without rich's layout, in exactly the layout rich gives them."""

import io

import pytest
from rich.console import Console

from mulligan.report import tables


class AsciiStream(io.StringIO):
    encoding = "ascii"  # rich draws ASCII boxes on a stream that cannot carry more


def _draw(rows, *, fast: bool, monkeypatch, stream=io.StringIO, **console) -> str:
    monkeypatch.setattr(tables, "FAST_ROWS", 10 if fast else 10**9)
    t = tables.table("id", "time (UTC)", "kind", "tag", "size")
    for r in rows:
        t.add_row(*r)
    buf = stream()
    Console(file=buf, highlight=False, soft_wrap=True, **{"width": 160, **console}).print(t)
    return buf.getvalue()


def _rows(n, tag=""):
    return [(f"{i:016x}", f"2026-11-21T10:{i % 60:02d}:00Z", "snapshot" if i % 3 else "undo", tag if i % 7 else "",
             f"{i * 1.5:.1f} KiB") for i in range(n)]


@pytest.mark.parametrize("tag", ["", "before-migration", "日本語のタグ", "ünïcödé"])
@pytest.mark.parametrize("console", [{}, {"force_terminal": True, "color_system": "standard"}, {"safe_box": True, "legacy_windows": False, "force_terminal": False}])
def test_a_long_table_is_drawn_as_rich_draws_it(tag, console, monkeypatch):
    rows = _rows(250, tag)
    assert _draw(rows, fast=True, monkeypatch=monkeypatch, **console) == \
        _draw(rows, fast=False, monkeypatch=monkeypatch, **console)


def test_a_long_table_on_an_ascii_stream_is_drawn_as_rich_draws_it(monkeypatch):
    rows = _rows(250, "tag")
    fast = _draw(rows, fast=True, monkeypatch=monkeypatch, stream=AsciiStream)
    assert fast == _draw(rows, fast=False, monkeypatch=monkeypatch, stream=AsciiStream) and fast.isascii()


def test_cells_rich_would_style_or_fold_are_left_to_rich(monkeypatch):
    rows = _rows(250)
    rows[5] = (*rows[5][:3], "[bold]x[/]", rows[5][4])
    assert "[bold]" not in _draw(rows, fast=True, monkeypatch=monkeypatch)  # markup: rich drew it
    narrow = _draw(_rows(250), fast=True, monkeypatch=monkeypatch, width=40)
    assert max(len(x) for x in narrow.splitlines()) <= 40  # too wide to draw as is: rich folds it
