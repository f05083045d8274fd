"""Render results for people (Rich) and machines (JSON). The only place results are drawn."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from onnxkit.results import Result, Table, fmt_num, shown


# CI logs are not terminals; Rich would squeeze tables into 80 columns there.
_LOG_WIDTH = 140


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=False, width=None if sys.stderr.isatty() else _LOG_WIDTH)


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else _LOG_WIDTH)


def _cell(v: Any) -> str:
    # Shapes like "[batch, 4]" would otherwise be read as Rich markup tags.
    return escape(shown(v) if isinstance(v, str) else fmt_num(v))


def rich_table(t: Table, widths: list[int] | None = None) -> RichTable:
    rt = RichTable(title=escape(shown(t.title)), title_justify="left", show_lines=False)
    for i, c in enumerate(t.columns):
        # "fold" cuts only a word longer than its whole column; fit() sizes the columns so
        # that does not happen.
        rt.add_column(c, overflow="fold", width=widths[i] if widths else None)
    for row in t.rows:
        rt.add_row(*[_cell(v) for v in row])
    return rt


def record_tables(t: Table) -> list[RichTable]:
    """``t`` one row at a time as property/value pairs: what a table too wide for the
    terminal becomes, instead of columns so narrow that words break mid-word."""
    out = []
    for i, row in enumerate(t.rows):
        title = escape(shown(t.title)) if i == 0 else None
        rt = RichTable(title=title, title_justify="left", show_header=False, show_lines=False)
        rt.add_column(style="bold", no_wrap=True)
        rt.add_column(overflow="fold")
        for name, v in zip(t.columns, row):
            rt.add_row(escape(name), _cell(v))
        out.append(rt)
    return out


def _column_extents(t: Table) -> tuple[list[int], list[int]]:
    """Per column: the longest word (narrower breaks a word) and the longest line."""
    from rich.cells import cell_len

    texts = [[str(c)] for c in t.columns]
    for row in t.rows:
        for i, v in enumerate(row[:len(texts)]):
            texts[i].append(shown(v) if isinstance(v, str) else fmt_num(v))
    least = [max((cell_len(w) for x in col for w in x.split()), default=1) for col in texts]
    most = [max((cell_len(line) for x in col for line in x.splitlines() or [""]), default=1) for col in texts]
    return least, most


def fit(console: Console, t: Table) -> list[RichTable]:
    """The table as columns when every column can keep its longest word whole at this
    width, else as one record per row.

    Rich, left alone, shrinks a too-wide table's columns in proportion and breaks words
    (a 140-column CI log cut "FusedMatMulNBits" in two); so the widths are set here: each
    column gets its longest word, and the room left goes to the columns that want more.
    """
    least, most = _column_extents(t)
    frame = 3 * len(least) + 1  # a space either side of each cell, and the borders
    room = console.width - frame
    if not t.rows or sum(most) <= room:
        return [rich_table(t)]
    if sum(least) > room:
        return record_tables(t)
    widths = list(least)
    spare = room - sum(least)
    wants = [m - w for m, w in zip(most, least)]
    # The columns that want little get all of it first (a "<- chosen" stays on one line,
    # fewer rows grow taller); the wide ones share what is left equally.
    order = sorted(range(len(wants)), key=wants.__getitem__)
    while order and wants[order[0]] <= spare:
        i = order.pop(0)
        widths[i] += wants[i]
        spare -= wants[i]
    for k, i in enumerate(order):
        give = spare // (len(order) - k)
        widths[i] += give
        spare -= give
    return [rich_table(t, widths)]


def to_json(result: Result) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=False, default=str)


def render(result: Result, *, json_mode: bool = False, quiet: bool = False) -> None:
    """With ``json_mode`` stdout gets exactly one JSON document; tables go to stderr.
    With ``quiet`` (and no JSON) stdout gets one line, the verdict with its key number."""
    console = stderr_console() if json_mode else stdout_console()
    if not quiet:
        for t in result.tables():
            for rt in fit(console, t):
                console.print(rt)
        for note in result.notes:
            stderr_console().print(f"[yellow]note:[/yellow] {escape(shown(note))}")
    if json_mode:
        sys.stdout.write(to_json(result) + "\n")
        sys.stdout.flush()
    elif quiet:
        from onnxkit.reports.headline import headline

        # Plain write: Rich would wrap a long line and read paths like [x] as markup.
        sys.stdout.write(shown(headline(result)) + "\n")
        sys.stdout.flush()
    else:
        style = "bold green" if result.passed else "bold red"
        console.print(f"[{style}]{result.verdict}[/{style}]" + (f" {result.command}" if result.command else ""))
