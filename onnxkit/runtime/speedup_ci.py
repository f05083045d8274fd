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
