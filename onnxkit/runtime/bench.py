"""Latency benchmarks: ONNX models side by side (interleaved, so machine drift hits them
alike), optionally against the source framework model, with baselines for CI gates.

:func:`bench_models` is the library entry point (the pipeline command reuses it)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.data import Feeds, check_feeds
from onnxkit.errors import InputError, UsageError
from onnxkit.results import Result, Table, fmt_num
from onnxkit.runtime.bench_source import handover_note, source_runner
from onnxkit.runtime.bench_source import limit_source_threads as _limit_source_threads
from onnxkit.runtime.bench_source import source_feeds as _source_feeds
from onnxkit.runtime.bench_source import source_name as _source_name
from onnxkit.runtime.speedup_ci import speedup_ci
from onnxkit.runtime.timing import MAX_ITERATIONS_FOR_DURATION, MIN_ITERATIONS, LatencyStats, load_average
from onnxkit.runtime.timing import Runner as _Runner
from onnxkit.runtime.timing import time_round_robin as _time_round_robin

log = logging.getLogger(__name__)

BASELINE_FORMAT = "onnxkit-bench-baseline"
BASELINE_VERSION = 1
METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")


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
    speedup_cpu: float | None = None  # the same ratio on median process CPU time (timing.LatencyStats)
    speedup_cpu_ci95: tuple[float, float] | None = None  # its interval; only at 1 thread, where CPU time is the call's work
    is_source: bool = False        # the --vs framework model, not an ONNX model
    # A contained source's median wall time per call outside its timed session run (the pipe
    # round trip to its worker); not part of its times, which are measured in the worker.
    handover_p50_ms: float | None = None
    precision: str | None = None   # OpenVINO's inference precision (bench --provider openvino); None: ONNX Runtime


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
    threads: int | None = None     # intra-op threads of every timed side; None: ONNX Runtime's default
    threads_from: str = "ONNX Runtime's default"  # "--threads", "measured" or ONNX Runtime's default
    thread_probe: dict[str, dict[int, float]] | None = None  # name -> {threads: p50 ms} of the brief probe
    recommended_threads: dict[str, int] = field(default_factory=dict)  # name -> its fastest measured count
    spin_policy: str = ""
    load_before: list[float] | None = None  # 1/5/15 min load averages around the timing
    load_after: list[float] | None = None
    min_speedup: float | None = None
    speedup_gate: dict[str, Any] | None = None  # status, reason, model, batch, speedup, ci95
    entries: list[BenchEntry] = field(default_factory=list)
    baseline: str | None = None
    baseline_metric: str = "p50_ms"
    max_regression_pct: float | None = None
    comparisons: list[Regression] = field(default_factory=list)
    plot: str | None = None
    saved_baseline: str | None = None

    @property
    def verdict(self) -> str:
        if self.speedup_gate and self.speedup_gate.get("status") == "inconclusive" and self.passed is False:
            return "INCONCLUSIVE"
        return super().verdict

    def entry(self, name: str, batch_size: int) -> BenchEntry | None:
        return next((e for e in self.entries if e.name == name and e.batch_size == batch_size), None)

    def tables(self) -> list[Table]:
        rows = []
        for e in self.entries:
            s = e.stats
            runs_on = ", ".join(p.replace("ExecutionProvider", "") for p in e.providers) + (" +iobinding" if e.io_binding else "")
            rows.append([
                e.name + (f" ({e.kind})" if e.is_source else ""), e.batch_size,
                f"{s.p50_ms:.3f}", "-" if not s.p50_ci95 else f"{s.p50_ci95[0]:.3f}-{s.p50_ci95[1]:.3f}",
                *(f"{v:.3f}" for v in (s.p90_ms, s.p95_ms, s.p99_ms)),
                f"{s.throughput:,.0f}", "-" if not e.ratio_to_first else f"{1 / e.ratio_to_first:.2f}x",
                _speedup_text(e), runs_on or "-",
            ])
        runs = f"{self.iterations} runs" if self.iterations else f"{self.duration_s:g} s"
        tables = [Table(f"Latency in ms ({runs} each after {self.warmup} warm-up, interleaved; {self.conditions()})",
                        ["model", "batch", "p50", "p50 95% CI", "p90", "p95", "p99", "samples/s",
                         "speed-up vs first", "speed-up vs source", "runs on"], rows)]
        if self.thread_probe:
            counts = sorted({c for by in self.thread_probe.values() for c in by})
            tables.append(Table("p50 ms by intra-op thread count (brief probe; the fastest is recommended)",
                                ["model", *(f"{c} thread{'s' * (c > 1)}" for c in counts), "recommended"],
                                [[n, *(fmt_num(by.get(c)) for c in counts), self.recommended_threads.get(n, "-")]
                                 for n, by in self.thread_probe.items()]))
        if self.comparisons:
            tables.append(Table(
                f"Against baseline {self.baseline} ({self.baseline_metric}, max +{fmt_num(self.max_regression_pct)}%)",
                ["model", "batch", "baseline", "now", "change", "verdict"],
                [[c.name, c.batch_size, c.baseline_ms, c.current_ms, f"{c.change_pct:+.1f}%", "REGRESSED" if c.regressed else "ok"]
                 for c in self.comparisons],
            ))
        if self.speedup_gate:
            g = self.speedup_gate
            tables.append(Table("Speed-up gate", ["model", "batch", "speed-up", "95% CI", "threshold", "status", "reason"],
                                [[g["model"], g["batch"], _speedup_text_raw(g["speedup"]),
                                  "-" if not g["ci95"] else f"{g['ci95'][0]:.2f}-{g['ci95'][1]:.2f}x",
                                  f"{g['threshold']:g}x", g["status"].upper() if g["status"] != "pass" else "pass",
                                  g["reason"]]]))
        return tables

    def conditions(self) -> str:
        """Threads, spin policy and load: what a reader needs to trust or doubt the figures."""
        threads = f"{self.threads} intra-op thread{'s' * ((self.threads or 0) > 1)} ({self.threads_from})" if self.threads \
            else f"threads: {self.threads_from}"
        load = ""
        if self.load_before and self.load_after:
            load = f"; load average {self.load_before[0]:g} before, {self.load_after[0]:g} after"
        return threads + (f"; {self.spin_policy}" if self.spin_policy else "") + load


def _speedup_text_raw(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _speedup_text(e: BenchEntry) -> str:
    text = _speedup_text_raw(e.speedup_vs_source)
    if e.speedup_vs_source is not None and e.speedup_ci95:
        text += f" ({e.speedup_ci95[0]:.2f}-{e.speedup_ci95[1]:.2f}x)"
    return text


# ---------------------------------------------------------------- runners

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


def _check_plan(models: list, feeds_by_batch: dict, *, iterations: int | None, duration: float | None,
                warmup: int) -> None:
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


def bench_models(
    models: list,
    feeds_by_batch: dict[int, Feeds],
    *,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    threads: int | str | None = None,
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
    batch size (at least 3 runs). ``io_binding``: None = on where it pays (CUDA/TensorRT).

    ``threads``: intra-op threads of every ONNX model and of the source alike; ``"auto"`` (and
    None when a source is timed) measures 1, 2, 4, ... usable cores first and times at the count
    that suits all of them (threads_probe.py)."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.runtime.providers import check_active, plan_providers
    from onnxkit.runtime.session import OnnxSession, make_session

    _check_plan(models, feeds_by_batch, iterations=iterations, duration=duration, warmup=warmup)
    chosen = plan_providers(providers, fallback=fallback)
    names = names or _unique_names(models)
    load_before = load_average()
    probe = None
    threads_from = "--threads" if isinstance(threads, int) else "ONNX Runtime's default"
    paths_only = not any(isinstance(m, OnnxSession) for m in models)
    if (threads == "auto" or (threads is None and source is not None)) and paths_only:
        from onnxkit.runtime.threads_probe import probe_threads

        for m in models:
            load_onnx(m, load_external=False, trust=trust)
        probe = probe_threads(list(models), names, feeds_by_batch[max(feeds_by_batch)], source=source,
                              source_name=_source_name(source), providers=chosen, provider_options=provider_options)
        threads, threads_from = probe.common, "measured"
    elif not isinstance(threads, int):
        threads = None
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
        threads_from=threads_from, load_before=load_before,
    )
    if probe is not None:
        result.thread_probe, result.recommended_threads = probe.p50_ms, probe.best
        result.notes.append(probe.summary())
    if source is not None:
        result.source = _describe_source(source)

    result.spin_policy = _spin_policy(source, interleaved, threads)
    undo: list = []
    try:
        if source is not None:
            result.notes.extend(_limit_source_threads(source, threads, undo))
            result.source = _describe_source(source)  # with the threads it now runs at, where it says
        _bench_batches(result, sessions, names, feeds_by_batch, source, io_binding, provider_options, warmup, iterations, duration)
    finally:
        for restore in reversed(undo):
            restore()
        for s in sessions:  # ends ORT profiling (and removes its file) on every path
            s.node_providers()
    result.load_after = load_average()
    _note_busy(result)
    return result


def _describe_source(source: Any) -> dict[str, Any]:
    if not hasattr(source, "describe"):
        return {"framework": getattr(source, "framework", "")}
    return {k: v for k, v in source.describe().items() if k != "inputs"}


def _note_stretch(result: BenchResult, e: BenchEntry) -> None:
    """A busy machine stretches a long call (preempted many times) more than a short one (done
    within one time slice), which inflates a wall-clock speed-up; CPU time is not stretched."""
    wall, cpu = e.speedup_vs_source, e.speedup_cpu
    if wall and cpu and result.threads == 1 and max(wall / cpu, cpu / wall) > 1.5:
        result.notes.append(
            f"at batch {e.batch_size}, {e.name} is {wall:.2f}x the source in wall-clock time but {cpu:.2f}x in CPU time: "
            "other load on this machine stretched the slower side's calls more; trust the CPU-time ratio")


def _note_busy(result: BenchResult) -> None:
    from onnxkit.foundation.hostfacts import host_facts

    cores = host_facts().usable_cores
    loads = [x[0] for x in (result.load_before, result.load_after) if x]
    if cores and loads and max(loads) > cores:
        result.notes.append(f"the machine was busy (load average up to {max(loads):g} on {cores} usable cores): "
                            "timings spread, read the intervals")


def _spin_policy(source: Any, interleaved: bool, threads: int | None) -> str:
    """What idle worker threads do between runs, for each side: a spinning side steals the
    CPU from the other in interleaved timing, so both are said."""
    ort = ("ONNX Runtime threads do not spin (session.intra_op.allow_spinning=0)" if interleaved
           else "ONNX Runtime threads spin between runs (its default)")
    if getattr(source, "framework", "") == "onnx":
        where = "in its contained worker" if getattr(source, "contained", False) else "in this process"
        return f"{ort}, the ONNX source's ({where}) alike"
    if source is None or getattr(source, "framework", "") != "torch":
        return ort
    if threads == 1:
        return ort + "; PyTorch at 1 thread has no worker threads to spin"
    policy = os.environ.get("OMP_WAIT_POLICY")
    torch_side = (f"PyTorch OpenMP OMP_WAIT_POLICY={policy}" if policy
                  else "PyTorch OpenMP threads spin briefly before sleeping (OMP_WAIT_POLICY unset)")
    return f"{ort}; {torch_side}"


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
            runners.append(source_runner(source, sf))
        _time_round_robin(runners, warmup=warmup, iterations=iterations, duration=duration)
        first = None
        src_p50 = None
        times = {}
        cpu_times: dict[int, list[float]] = {}
        for r in runners:
            stats = LatencyStats.from_times(r.times, batch, r.cpu_times)
            entry = BenchEntry(r.name, r.kind, batch, stats, r.providers, r.node_providers, r.io_binding, is_source=r.is_source)
            if not r.is_source:
                first = first or stats.p50_ms
                entry.ratio_to_first = stats.p50_ms / first if first else None
            else:
                src_p50, src_times, src_cpu, src_cpu_times = stats.p50_ms, r.times, stats.cpu_p50_ms, r.cpu_times
                entry.handover_p50_ms, notes = handover_note(source, r.overhead_ms, batch)
                result.notes.extend(notes)
            times[id(entry)] = r.times
            cpu_times[id(entry)] = r.cpu_times
            result.entries.append(entry)
        if src_p50 is not None:
            for e in result.entries:
                if e.batch_size == batch and not e.is_source and e.stats.p50_ms > 0:
                    e.speedup_vs_source = src_p50 / e.stats.p50_ms
                    if id(e) in times:
                        e.speedup_ci95 = speedup_ci(src_times, times[id(e)])
                    if src_cpu and e.stats.cpu_p50_ms:
                        e.speedup_cpu = src_cpu / e.stats.cpu_p50_ms
                        if result.threads == 1 and id(e) in cpu_times:
                            e.speedup_cpu_ci95 = speedup_ci(src_cpu_times, cpu_times[id(e)])
                        _note_stretch(result, e)
                    if e.speedup_vs_source < 1:
                        # Say it plainly (XGBoost's own predictor beats ONNX on large batches).
                        result.notes.append(
                            f"at batch {batch}, {e.name} is slower than the source framework "
                            f"({e.stats.p50_ms:.3g} ms vs {src_p50:.3g} ms p50, {e.speedup_vs_source:.2f}x)",
                        )


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


__all__ = [
    "BenchEntry", "BenchResult", "LatencyStats", "Regression", "bench_models", "compare_baseline", "load_baseline",
    "parse_regression", "save_baseline", "baseline_doc", "MIN_ITERATIONS", "MAX_ITERATIONS_FOR_DURATION",
]
