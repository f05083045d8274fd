"""Markdown summaries, e.g. for ``$GITHUB_STEP_SUMMARY`` or a merge-request comment.

Generic: renders any Result from its verdict, tables and notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxkit.foundation.files import write_text_atomic
from onnxkit.results import Result, Table, fmt_num, shown


def md_cell(v: Any) -> str:
    text = shown(v) if isinstance(v, str) else fmt_num(v)
    # A pipe would end the cell; line breaks (escaped by shown) would end the row; and most
    # Markdown viewers pass raw HTML through, so a model named <script> must stay text.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\\", "\\\\").replace("|", "\\|") or " "


def table_markdown(t: Table) -> str:
    cols = [md_cell(c) for c in t.columns]
    lines = [f"**{md_cell(t.title)}**", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in t.rows:
        cells = [md_cell(v) for v in row] + [" "] * (len(cols) - len(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def result_markdown(result: Result, title: str | None = None) -> str:
    mark = "✅" if result.passed else "❌"
    head = title or f"onnxkit {result.command}".strip()
    parts = [f"## {mark} {md_cell(head)}: {result.verdict}", ""]
    for t in result.tables():
        parts += [table_markdown(t), ""]
    if result.notes:
        parts += ["**Notes**", ""] + [f"- {md_cell(n)}" for n in result.notes] + [""]
    return "\n".join(parts)


def write_markdown(dest: str | Path, result: Result, title: str | None = None) -> Path:
    return write_text_atomic(dest, result_markdown(result, title))
