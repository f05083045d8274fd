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
    as the source at every batch size, judged on the interval (onnxkit.core.gates). The
    deciding batch size is recorded: the worst status, then the largest batch."""
    from onnxkit.core.gates import FAIL, INCONCLUSIVE, PASS, speedup_status
    from onnxkit.errors import UsageError

    onnx = [e for e in result.entries if not e.is_source]
    if not onnx or not any(e.is_source for e in result.entries):
        raise UsageError("--min-speedup needs --vs SOURCE: a speed-up is measured against the source framework")
    last = onnx[-1].name
    rank = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2}
    judged = []
    for e in onnx:
        if e.name == last:
            status, reason = speedup_status(e.speedup_vs_source, e.speedup_ci95, threshold, e.speedup_cpu_ci95)
            judged.append((rank[status], -e.batch_size, status, reason, e))
    _, _, status, reason, e = min(judged, key=lambda j: (j[0], j[1]))
    result.min_speedup = threshold
    result.speedup_gate = {"status": status, "reason": reason, "model": last, "batch": e.batch_size,
                           "speedup": e.speedup_vs_source, "ci95": list(e.speedup_ci95) if e.speedup_ci95 else None,
                           "threshold": threshold}
    if status != PASS:
        result.passed = False
    result.notes.append(f"speed-up gate {status}: {last} at batch {e.batch_size}, {reason}")
