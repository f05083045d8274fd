"""How sure a measured speed-up is: a bootstrap confidence interval over timing rounds.

The bench times its runners round-robin, one call of each per round, so the i-th time of
the source and the i-th time of a model share whatever the machine was doing then.
Resampling whole rounds keeps that pairing; the statistic is the one the bench reports,
the ratio of the medians.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Fewer rounds than this give an interval that says more about the resampling than the machine.
MIN_ROUNDS = 5


def speedup_ci(source_ms: Sequence[float], model_ms: Sequence[float], *, level: float = 0.95,
               resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """(low, high) of median(source) / median(model) at ``level``, or None when too few
    rounds were timed. Seeded, so a report is reproducible from its timings."""
    n = min(len(source_ms), len(model_ms))
    if n < MIN_ROUNDS:
        return None
    src = np.asarray(source_ms[:n], dtype=np.float64)
    mod = np.asarray(model_ms[:n], dtype=np.float64)
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(mod)) and np.all(mod > 0)):
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    ratios = np.median(src[idx], axis=1) / np.median(mod[idx], axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def gate_bench(result, threshold: float) -> None:
    """``bench --min-speedup``: the last ONNX model given must be ``threshold`` times as fast
    as the source at every batch size, judged on the interval (onnxkit.operations.gates). The
    deciding batch size is recorded: the worst status, then the largest batch."""
    from onnxkit.errors import UsageError

    onnx = [e for e in result.entries if not e.is_source]
    if not onnx or not any(e.is_source for e in result.entries):
        raise UsageError("--min-speedup needs --vs SOURCE: a speed-up is measured against the source framework")
    last = onnx[-1].name
    rank = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2}
    judged = []
    for e in onnx:
        if e.name == last:
            status, reason = speedup_status(e.speedup_vs_source, e.speedup_ci95, threshold, e.speedup_cpu_ci95,
                                            cpu_decides=cpu_time_is_the_work(result, e))
            judged.append((rank[status], -e.batch_size, status, reason, e))
    _, _, status, reason, e = min(judged, key=lambda j: (j[0], j[1]))
    result.min_speedup = threshold
    result.speedup_gate = {"status": status, "reason": reason, "model": last, "batch": e.batch_size,
                           "speedup": e.speedup_vs_source, "ci95": list(e.speedup_ci95) if e.speedup_ci95 else None,
                           "threshold": threshold}
    if status != PASS:
        result.passed = False
    result.notes.append(f"speed-up gate {status}: {last} at batch {e.batch_size}, {reason}")


def cpu_time_is_the_work(result, e) -> bool:
    """Whether both sides' CPU time is the whole of their work: one thread and CPU kernels only.
    An untrusted ONNX source runs in a contained worker, which measures its own CPU time around
    each session run (bench_source.py), so it is judged on the same grounds as one in-process."""
    framework = (getattr(result, "source", None) or {}).get("framework", "")
    return (getattr(result, "threads", None) == 1 and framework != ""
            and all(p == "CPUExecutionProvider" for p in (e.providers or ["CPUExecutionProvider"])))


PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

WHAT_TO_CHANGE = ("time more rounds (more iterations or a longer --duration), on a quieter machine "
                  "(load average below the core count), or with fewer threads")


def speedup_status(actual: float | None, ci95: Sequence[float] | None, threshold: float,
                   cpu_ci95: Sequence[float] | None = None, *, cpu_decides: bool = False) -> tuple[str, str]:
    """(status, reason) of a minimum speed-up gate. Without an interval (too few rounds to
    resample) the gate cannot say how sure it is, and passes nothing.

    ``cpu_ci95``: the interval of the same ratio on CPU time (timed at one thread). A busy
    machine preempts a long call many times and a short one rarely, which inflates a wall-clock
    speed-up (measured here: 20-40x wall clock, 6-7x CPU time, same runs); the gate then passes
    only when both intervals clear the threshold and fails only when both are below it.

    ``cpu_decides``: both sides run in this process on one thread of CPU kernels, so a call's CPU
    time is its work and the wall clock adds only waiting for a core. When the two intervals
    disagree, the CPU-time one decides: on a loaded machine the wall-clock interval was
    confidently wrong (scripts/bench/gate_stability.py: 99-219x wall clock, 11-16x CPU time, a
    true 13x), so "inconclusive" would be the answer at every threshold in between."""
    if cpu_ci95 is not None and ci95 is not None and len(cpu_ci95) == 2 and len(ci95) == 2:
        wall, cpu = speedup_status(actual, ci95, threshold), speedup_status(actual, cpu_ci95, threshold)
        if wall[0] == cpu[0]:
            return wall[0], wall[1] + f" (on CPU time [{cpu_ci95[0]:.2f}x, {cpu_ci95[1]:.2f}x] too)"
        if cpu_decides:
            return cpu[0], (f"judged on CPU time: {cpu[1]}; the wall-clock interval [{ci95[0]:.2f}x, {ci95[1]:.2f}x] "
                            "disagrees because other load stretched the calls (one thread, same process: a call's "
                            "CPU time is its own work)")
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
