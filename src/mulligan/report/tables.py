"""Small helpers for terminal tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..units import human_size

if TYPE_CHECKING:
    from rich.table import Table


# Past this many rows a table of plain cells is drawn without rich's layout (see _drawn_fast).
FAST_ROWS = 200


def table(*columns: str, title: str | None = None) -> "Table":
    from rich.table import Table  # imported when a table is drawn, not at start-up

    class ListingTable(Table):
        """rich's Table, drawn line by line when it is long. rich measures, wraps and pads every
        cell through its renderables: 20,000 restore points took 11 s to list. A long table
        whose cells are all plain one-line text, and whose natural width fits, is drawn here in
        the very same layout (tests compare the two); anything else is left to rich."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.plain_rows: list[tuple[str, ...]] | None = []

        def add_row(self, *cells, **kwargs):
            if self.plain_rows is not None:
                if kwargs or not all(isinstance(c, str) and "[" not in c and "\n" not in c for c in cells):
                    self.plain_rows = None  # markup, styles or renderables: rich draws it
                else:
                    self.plain_rows.append(cells)
            super().add_row(*cells, **kwargs)

        def __rich_console__(self, console, options):
            lines = _drawn_fast(self, options) if not self.title else None
            if lines is None:
                yield from super().__rich_console__(console, options)
                return
            yield from lines

    t = ListingTable(title=title, title_justify="left", header_style="bold", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def _drawn_fast(t, options) -> list | None:
    from rich.cells import cell_len
    from rich.segment import Segment
    from rich.style import Style

    rows = t.plain_rows
    if rows is None or len(rows) <= FAST_ROWS:
        return None
    heads = [str(c.header) for c in t.columns]
    widths = [cell_len(h) for h in heads]
    for r in rows:
        if len(r) != len(widths):
            return None
        widths = [max(w, cell_len(c)) for w, c in zip(widths, r)]
    if sum(widths) + 3 * (len(widths) - 1) > options.max_width:
        return None  # rich folds cells to fit

    def line(cells, sep):
        return sep.join(c + " " * (w - cell_len(c)) for c, w in zip(cells, widths))

    heavy, light, rule, cross = ("|", " | ", "-", "-+-") if options.ascii_only else ("┃", " │ ", "━", "━╇━")
    bold = Style(bold=True)
    out = []
    for i, h in enumerate(heads):  # as rich styles a header row: cells and their padding bold
        if i:
            out += [Segment(" ", bold), Segment(heavy), Segment(" ", bold)]
        out.append(Segment(h + " " * (widths[i] - cell_len(h)), bold))
    out.append(Segment.line())
    out.append(Segment(cross.join(rule * w for w in widths) + "\n"))
    out.append(Segment("\n".join(line(r, light) for r in rows) + "\n"))
    return out


def size(n: int | None) -> str:
    return "-" if n is None else human_size(n)


def env_label(env: str) -> str:
    return "[bold white on red] PRODUCTION [/]" if env == "production" else env
