"""The intra-op thread count, measured rather than assumed.

On a 2-vCPU machine shared with other work, PyTorch and ONNX Runtime both ran MiniLM 2-3x
slower with 2 threads than with 1, while an idle many-core server gains from every core: no
fixed count is right everywhere. :func:`probe_threads` times each model (and the source
framework, at the same count) briefly at 1, 2, 4, ... up to the usable cores, interleaved,
and says which count is fastest for each and for all of them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PROBE_WARMUP = 2
PROBE_ROUNDS = 7


@dataclass
class ThreadProbe:
    counts: list[int]
    p50_ms: dict[str, dict[int, float]] = field(default_factory=dict)  # name -> {threads: p50}
    best: dict[str, int] = field(default_factory=dict)                 # name -> its fastest count
    common: int = 1  # the count that suits all of them together (geometric mean of p50s)

    def summary(self) -> str:
        per = ", ".join(f"{n} {self.best[n]}" for n in self.best)
        return f"threads measured at {'/'.join(map(str, self.counts))}: fastest {per}; all timed at {self.common}"


def candidate_counts(usable: int | None) -> list[int]:
    """1, 2, 4, ... and the usable core count itself."""
    n = max(1, usable or 1)
    counts, c = [], 1
    while c < n:
        counts.append(c)
        c *= 2
    return [*counts, n]


def usable_cores() -> int:
    from onnxkit.foundation.hostfacts import host_facts

    return host_facts().usable_cores or 1


def probe_threads(models: list, names: list[str], feeds: dict, *, source: Any = None, source_name: str = "",
                  providers: list[str] | None = None, provider_options: dict | None = None,
                  counts: list[int] | None = None) -> ThreadProbe:
    """Time every model (paths) and the source at each thread count, a few interleaved rounds
    each, on ``feeds`` (one batch size). ONNX Runtime sessions do not spin, as in the bench."""
    from onnxkit.runtime.bench import _source_feeds

    probe = ThreadProbe(counts=list(counts or candidate_counts(usable_cores())))
    src_feeds = _source_feeds(feeds, source) if source is not None else None
    undo: list = []
    try:
        _time_counts(probe, models, names, feeds, source, source_name, src_feeds, providers, provider_options, undo)
    finally:
        for restore in reversed(undo):
            restore()
    for name, by_count in probe.p50_ms.items():
        probe.best[name] = min(by_count, key=lambda c: (by_count[c], c))

    def together(c: int) -> float:
        return sum(math.log(max(by[c], 1e-9)) for by in probe.p50_ms.values())
    probe.common = min(probe.counts, key=lambda c: (together(c), c))
    return probe


def _time_counts(probe: ThreadProbe, models: list, names: list[str], feeds: dict, source: Any, source_name: str,
                 src_feeds: dict | None, providers: list[str] | None, provider_options: dict | None, undo: list) -> None:
    from onnxkit.runtime.bench import _adapt_feeds, _limit_source_threads
    from onnxkit.runtime.bench_source import source_runner
    from onnxkit.runtime.session import make_session
    from onnxkit.runtime.timing import Runner, time_round_robin

    for count in probe.counts:
        runners = []
        for m, name in zip(models, names):
            sess = make_session(m, providers=providers, provider_options=provider_options, threads=count, spinning=False)
            f = _adapt_feeds(feeds, sess.input_specs, where=f"inputs for {name}")
            runners.append(Runner(name, "onnx", (lambda s=sess, f=f: s.session.run(s.output_names, f))))
        if source is not None:
            # Only the first count's undo restores what was there before the probe.
            _limit_source_threads(source, count, undo if not undo else [])
            runners.append(source_runner(source, src_feeds, source_name))  # a contained one timed in its worker
        time_round_robin(runners, warmup=PROBE_WARMUP, iterations=PROBE_ROUNDS, duration=None)
        for r in runners:
            probe.p50_ms.setdefault(r.name, {})[count] = sorted(r.times)[len(r.times) // 2]
