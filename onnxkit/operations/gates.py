"""Gates on timed figures: a speed-up passes only when its interval clears the threshold.

A single ratio of medians from a loaded machine can land anywhere (the same CNN measured
5.6x and 1546x in two runs), so a speed-up gate reads the bootstrap interval of that ratio:
the low end at or above the threshold passes, the high end below it fails, and an interval
that straddles it is *inconclusive*, which exits 1 like a failure but says what to change.
"""

from __future__ import annotations

from onnxkit.runtime.speedup_ci import FAIL, INCONCLUSIVE, PASS, WHAT_TO_CHANGE, speedup_status, worst_status  # noqa: F401


def speedup_gate(final_rows: list[dict], threshold: float, final_model, missing: str | None):
    """The pipeline's ``min_speedup`` gate on the bench step's rows of the final model (see
    pipeline.bench_rows), judged at the largest batch size, where throughput matters and
    timer noise matters least. ``missing``: why nothing was timed, when bench did not run."""
    from onnxkit.operations.pipeline import GateOutcome

    vals = [r for r in final_rows if isinstance(r.get("speedup"), (int, float))]
    if not vals:
        detail = missing or "the source framework was not timed (bench.vs_source)"
        return GateOutcome(name="min_speedup", threshold=threshold, actual=None, passed=False, detail=detail, status=FAIL)
    row = max(vals, key=lambda r: r["batch"])
    ci = row.get("speedup_ci95")
    status, reason = speedup_status(row["speedup"], ci, threshold, row.get("speedup_cpu_ci95"))
    where = f"{final_model.name} vs source, p50 at batch {row['batch']}" if final_model is not None else f"batch {row['batch']}"
    return GateOutcome(name="min_speedup", threshold=threshold, actual=row["speedup"], passed=status == PASS,
                       detail=f"{where}; {reason}", status=status, ci95=list(ci) if ci else None)
