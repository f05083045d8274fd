"""The timing loop and its statistics, shared by `bench`, `--auto` and the pipeline.

Runners are timed round-robin, one call of each per round, so load that comes and goes hits
every runner of a round alike. What a gate needs from such rounds is how sure a figure is:
the median's own bootstrap interval, and the machine's load before and after.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_ITERATIONS = 3
MAX_ITERATIONS_FOR_DURATION = 1_000_000
# Fewer rounds than this give an interval that says more about the resampling than the machine.
MIN_CI_ROUNDS = 5


@dataclass
class LatencyStats:
    iterations: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput: float  # samples per second at the median latency
    p50_ci95: tuple[float, float] | None = None  # bootstrap over the timing rounds
    # Median CPU time of the process per call: other processes' load does not stretch it (at one
    # thread it is the call's own work; with more, every thread's, spinning included).
    cpu_p50_ms: float | None = None

    @classmethod
    def from_times(cls, times_ms: list[float], batch_size: int, cpu_ms: list[float] | None = None) -> LatencyStats:
        a = np.asarray(times_ms, dtype=np.float64)
        p50, p90, p95, p99 = (float(x) for x in np.percentile(a, [50, 90, 95, 99]))
        return cls(
            iterations=int(a.size), mean_ms=float(a.mean()), std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            min_ms=float(a.min()), p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, max_ms=float(a.max()),
            throughput=batch_size * 1000.0 / p50 if p50 > 0 else math.inf, p50_ci95=median_ci(times_ms),
            cpu_p50_ms=float(np.median(cpu_ms)) if cpu_ms else None,
        )


def median_ci(times_ms: Sequence[float], *, level: float = 0.95, resamples: int = 2000,
              seed: int = 0) -> tuple[float, float] | None:
    """(low, high) of the median latency at ``level``, or None when too few rounds were timed.
    Seeded, so a report is reproducible from its timings."""
    a = np.asarray(times_ms, dtype=np.float64)
    if a.size < MIN_CI_ROUNDS or not np.all(np.isfinite(a)):
        return None
    idx = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    medians = np.median(a[idx], axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (runnable processes), None where the OS has none.
    Above the usable core count, timings are shared with other work and spread."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class Runner:
    """One thing to time at one batch size: ``call()`` runs it once."""

    def __init__(self, name: str, kind: str, call: Callable[[], object], providers: list[str] | None = None,
                 io_binding: bool = False, node_providers: dict[str, int] | None = None, is_source: bool = False,
                 own_times: Callable[[], tuple[float, float] | None] | None = None) -> None:
        self.is_source = is_source
        # For a call that runs in another process: (wall ms, CPU ms) it measured there around
        # the work itself. This process's clocks would count the hand-over as work (wall) and
        # see none of the other process's CPU time.
        self.own_times = own_times
        self.overhead_ms: list[float] = []  # wall time per call outside the measured work
        self.name = name
        self.kind = kind
        self.call = call
        self.providers = providers or []
        self.io_binding = io_binding
        self.node_providers = node_providers
        self.times: list[float] = []
        self.cpu_times: list[float] = []


def time_round_robin(runners: list[Runner], *, warmup: int, iterations: int | None, duration: float | None) -> None:
    """Warm up, then time one call of each runner per round; the starting runner rotates
    so none is always first after, e.g., a garbage collection."""
    import gc

    for _ in range(warmup):
        for r in runners:
            r.call()
    k = len(runners)
    budget = duration * k if duration is not None else None
    limit = iterations if duration is None else MAX_ITERATIONS_FOR_DURATION
    # Collections during timing add noise that belongs to neither side.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        for i in range(limit):
            for j in range(k):
                r = runners[(i + j) % k]
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                r.call()
                wall, cpu = (time.perf_counter_ns() - t0) / 1e6, (time.process_time_ns() - c0) / 1e6
                own = r.own_times() if r.own_times is not None else None
                if own is not None:
                    r.overhead_ms.append(max(wall - own[0], 0.0))
                    wall, cpu = own
                r.times.append(wall)
                r.cpu_times.append(cpu)
            if budget is not None and i + 1 >= MIN_ITERATIONS and time.perf_counter() - started >= budget:
                break
    finally:
        if was_enabled:
            gc.enable()
