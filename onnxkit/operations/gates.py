"""The pipeline's gates: one outcome per configured threshold, judged on the final model.

Timed figures need care: a speed-up passes only when its interval clears the threshold.

A single ratio of medians from a loaded machine can land anywhere (the same CNN measured
5.6x and 1546x in two runs), so a speed-up gate reads the bootstrap interval of that ratio:
the low end at or above the threshold passes, the high end below it fails, and an interval
that straddles it is *inconclusive*, which exits 1 like a failure but says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.foundation.compare import NARROW_ROW, judged_cosine
from onnxkit.results import Result, fmt_num
from onnxkit.runtime.speedup_ci import (  # noqa: F401
    FAIL, INCONCLUSIVE, PASS, WHAT_TO_CHANGE, cpu_time_is_the_work, speedup_status, worst_status)


def speedup_gate(final_rows: list[dict], threshold: float, final_model, missing: str | None):
    """The pipeline's ``min_speedup`` gate on the bench step's rows of the final model (see
    bench_rows), judged at the largest batch size, where throughput matters and
    timer noise matters least. ``missing``: why nothing was timed, when bench did not run."""
    vals = [r for r in final_rows if isinstance(r.get("speedup"), (int, float))]
    if not vals:
        detail = missing or "the source framework was not timed (bench.vs_source)"
        return GateOutcome(name="min_speedup", threshold=threshold, actual=None, passed=False, detail=detail, status=FAIL)
    row = max(vals, key=lambda r: r["batch"])
    ci = row.get("speedup_ci95")
    status, reason = speedup_status(row["speedup"], ci, threshold, row.get("speedup_cpu_ci95"),
                                    cpu_decides=bool(row.get("cpu_decides")))
    where = f"{final_model.name} vs source, p50 at batch {row['batch']}" if final_model is not None else f"batch {row['batch']}"
    return GateOutcome(name="min_speedup", threshold=threshold, actual=row["speedup"], passed=status == PASS,
                       detail=f"{where}; {reason}", status=status, ci95=list(ci) if ci else None)


@dataclass
class GateOutcome:
    name: str
    threshold: float
    actual: float | None
    passed: bool
    detail: str = ""
    status: str = ""  # pass, fail or inconclusive (a timed figure whose interval straddles the threshold)
    ci95: list[float] | None = None

    def __post_init__(self) -> None:
        self.status = self.status or ("pass" if self.passed else "fail")

    @property
    def line(self) -> str:
        op = ">=" if self.name.startswith("min_") else "<="
        got = fmt_num(self.actual) if self.actual is not None else "not measured"
        status = f" [{self.status}]" if self.status == "inconclusive" else ""
        return f"{self.name}: {got} {op} {fmt_num(self.threshold)}{status}" + (f" ({self.detail})" if self.detail else "")




def bench_rows(res: Result | None) -> list[dict[str, Any]]:
    """Latency rows of a bench result as plain dicts: variant, batch, p50_ms, p99_ms,
    speedup (vs the source, where measured), is_source."""
    entries = getattr(res, "entries", None) or []
    return [
        {"variant": e.name + (f" ({e.kind})" if e.is_source else ""), "batch": e.batch_size, "p50_ms": e.stats.p50_ms,
         "p99_ms": e.stats.p99_ms, "speedup": e.speedup_vs_source, "speedup_ci95": e.speedup_ci95,
         "speedup_cpu_ci95": e.speedup_cpu_ci95,
         # as bench --min-speedup: where a call's CPU time is its whole work, that interval decides
         "cpu_decides": cpu_time_is_the_work(res, e),
         "is_source": e.is_source}
        for e in entries
    ]


def _final_validation(run: Any) -> Any:
    """The validation result of the last artifact, or None when it was not validated."""
    from onnxkit.operations.pipeline import SKIPPED

    for name in ("validate quantized", "validate optimized", "validate export"):
        s = run.step(name)
        if s is not None and s.result is not None:
            return s.result
        if s is not None and s.status != SKIPPED:
            return None
    return None


def evaluate_gates(run: Any, gates: dict[str, float]) -> list[GateOutcome]:
    """One pass/fail line per configured gate. A gate whose number was not measured
    fails: a gate that cannot be checked must not let a build through."""
    out: list[GateOutcome] = []
    final = Path(run.final_model) if run.final_model else None
    validation = _final_validation(run)
    bench = run.step("bench")
    rows = bench_rows(bench.result if bench else None)
    final_rows = [r for r in rows if not r["is_source"] and r["variant"] == run.final_variant]
    for name, threshold in gates.items():
        actual: float | None = None
        detail = ""
        if name.startswith("max_error."):
            metric = name.split(".", 1)[1]
            # A label output (class ids, masks) is compared by agreement: its error fields stay 0.0
            # whatever differs, and would read as a perfect match.
            vals = [(getattr(o, metric), o.name) for o in (validation.outputs if validation else [])
                    if o.kind != "label" and isinstance(getattr(o, metric, None), (int, float))]
            if vals:
                actual, worst = max(vals)
                detail = f"worst output {worst}" + (f" of {final.name}" if final else "")
            else:
                detail = "the final model was not validated" if validation is None else f"no numeric output has {metric}"
        elif name == "min_cosine":
            vals = [(judged_cosine(o), o.name, o) for o in (validation.outputs if validation else [])
                    if isinstance(o.cosine, (int, float))]
            if vals:
                actual, worst, o = min(vals, key=lambda v: v[:2])
                detail = f"worst output {worst}"
                if actual < o.cosine:
                    # A row of a few values has a cosine that is only its sign (a regressor 40% off reads 1.0).
                    detail += f" (at most {NARROW_ROW} values per sample: the cosine its relative error {o.rel_error:.3g} admits)"
            else:
                detail = "the final model was not validated" if validation is None else "no output has a cosine"
        elif name == "max_size_mb":
            if final is not None and final.exists():
                actual = final.stat().st_size / 1e6
                detail = final.name
            else:
                detail = "no final model"
        elif name == "max_latency_ms":
            vals = [(r["p99_ms"], r["batch"]) for r in final_rows if isinstance(r.get("p99_ms"), (int, float))]
            if vals:
                actual, batch = max(vals)
                detail = f"p99 of {final.name} at batch {batch}" if final else ""
            else:
                detail = _bench_missing(bench)
        elif name == "min_speedup":
            out.append(speedup_gate(final_rows, threshold, final, _bench_missing(bench) if not rows else None))
            continue
        passed = actual is not None and (actual >= threshold if name.startswith("min_") else actual <= threshold)
        out.append(GateOutcome(name=name, threshold=threshold, actual=actual, passed=passed, detail=detail))
    return out


def _bench_missing(bench: Any) -> str:
    from onnxkit.operations.pipeline import ERROR, SKIPPED

    if bench is None:
        return "bench is disabled"
    if bench.status in (SKIPPED, ERROR):
        return f"bench {bench.status}: {bench.reason}"
    return "bench measured nothing for the final model"
