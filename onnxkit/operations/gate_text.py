"""A pipeline gate written as the condition that holds (``p99 0.0267 ms > max_latency_ms 0.001``).

Part of the result's data, not of its rendering: the JSON ``failures`` list carries these
lines as the reports do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxkit.results import fmt_num

if TYPE_CHECKING:
    from onnxkit.operations.gates import GateOutcome

# What each gate measures, and its unit, so a condition reads as a measurement.
_GATE_MEASURES = {
    "max_latency_ms": ("p99", " ms"),
    "min_speedup": ("speed-up", "x"),
    "max_size_mb": ("size", " MB"),
    "min_cosine": ("cosine", ""),
}


def _distinct(actual: float, threshold: float) -> str:
    """The actual value with enough digits that it does not print as its threshold
    (a cosine of 0.99985 against 0.9999 must not read "1 < 0.9999")."""
    for digits in range(4, 12):
        text = f"{actual:.{digits}g}"
        if actual == threshold or float(text) != float(f"{threshold:.{digits}g}"):
            return text
    return repr(actual)


def gate_condition(g: GateOutcome) -> str:
    """The gate as the condition that holds: ``p99 0.0267 ms > max_latency_ms 0.001`` for a
    failed latency gate, ``cosine 0.9998 >= min_cosine 0.99`` for a passed one."""
    minimum = g.name.startswith("min_")
    threshold = fmt_num(g.threshold)
    detail = f" ({g.detail})" if g.detail else ""
    if g.actual is None:
        return f"{g.name} {'>=' if minimum else '<='} {threshold}: not measured{detail}"
    label, unit = _GATE_MEASURES.get(g.name, (g.name.split(".", 1)[-1], ""))
    if getattr(g, "status", "") == "inconclusive":
        return f"{label} {_distinct(g.actual, g.threshold)}{unit} inconclusive against {g.name} {threshold}{detail}"
    if minimum:
        op = ">=" if g.passed else "<"
    else:
        op = "<=" if g.passed else ">"
    return f"{label} {_distinct(g.actual, g.threshold)}{unit} {op} {g.name} {threshold}{detail}"
