"""Render results for people (Rich) and machines (JSON). The only place results are drawn."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from onnxkit.results import Result, Table, fmt_num


# CI logs are not terminals; Rich would squeeze tables into 80 columns there.
_LOG_WIDTH = 140


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=False, width=None if sys.stderr.isatty() else _LOG_WIDTH)


def stdout_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else _LOG_WIDTH)


def _cell(v: Any) -> str:
    # Shapes like "[batch, 4]" would otherwise be read as Rich markup tags.
    return escape(v if isinstance(v, str) else fmt_num(v))


def rich_table(t: Table) -> RichTable:
    rt = RichTable(title=t.title, title_justify="left", show_lines=False)
    for c in t.columns:
        rt.add_column(c, overflow="fold")
    for row in t.rows:
        rt.add_row(*[_cell(v) for v in row])
    return rt


def to_json(result: Result) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=False, default=str)


def render(result: Result, *, json_mode: bool = False, quiet: bool = False) -> None:
    """With ``json_mode`` stdout gets exactly one JSON document; tables go to stderr."""
    console = stderr_console() if json_mode else stdout_console()
    if not quiet:
        for t in result.tables():
            console.print(rich_table(t))
        for note in result.notes:
            stderr_console().print(f"[yellow]note:[/yellow] {note}")
    if json_mode:
        sys.stdout.write(to_json(result) + "\n")
        sys.stdout.flush()
    elif not quiet or not result.passed:
        style = "bold green" if result.passed else "bold red"
        console.print(f"[{style}]{result.verdict}[/{style}]" + (f" {result.command}" if result.command else ""))
