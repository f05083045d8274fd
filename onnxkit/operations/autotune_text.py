"""The words of `--auto`'s candidate table: a run-off latency and a candidate's settings."""

from __future__ import annotations

from typing import Any

from onnxkit.results import fmt_num


def runoff_text(ms: float | None, ratio: float | None) -> str:
    # The ratio is a latency ratio (p50 / the round's best); said as "% slower" so no
    # "x" in this table reads the opposite way of the speed-up columns.
    if ratio is None:
        return "-"
    behind = (ratio - 1) * 100
    return f"{fmt_num(ms)} (best)" if behind < 0.05 else f"{fmt_num(ms)} ({behind:.1f}% slower than best)"


def settings_text(settings: dict[str, Any]) -> str:
    parts = []
    for k, v in settings.items():
        if k == "per_channel":
            parts.append("per-channel" if v else "per-tensor")
        elif k == "kept_float":
            parts.append(f"{v} node(s) kept float")
        elif k in ("mode", "fmt", "preset"):
            parts.append(str(v))
        else:
            parts.append(f"{k} {v}")
    return ", ".join(parts) or "-"
