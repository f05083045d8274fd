"""The deployment-targets table (one row per target) and its JUnit cases, from a finished
``TargetsResult`` (``onnxkit targets``, or the pipeline's ``targets`` step). Rendering only:
it reads the result's fields and changes nothing."""

from __future__ import annotations

from typing import Any

from onnxkit.results import Table, fmt_num

COLUMNS = ["target", "available", "runs", "ops it cannot run", "max diff", "precision", "latency ms", "verdict"]
BAD = ("failed", "disagrees")


def _unavailable(o: Any) -> bool:
    return o.status == "unavailable" or (o.status == "skipped" and str(o.reason or "").startswith("not available"))


def _runtime(o: Any) -> str:
    """``web (chromium)``: which program ran the target, where the target says."""
    runtime = (o.details or {}).get("runtime_kind") if isinstance(o.details, dict) else None
    return f"{o.target} ({runtime})" if runtime else o.target


def _ops(o: Any, limit: int = 6) -> str:
    ops = sorted({u["op"] for u in o.unsupported})
    if not ops:
        return "-"
    return ", ".join(ops[:limit]) + (f" and {len(ops) - limit} more" if len(ops) > limit else "")


def row(o: Any) -> list[Any]:
    if _unavailable(o):
        available, runs = "no", "-"
    elif o.status == "skipped":  # the reference could not run: this target was not tried
        available, runs = "-", "-"
    else:
        available = "yes"
        runs = "yes" if o.status in ("passed", "disagrees") else f"no ({o.stage})" if o.stage else "no"
    diff = "reference" if o.target == "cpu" and o.status == "passed" else fmt_num(o.max_abs_diff) if o.max_abs_diff is not None else "-"
    latency = fmt_num(o.latency_ms) if o.latency_ms is not None else "-"
    verdict = o.status.upper() if o.status in BAD else o.status
    return [_runtime(o), available, runs, _ops(o), diff, o.precision or "-", latency, verdict]


def targets_table(result: Any, title: str = "Targets (reference: ONNX Runtime CPU)") -> Table | None:
    """None when ``result`` holds no targets (the step did not run)."""
    outcomes = list(getattr(result, "targets", None) or [])
    if not outcomes:
        return None
    return Table(title, COLUMNS, [row(o) for o in outcomes])


def reasons(result: Any) -> list[str]:
    """Why each target that did not pass, then each target's notes (the precision it chose,
    the tolerance it was held to): the table has no room for them."""
    outcomes = list(getattr(result, "targets", None) or [])
    lines = [f"{o.target}: {o.reason}" for o in outcomes if o.status != "passed" and o.reason]
    return lines + [f"{o.target}: {n}" for o in outcomes for n in o.notes]


def junit_cases(result: Any) -> list[tuple[str, bool, str, str, bool]]:
    """One testcase per target: failed/disagrees fail it, unavailable or skipped mark it
    skipped (JUnit's <skipped>), so a CI reader never counts an absent target as passed."""
    cases = []
    for o in getattr(result, "targets", None) or []:
        line = " | ".join(str(c) for c in row(o))
        message = f"{o.status}: {o.reason}" if o.reason else o.status
        details = "\n".join([line, *[f"{u['op']} ({u['node']})" for u in o.unsupported]])
        missing = o.status == "unavailable" and o.requested  # the run's exit 3
        skipped = o.status == "skipped" or (o.status == "unavailable" and not missing)
        cases.append((f"target: {o.target}", o.status not in BAD and not missing, message, details, skipped))
    return cases
