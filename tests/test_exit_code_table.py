"""The exit codes are documented in three places; errors.py is the one they must agree with."""

from __future__ import annotations

import re
from pathlib import Path

from onnxkit.errors import EXIT_CODES, EXIT_LABELS

ROOT = Path(__file__).resolve().parents[1]


def _readme_table() -> dict[int, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| *(\d+) *\| *(.*?) *\|$", section, flags=re.M)
    assert rows, "the README's exit-code section has no table"
    table = {int(code): meaning for code, meaning in rows}
    assert len(table) == len(rows), "a code appears twice in the README's table"
    return table


def test_readme_table_is_errors_py_row_for_row():
    assert _readme_table() == EXIT_CODES
    assert list(_readme_table()) == list(EXIT_CODES)  # same order too


def test_every_code_has_a_short_label():
    assert set(EXIT_LABELS) == set(EXIT_CODES)


def test_help_lists_every_code(cli):
    r = cli("--help")
    assert r.code == 0
    help_text = " ".join(r.stdout.split())  # Click rewraps the paragraph
    for code, label in EXIT_LABELS.items():
        assert f"{code} {label}" in help_text


def test_every_exit_constant_is_in_the_table():
    import onnxkit.errors as errors

    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert constants == set(EXIT_CODES)
