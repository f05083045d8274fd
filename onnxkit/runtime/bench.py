"""Latency benchmarks: ONNX models side by side (interleaved, so machine drift hits them
alike), optionally against the source framework model, with baselines for CI gates.

:func:`bench_models` is the library entry point (the pipeline command reuses it)."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.data import Feeds, check_feeds
from onnxkit.errors import InputError, UsageError
from onnxkit.results import Result, Table, fmt_num
from onnxkit.runtime.speedup_ci import speedup_ci

log = logging.getLogger(__name__)

BASELINE_FORMAT = "onnxkit-bench-baseline"
BASELINE_VERSION = 1
METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")
MIN_ITERATIONS = 3
MAX_ITERATIONS_FOR_DURATION = 1_000_000


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

    @classmethod
    def from_times(cls, times_ms: list[float], batch_size: int) -> LatencyStats:
        a = np.asarray(times_ms, dtype=np.float64)
        p50, p90, p95, p99 = (float(x) for x in np.percentile(a, [50, 90, 95, 99]))
        return cls(
            iterations=int(a.size), mean_ms=float(a.mean()), std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            min_ms=float(a.min()), p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, max_ms=float(a.max()),
            throughput=batch_size * 1000.0 / p50 if p50 > 0 else math.inf,
        )


@dataclass
class BenchEntry:
    name: str
    kind: str                      # "onnx", or the source model's framework ("torch", "sklearn", ...)
    batch_size: int
    stats: LatencyStats
    providers: list[str] = field(default_factory=list)
    node_providers: dict[str, int] | None = None
    io_binding: bool = False
    ratio_to_first: float | None = None     # this p50 / first ONNX model's p50 (lower is faster)
    speedup_vs_source: float | None = None  # source p50 / this p50 (above 1: ONNX is faster)
    speedup_ci95: tuple[float, float] | None = None  # bootstrap over the timing rounds (speedup_ci.py)
    is_source: bool = False        # the --vs framework model, not an ONNX model


@dataclass
class Regression:
    name: str
    batch_size: int
    metric: str
    baseline_ms: float
    current_ms: float
    change_pct: float
    regressed: bool


@dataclass
class BenchResult(Result):
    command: str = "bench"
    models: list[str] = field(default_factory=list)
    source: dict[str, Any] | None = None
    batch_sizes: list[int] = field(default_factory=list)
    warmup: int = 0
    iterations: int | None = None
    duration_s: float | None = None
    threads: int | None = None
    entries: list[BenchEntry] = field(default_factory=list)
    baseline: str | None = None
    baseline_metric: str = "p50_ms"
    max_regression_pct: float | None = None
    comparisons: list[Regression] = field(default_factory=list)
    plot: str | None = None
    saved_baseline: str | None = None

    def entry(self, name: str, batch_size: int) -> BenchEntry | None:
        return next((e for e in self.entries if e.name == name and e.batch_size == batch_size), None)

    def tables(self) -> list[Table]:
        rows = []
        for e in self.entries:
            s = e.stats
            runs_on = ", ".join(p.replace("ExecutionProvider", "") for p in e.providers) + (" +iobinding" if e.io_binding else "")
            rows.append([
                e.name + (f" ({e.kind})" if e.is_source else ""), e.batch_size,
                *(f"{v:.3f}" for v in (s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms)), f"{s.mean_ms:.3f} ± {s.std_ms:.3f}",
                f"{s.throughput:,.0f}", "-" if not e.ratio_to_first else f"{1 / e.ratio_to_first:.2f}x",
                "-" if e.speedup_vs_source is None else f"{e.speedup_vs_source:.2f}x", runs_on or "-",
            ])
        runs = f"{self.iterations} runs" if self.iterations else f"{self.duration_s:g} s"
        tables = [Table(f"Latency in ms ({runs} each after {self.warmup} warm-up, interleaved)",
                        ["model", "batch", "p50", "p90", "p95", "p99", "mean ± std", "samples/s", "speed-up vs first",
                         "speed-up vs source", "runs on"], rows)]
        if self.comparisons:
            tables.append(Table(
                f"Against baseline {self.baseline} ({self.baseline_metric}, max +{fmt_num(self.max_regression_pct)}%)",
                ["model", "batch", "baseline", "now", "change", "verdict"],
                [[c.name, c.batch_size, c.baseline_ms, c.current_ms, f"{c.change_pct:+.1f}%", "REGRESSED" if c.regressed else "ok"]
                 for c in self.comparisons],
            ))
        return tables


# ---------------------------------------------------------------- runners

class _Runner:
    """One thing to time at one batch size: ``call()`` runs it once."""

    def __init__(self, name: str, kind: str, call: Callable[[], object], providers: list[str] | None = None,
                 io_binding: bool = False, node_providers: dict[str, int] | None = None, is_source: bool = False) -> None:
        self.is_source = is_source
        self.name = name
        self.kind = kind
        self.call = call
        self.providers = providers or []
        self.io_binding = io_binding
        self.node_providers = node_providers
        self.times: list[float] = []


def _adapt_feeds(feeds: Feeds, specs: list, where: str) -> Feeds:
    """Give each model the inputs in its own float type (an fp16 model next to its fp32
    original takes float16), then check them; names must match."""
    adapted = {}
    by_name = {s.name: s for s in specs}
    for name, arr in feeds.items():
        spec = by_name.get(name)
        if spec is not None and arr.dtype.kind == "f" and spec.dtype.kind == "f" and arr.dtype != spec.dtype:
            arr = arr.astype(spec.dtype)
        adapted[name] = arr
    return check_feeds(adapted, specs, where=where)


def _source_feeds(feeds: Feeds, source) -> Feeds:
    """The same inputs keyed the way the source model names them (positional if names differ)."""
    specs = list(getattr(source, "input_specs", []) or [])
    if not specs or {s.name for s in specs} == set(feeds):
        names = {s.name: s for s in specs}
        return {k: (v.astype(names[k].dtype) if k in names and names[k].dtype.kind == "f" and v.dtype.kind == "f" else v)
                for k, v in feeds.items()}
    if len(specs) != len(feeds):
        raise InputError(
            f"the source model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}) but the ONNX model "
            f"{len(feeds)} ({', '.join(feeds)}); they cannot be timed on the same inputs",
        )
    return {s.name: v for s, v in zip(specs, feeds.values())}


def _source_call(source, feeds: Feeds) -> Callable[[], object]:
    framework = getattr(source, "framework", "")
    if framework == "torch":
        import torch

        # Eager PyTorch is timed as it is served: no autograd bookkeeping.
        def call() -> object:
            with torch.inference_mode():
                return source.predict(feeds)
        return call
    return lambda: source.predict(feeds)


def _limit_source_threads(source, threads: int) -> list[str]:
    """Give the source framework the same thread count as ONNX Runtime, so a speed-up
    compares like with like. Returns notes for frameworks that cannot be told."""
    framework = getattr(source, "framework", "")
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    elif framework == "xgboost" and hasattr(source, "booster"):
        source.booster.set_param({"nthread": threads})
    elif framework == "tensorflow":
        return ["TensorFlow's thread count is fixed once it starts; set TF_NUM_INTRAOP_THREADS to match --threads"]
    return []


def _unique_names(models: list) -> list[str]:
    names = []
    for m in models:
        p = getattr(m, "path", None) if not isinstance(m, (str, Path)) else Path(m)
        names.append(Path(p).stem if p else "model")
    if len(set(names)) < len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return names


# ---------------------------------------------------------------- the benchmark

def input_mismatch(reference: list, other: list) -> str | None:
    """Why ``other``'s inputs cannot take the feeds made for ``reference``; None when they can.
    A symbolic dimension accepts any size; two fixed ones must agree."""
    ref = {s.name: s for s in reference}
    oth = {s.name: s for s in other}
    if set(ref) != set(oth):
        return f"it takes inputs ({', '.join(oth)}), not ({', '.join(ref)})"
    for name, a in ref.items():
        b = oth[name]
        if np.dtype(a.dtype) != np.dtype(b.dtype):
            return f"input {name} is {np.dtype(b.dtype).name}, not {np.dtype(a.dtype).name}"
        if not a.shape or not b.shape:  # unknown rank (no shape recorded): let ONNX Runtime judge
            continue
        if len(a.shape) != len(b.shape) or any(isinstance(x, int) and isinstance(y, int) and x != y
                                               for x, y in zip(a.shape, b.shape)):
            return f"input {name} has shape [{','.join(map(str, b.shape))}], not [{','.join(map(str, a.shape))}]"
    return None


def bench_models(
    models: list,
    feeds_by_batch: dict[int, Feeds],
    *,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    threads: int | None = None,
    warmup: int = 5,
    iterations: int | None = 50,
    duration: float | None = None,
    source: Any = None,
    io_binding: bool | None = None,
    fallback: bool = False,
    trust: bool = False,
    names: list[str] | None = None,
) -> BenchResult:
    """Time ONNX models (paths or OnnxSessions) and optionally a loaded SourceModel on the same
    inputs, per batch size. Iterations are round-robin across all of them.

    ``providers``: aliases or ORT names, for the models given as paths (sessions keep theirs);
    ``provider_options``: {ORT provider name: {key: value}}, as from ``provider_options_for``.

    ``iterations``: timed runs per model and batch size; or ``duration``: seconds per model and
    batch size (at least 3 runs). ``io_binding``: None = on where it pays (CUDA/TensorRT)."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.runtime.providers import check_active, plan_providers
    from onnxkit.runtime.session import OnnxSession, make_session

    if not models:
        raise UsageError("give at least one ONNX model to benchmark")
    if not feeds_by_batch:
        raise UsageError("no batch sizes to benchmark")
    if duration is None and (iterations is None or iterations < 1):
        raise UsageError("--iterations must be at least 1")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be a positive number of seconds")
    if warmup < 0:
        raise UsageError("--warmup cannot be negative")
    chosen = plan_providers(providers, fallback=fallback)
    names = names or _unique_names(models)
    # Interleaved runs share the CPU: an idle ORT session's threads busy-wait after each run
    # and slow down whatever runs next (measured: PyTorch eager 10x slower on 2 cores).
    interleaved = len(models) > 1 or source is not None
    sessions: list[OnnxSession] = []
    try:
        for m in models:
            if isinstance(m, OnnxSession):
                sessions.append(m)
                continue
            load_onnx(m, load_external=False, trust=trust)  # safety and readability checks, before ORT sees it
            sessions.append(make_session(m, providers=chosen, provider_options=provider_options, threads=threads, profile=True,
                                         spinning=not interleaved))
            check_active(chosen, sessions[-1].providers, fallback=fallback)
    except BaseException:
        for s in sessions:
            s.node_providers()
        raise

    result = BenchResult(
        models=[str(getattr(s, "path", None) or n) for s, n in zip(sessions, names)], batch_sizes=sorted(feeds_by_batch),
        warmup=warmup, iterations=None if duration is not None else iterations, duration_s=duration, threads=threads,
    )
    if source is not None:
        result.source = {k: v for k, v in source.describe().items() if k != "inputs"} if hasattr(source, "describe") else {"framework": getattr(source, "framework", "")}

    if interleaved:
        result.notes.append("ONNX Runtime thread spinning is off so interleaved runs do not steal each other's CPU")
    try:
        if source is not None and threads:
            result.notes.extend(_limit_source_threads(source, threads))
        _bench_batches(result, sessions, names, feeds_by_batch, source, io_binding, provider_options, warmup, iterations, duration)
    finally:
        for s in sessions:  # ends ORT profiling (and removes its file) on every path
            s.node_providers()
    return result


def _bench_batches(result: BenchResult, sessions: list, names: list[str], feeds_by_batch: dict[int, Feeds], source: Any,
                   io_binding: bool | None, provider_options: dict | None, warmup: int, iterations: int | None,
                   duration: float | None) -> None:
    from onnxkit.runtime.iobinding import BoundRunner, device_for, device_id_of

    for batch in sorted(feeds_by_batch):
        feeds = feeds_by_batch[batch]
        runners: list[_Runner] = []
        for sess, name in zip(sessions, names):
            f = _adapt_feeds(feeds, sess.input_specs, where=f"inputs for {name}")
            sess.run(f)  # first run: also what the profile records
            nodes = sess.node_providers()
            device = device_for(sess) if io_binding is not False else None
            if io_binding and device is None:
                device = "cpu"
            if device:
                bound = BoundRunner(sess, f, device=device, device_id=device_id_of(provider_options, sess.providers[0]))
                runners.append(_Runner(name, "onnx", bound.run, sess.providers, True, nodes))
            else:
                runners.append(_Runner(name, "onnx", (lambda s=sess, f=f: s.session.run(s.output_names, f)), sess.providers, False, nodes))
        if source is not None:
            sf = _source_feeds(feeds, source)
            runners.append(_Runner(Path(str(source.path)).name, getattr(source, "framework", "") or "source",
                                   _source_call(source, sf), is_source=True))
        _time_round_robin(runners, warmup=warmup, iterations=iterations, duration=duration)
        first = None
        src_p50 = None
        times = {}
        for r in runners:
            stats = LatencyStats.from_times(r.times, batch)
            entry = BenchEntry(r.name, r.kind, batch, stats, r.providers, r.node_providers, r.io_binding, is_source=r.is_source)
            if not r.is_source:
                first = first or stats.p50_ms
                entry.ratio_to_first = stats.p50_ms / first if first else None
            else:
                src_p50, src_times = stats.p50_ms, r.times
            times[id(entry)] = r.times
            result.entries.append(entry)
        if src_p50 is not None:
            for e in result.entries:
                if e.batch_size == batch and not e.is_source and e.stats.p50_ms > 0:
                    e.speedup_vs_source = src_p50 / e.stats.p50_ms
                    if id(e) in times:
                        e.speedup_ci95 = speedup_ci(src_times, times[id(e)])
                    if e.speedup_vs_source < 1:
                        # Say it plainly (XGBoost's own predictor beats ONNX on large batches).
                        result.notes.append(
                            f"at batch {batch}, {e.name} is slower than the source framework "
                            f"({e.stats.p50_ms:.3g} ms vs {src_p50:.3g} ms p50, {e.speedup_vs_source:.2f}x)",
                        )


def _time_round_robin(runners: list[_Runner], *, warmup: int, iterations: int | None, duration: float | None) -> None:
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
                t0 = time.perf_counter_ns()
                r.call()
                r.times.append((time.perf_counter_ns() - t0) / 1e6)
            if budget is not None and i + 1 >= MIN_ITERATIONS and time.perf_counter() - started >= budget:
                break
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------- baselines

def parse_regression(text: str | float | None) -> float | None:
    """'10%', '10' or 10 -> 10.0 (percent)."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
        if not m:
            raise UsageError(f"malformed --max-regression {text!r}; expected a percentage such as 10%")
        value = float(m.group(1))
    if value < 0:
        raise UsageError("--max-regression cannot be negative")
    return value


def baseline_doc(result: BenchResult) -> dict[str, Any]:
    import platform

    import onnxruntime

    return {
        "format": BASELINE_FORMAT, "version": BASELINE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "onnxruntime": onnxruntime.__version__},
        "entries": [
            {"name": e.name, "kind": e.kind, "source": e.is_source, "batch_size": e.batch_size, "providers": e.providers,
             **{m: getattr(e.stats, m) for m in METRICS}, "throughput": e.stats.throughput}
            for e in result.entries
        ],
    }


def save_baseline(result: BenchResult, dest: str | Path) -> Path:
    from onnxkit.foundation.files import write_text_atomic

    write_text_atomic(dest, json.dumps(baseline_doc(result), indent=2) + "\n")
    result.saved_baseline = str(dest)
    return Path(dest)


def load_baseline(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a baseline file; anything malformed is exit 2 with what is wrong."""
    from onnxkit.foundation.files import preflight

    p = preflight(path, what="baseline file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"baseline file {p} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise InputError(f"{p} is not an onnxkit bench baseline (write one with --save-baseline)")
    entries = doc.get("entries")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"baseline file {p} holds no entries")
    for i, e in enumerate(entries):
        ok = isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("batch_size"), int)
        ok = ok and all(isinstance(e.get(m), (int, float)) and not isinstance(e.get(m), bool) and math.isfinite(e[m]) and e[m] > 0 for m in METRICS)
        if not ok:
            raise InputError(f"baseline file {p}: entry {i + 1} is malformed (needs name, batch_size and positive {', '.join(METRICS)})")
    return entries


def compare_baseline(result: BenchResult, baseline: str | Path, max_regression_pct: float, metric: str = "p50_ms") -> BenchResult:
    """Mark ``result`` failed (exit 1) when any entry is slower than the baseline's by more
    than ``max_regression_pct`` percent on ``metric``."""
    if metric not in METRICS:
        raise UsageError(f"unknown baseline metric {metric!r}; choose from {', '.join(m.removesuffix('_ms') for m in METRICS)}")
    entries = load_baseline(baseline)
    by_key = {(e["name"], e["batch_size"]): e for e in entries}
    result.baseline = str(baseline)
    result.baseline_metric = metric
    result.max_regression_pct = max_regression_pct
    for e in result.entries:
        base = by_key.get((e.name, e.batch_size))
        if base is None:
            result.notes.append(f"{e.name} at batch {e.batch_size} is not in the baseline; not compared")
            continue
        now = getattr(e.stats, metric)
        change = (now - base[metric]) / base[metric] * 100.0
        regressed = change > max_regression_pct
        result.comparisons.append(Regression(e.name, e.batch_size, metric, float(base[metric]), now, change, regressed))
    if not result.comparisons:
        raise InputError(
            f"nothing to compare: no model/batch size of this run is in the baseline {baseline} "
            f"(it has: {', '.join(sorted({str(k[0]) for k in by_key}))})",
        )
    bad = [c for c in result.comparisons if c.regressed]
    if bad:
        result.passed = False
        worst = max(bad, key=lambda c: c.change_pct)
        result.notes.append(
            f"{len(bad)} regression(s) over {max_regression_pct:g}%: worst {worst.name} batch {worst.batch_size} "
            f"{worst.baseline_ms:.3f} -> {worst.current_ms:.3f} ms ({worst.change_pct:+.1f}%)",
        )
    return result


# ---------------------------------------------------------------- plot

def plot_latencies(result: BenchResult, dest: str | Path) -> Path:
    """PNG bar chart of p50 latency per batch size (whisker to p99), written atomically;
    drawn by the shared report plotter."""
    from onnxkit.foundation.files import write_bytes_atomic
    from onnxkit.reports.plots import latency_plot

    png = latency_plot([(e.name + (f" ({e.kind})" if e.is_source else ""), e.batch_size, e.stats.p50_ms, e.stats.p99_ms)
                        for e in result.entries])
    if png is None:
        raise InputError("no latencies to plot")
    write_bytes_atomic(dest, png)
    result.plot = str(dest)
    return Path(dest)


__all__ = [
    "BenchEntry", "BenchResult", "LatencyStats", "Regression", "bench_models", "compare_baseline", "load_baseline",
    "parse_regression", "plot_latencies", "save_baseline", "baseline_doc",
]


# ---------------------------------------------------------------- `onnxkit bench`

def parse_batch_sizes(text: str | list[str] | None) -> list[int]:
    parts = [p for t in ([text] if isinstance(text, str) else (text or ["1"])) for p in str(t).split(",") if p.strip()]
    sizes = []
    for p in parts:
        if not p.strip().isdigit() or int(p) < 1:
            raise UsageError(f"malformed --batch-size {p.strip()!r}; expected positive integers such as 1,8,32")
        sizes.append(int(p))
    return sorted(set(sizes)) or [1]


def run_bench(
    models: list[str | Path],
    *,
    source: str | Path | None = None,
    providers: list[str] | None = None,
    provider_options: list[str] | None = None,
    fallback: bool = False,
    batch_sizes: str | list[str] | None = None,
    inputs: list[str] | None = None,
    seed: int = 0,
    warmup: int = 5,
    iterations: int | None = None,
    duration: float | None = None,
    threads: int | None = None,
    io_binding: bool | None = None,
    plot: str | Path | None = None,
    save_baseline_to: str | Path | None = None,
    baseline: str | Path | None = None,
    max_regression: str | None = None,
    metric: str = "p50",
    trust: bool = False,
    timeout: float | None = None,
) -> BenchResult:
    """Everything `onnxkit bench` does: check paths, build inputs, time, plot, gate."""
    from onnxkit.foundation.data import random_feeds
    from onnxkit.foundation.files import check_io
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.operations.quantize.target import notes_for_models
    from onnxkit.operations.run import fallback_notes
    from onnxkit.foundation.spec import merge_specs, parse_specs, specs_from_onnx
    from onnxkit.runtime.providers import parse_provider_options, plan_providers, provider_options_for

    if iterations is not None and duration is not None:
        raise UsageError("give --iterations or --duration, not both")
    if iterations is None and duration is None:
        iterations = 50
    metric_key = metric if metric.endswith("_ms") else f"{metric}_ms"
    if metric_key not in METRICS:
        raise UsageError(f"unknown --metric {metric!r}; choose from {', '.join(m.removesuffix('_ms') for m in METRICS)}")
    limit = parse_regression(max_regression)
    if baseline is None and limit is not None:
        raise UsageError("--max-regression needs --baseline FILE")
    if baseline is not None:
        limit = 10.0 if limit is None else limit
        load_baseline(baseline)  # a malformed baseline fails now, not after minutes of timing
    if plot is not None:
        if Path(plot).suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG; give a .png path, not {Path(plot).name}")
    check_io([plot, save_baseline_to], [*models, baseline, source])
    sizes = parse_batch_sizes(batch_sizes)
    chosen = plan_providers(providers, fallback=fallback)
    options = provider_options_for(chosen, parse_provider_options(provider_options, chosen))

    user_specs = parse_specs(inputs)
    first = load_onnx(models[0], load_external=False, trust=trust)
    first_specs = specs_from_onnx(first.model)
    specs = merge_specs(first_specs, user_specs)
    del first
    for m in models[1:]:  # every model is fed the first one's inputs, so they must all take them
        why = input_mismatch(first_specs, specs_from_onnx(load_onnx(m, load_external=False, trust=trust).model))
        if why:
            raise UsageError(f"{Path(m).name} cannot be timed on {Path(models[0]).name}'s inputs: {why}",
                             hint="bench compares variants of one model; time different models in separate runs")
    src = None
    if source is not None:
        from onnxkit.frameworks.base import LoadOptions
        from onnxkit.frameworks.registry import load_source

        src = load_source(source, LoadOptions(trust=trust, inputs=user_specs))
    feeds_by_batch = {b: random_feeds(specs, batch=b, seed=seed) for b in sizes}
    if not trust:  # the exact inputs of the timing loop, contained first (see contained.rehearse)
        from onnxkit.runtime.contained import rehearse

        for m in models:
            rehearse(m, feeds_by_batch, _adapt_feeds, providers=chosen, provider_options=options, threads=threads,
                     timeout_s=timeout)
    result = bench_models(
        list(models), feeds_by_batch, providers=chosen, provider_options=options, threads=threads, warmup=warmup,
        iterations=iterations, duration=duration, source=src, io_binding=io_binding, fallback=fallback, trust=trust,
    )
    result.notes.extend(fallback_notes(providers, chosen))
    result.notes.extend(notes_for_models(list(models)))  # a model made for VNNI on a CPU without it
    if plot is not None:
        plot_latencies(result, plot)
    if save_baseline_to is not None:
        save_baseline(result, save_baseline_to)
    if baseline is not None:
        compare_baseline(result, baseline, limit, metric_key)
    return result
