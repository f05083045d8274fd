"""Gates on timed figures: a speed-up passes only when its interval clears the threshold.

A single ratio of medians from a loaded machine can land anywhere (the same CNN measured
5.6x and 1546x in two runs), so a speed-up gate reads the bootstrap interval of that ratio:
the low end at or above the threshold passes, the high end below it fails, and an interval
that straddles it is *inconclusive*, which exits 1 like a failure but says what to change.
"""

from __future__ import annotations

from collections.abc import Sequence

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

WHAT_TO_CHANGE = ("time more rounds (more iterations or a longer --duration), on a quieter machine "
                  "(load average below the core count), or with fewer threads")


def speedup_status(actual: float | None, ci95: Sequence[float] | None, threshold: float,
                   cpu_ci95: Sequence[float] | None = None) -> tuple[str, str]:
    """(status, reason) of a minimum speed-up gate. Without an interval (too few rounds to
    resample) the gate cannot say how sure it is, and passes nothing.

    ``cpu_ci95``: the interval of the same ratio on CPU time (timed at one thread). A busy
    machine preempts a long call many times and a short one rarely, which inflates a wall-clock
    speed-up (measured here: 20-40x wall clock, 6-7x CPU time, same runs); the gate then passes
    only when both intervals clear the threshold and fails only when both are below it."""
    if cpu_ci95 is not None and ci95 is not None and len(cpu_ci95) == 2 and len(ci95) == 2:
        wall, cpu = speedup_status(actual, ci95, threshold), speedup_status(actual, cpu_ci95, threshold)
        if wall[0] == cpu[0]:
            return wall[0], wall[1] + f" (on CPU time [{cpu_ci95[0]:.2f}x, {cpu_ci95[1]:.2f}x] too)"
        return INCONCLUSIVE, (f"wall-clock 95% interval [{ci95[0]:.2f}x, {ci95[1]:.2f}x] and CPU-time interval "
                              f"[{cpu_ci95[0]:.2f}x, {cpu_ci95[1]:.2f}x] fall on different sides of {threshold:g}x: "
                              f"other load stretched the calls; {WHAT_TO_CHANGE}")
    if actual is None:
        return FAIL, "not measured"
    if ci95 is None or len(ci95) != 2:
        return INCONCLUSIVE, (f"speed-up {actual:.2f}x has no confidence interval (fewer than 5 timing rounds); "
                              "time at least 5 rounds")
    low, high = float(ci95[0]), float(ci95[1])
    interval = f"95% interval [{low:.2f}x, {high:.2f}x]"
    if low >= threshold:
        return PASS, f"{interval} is at or above {threshold:g}x"
    if high < threshold:
        return FAIL, f"{interval} is below {threshold:g}x"
    return INCONCLUSIVE, f"{interval} straddles the threshold {threshold:g}x; {WHAT_TO_CHANGE}"


def worst_status(statuses: Sequence[str]) -> str:
    """One verdict for several gated figures: any failure fails, else any doubt is inconclusive."""
    if FAIL in statuses:
        return FAIL
    if INCONCLUSIVE in statuses:
        return INCONCLUSIVE
    return PASS


def speedup_gate(final_rows: list[dict], threshold: float, final_model, missing: str | None):
    """The pipeline's ``min_speedup`` gate on the bench step's rows of the final model (see
    pipeline.bench_rows), judged at the largest batch size, where throughput matters and
    timer noise matters least. ``missing``: why nothing was timed, when bench did not run."""
    from onnxkit.core.pipeline import GateOutcome

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
