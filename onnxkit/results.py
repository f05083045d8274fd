"""Result types shared by every command.

A result is a dataclass that knows its verdict and exit code, and describes itself as
plain tables (:class:`Table`) and a JSON-ready dict. Rendering (Rich, JSON, JUnit,
Markdown, HTML) happens in :mod:`onnxkit.reports` only.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import EXIT_CHECK_FAILED, EXIT_OK


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Result:
    """Base of every command's result."""

    command: str = ""
    passed: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    @property
    def verdict(self) -> str:
        return "PASSED" if self.passed else "FAILED"

    def tables(self) -> list[Table]:
        return []

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(dataclasses.asdict(self))
        d["verdict"] = self.verdict
        d["exit_code"] = self.exit_code
        return d


def to_jsonable(obj: Any) -> Any:
    """Make dataclass dicts JSON-safe: numpy scalars, paths, NaN/Inf (as strings)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.dtype):
        return obj.name
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    return obj


# Characters that could start a new line, move the cursor, recolour the terminal or reverse
# the reading order: a model's names (outputs, inputs, nodes) are attacker-chosen and must
# not forge a verdict line ("...\nPASSED validate") in text output.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match) -> str:
    c = m.group()
    if c in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def shown(text: Any) -> str:
    """``text`` safe to print on one line: control characters, line breaks and bidi
    controls written as ``\\n``, ``\\xNN``, ``\\uNNNN``; everything else unchanged."""
    return _UNSAFE_CHARS.sub(_escape_char, str(text))


def fmt_num(v: Any) -> str:
    """Short human form of a metric."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


# Decimal units (1 kB = 1000 bytes, 1 MB = 10^6 bytes) everywhere: tables, plots and the
# max_size_mb gate then quote the same number for the same file.
BYTE_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def fmt_bytes(n: int | float | None) -> str:
    """Decimal size: 81200 -> '81.20 kB'."""
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in BYTE_UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"
