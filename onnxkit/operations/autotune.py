"""Automatic choice of the fastest valid variant: ``onnxkit optimize --auto`` and
``onnxkit quantize --mode auto`` (and the pipeline's default).

A small, fixed set of sensible candidates is built with the ordinary ``optimize_model`` /
``quantize_model`` in a work folder beside the output; each is checked against the input
model (fp32 tolerance for optimize, the quantize accuracy budget for quantize); then every
valid candidate and the input itself are timed together, interleaved, on this machine. The
fastest at the deciding batch size (the largest asked for) wins. When several finish within
a few percent of each other a run-off re-times just those, with more iterations, because a
single noisy round on a shared machine otherwise decides between near-equals at random.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.foundation.files import check_output_path
from onnxkit.errors import ConversionError, OnnxkitError, UsageError
from onnxkit.results import Result, Table, fmt_bytes, fmt_num
from onnxkit.operations.autotune_text import runoff_text, settings_text

log = logging.getLogger(__name__)

INPUT = "input"
# Finalists: candidates whose p50 at the deciding batch is within this share of the best.
# Wide enough that timer noise on a busy machine rarely leaves the true best out.
RUNOFF_WINDOW = 0.20
RUNOFF_ROUNDS = 3
DEFAULT_ITERATIONS = 30
DEFAULT_WARMUP = 3

OK, INVALID, FAILED, DUPLICATE, NOOP = "ok", "out of budget", "failed", "duplicate", "no-op"
NOT_FOR_TARGET = "not for the target"


@dataclass
class Candidate:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    size: int | None = None
    status: str = OK
    reason: str = ""
    error: float | None = None          # the accuracy number the budget applies to (lower is better)
    cosine: float | None = None
    max_abs: float | None = None
    within_budget: bool | None = None
    excluded: int = 0                   # nodes kept in float to meet the budget (quantize)
    p50_ms: dict[int, float] = field(default_factory=dict)
    runoff_ms: float | None = None      # median p50 at the deciding batch over the run-off rounds
    runoff_ratio: float | None = None   # median over run-off rounds of p50 / that round's best: decides
    speedup_vs_input: dict[int, float] = field(default_factory=dict)
    speedup_vs_source: dict[int, float] = field(default_factory=dict)
    is_input: bool = False
    same_as: str | None = None
    chosen: bool = False

    @property
    def eligible(self) -> bool:
        return self.status == OK and self.within_budget is not False


@dataclass
class AutoResult(Result):
    model: str = ""
    output: str | None = None
    stage: str = ""                     # optimize | quantize
    batch_sizes: list[int] = field(default_factory=list)
    decide_batch: int = 0
    iterations: int = 0
    warmup: int = 0
    runoff: list[str] = field(default_factory=list)
    metric: str = ""
    budget: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None
    chosen_is_input: bool = False
    source: dict[str, Any] | None = None
    source_p50_ms: dict[int, float] = field(default_factory=dict)
    threads: int | None = None          # intra-op threads every candidate (and the source) was timed at
    threads_from: str = ""              # --threads, or measured
    recommended_threads: dict[str, int] = field(default_factory=dict)  # candidate -> its fastest measured count

    def candidate(self, name: str) -> Candidate | None:
        return next((c for c in self.candidates if c.name == name), None)

    def tables(self) -> list[Table]:
        cols = ["candidate", "settings", "size"] + [f"p50 ms @{b}" for b in self.batch_sizes]
        # Both are speed-ups (their p50 / this p50, above 1 is faster), as in `bench`.
        cols += [f"speed-up vs input @{self.decide_batch}"]
        if self.source_p50_ms:
            cols += [f"speed-up vs source @{self.decide_batch}"]
        cols += ["run-off ms" if self.runoff else None, self.metric or "accuracy", "within budget", "status", "chosen"]
        cols = [c for c in cols if c is not None]
        rows = []
        for c in self.candidates:
            settings = settings_text(c.settings)
            row = [c.name, settings, fmt_bytes(c.size)]
            row += [fmt_num(c.p50_ms.get(b)) for b in self.batch_sizes]
            s = c.speedup_vs_input.get(self.decide_batch)
            row.append(f"{s:.2f}x" if s else "-")
            if self.source_p50_ms:
                s = c.speedup_vs_source.get(self.decide_batch)
                row.append(f"{s:.2f}x" if s else "-")
            if self.runoff:
                row.append(runoff_text(c.runoff_ms, c.runoff_ratio))
            row += [fmt_num(c.error), fmt_num(c.within_budget),
                    c.status + (f": {c.reason}" if c.reason else ""), "<- chosen" if c.chosen else ""]
            rows.append(row)
        if self.source_p50_ms:
            src = self.source or {}
            row = [f"source ({src.get('framework', '?')})", "-", "-"] + [fmt_num(self.source_p50_ms.get(b)) for b in self.batch_sizes]
            row += ["-", "1.00x"] + (["-"] if self.runoff else []) + ["-", "-", "reference", ""]
            rows.append(row)
        runoff = f"; run-off of {len(self.runoff)} near-best, {RUNOFF_ROUNDS} rounds" if self.runoff else ""
        head = (f"{self.stage} --auto {Path(self.model).name}: {len(self.candidates)} candidates, decided on p50 at batch "
                f"{self.decide_batch} ({self.iterations} interleaved runs each{runoff}"
                f"{f', {self.threads} threads ({self.threads_from})' if self.threads else ''}); budget: {self.budget}")
        return [Table(head, cols, rows)]


# ---------------------------------------------------------------- helpers


def _digest(path: str | Path) -> str:
    # Identical graphs need timing once: the default and aggressive presets often agree on
    # small CNNs, and timing both would only add noise to the choice.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _batch_plan(specs: list, batch_sizes: tuple[int, ...] | list[int], decide: int | None, notes: list[str]) -> tuple[list[int], int]:
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise UsageError("batch sizes must be positive integers, e.g. 1,8")
    firsts = [s.shape[0] for s in specs if s.shape]
    if firsts and all(isinstance(d, int) for d in firsts):
        fixed = int(firsts[0])
        if sizes != [fixed]:
            notes.append(f"the model's batch dimension is fixed at {fixed}; timed at batch {fixed} only")
        return [fixed], fixed
    if decide is not None and decide not in sizes:
        raise UsageError(f"the deciding batch size {decide} is not one of the timed sizes {sizes}")
    return sizes, decide if decide is not None else sizes[-1]


def _work_folder(out: Path) -> tempfile.TemporaryDirectory:
    # Beside the output: same file system (large candidates are not copied across disks),
    # and the user can see where the space goes if the run is killed.
    return tempfile.TemporaryDirectory(prefix=".onnxkit-auto-", dir=str(out.parent))


def _rehearse_input(model_path, graph, specs: list, batch_sizes, seed: int, *, data: Any = None) -> None:
    """The untrusted input, contained, on the inputs it is about to be validated and timed with
    in this process (see rehearse.probe_model_file)."""
    from onnxkit.foundation.data import random_feeds
    from onnxkit.operations.rehearse import probe_model_file

    timing = [random_feeds(specs, batch=b, seed=seed) for b in batch_sizes]  # as _time builds them
    probe_model_file(model_path, graph, data=data, extra=timing)


def _time(result: AutoResult, cands: list[Candidate], specs: list, *, source: Any, seed: int, threads: int | None,
          trust: bool) -> None:
    """Time every eligible candidate (and the source) interleaved; then a run-off among the
    near-best; fill p50s and speed-ups."""
    from onnxkit.foundation.data import random_feeds
    from onnxkit.runtime.bench import bench_models

    timed = [c for c in cands if c.eligible and c.same_as is None]
    feeds = {b: random_feeds(specs, batch=b, seed=seed) for b in result.batch_sizes}
    # Unset threads are measured (1, 2, 4, ... usable cores), not assumed from another machine.
    bench = bench_models([c.path for c in timed], feeds, warmup=result.warmup, iterations=result.iterations,
                         threads=threads or "auto", source=source, trust=trust, names=[c.name for c in timed])
    threads = bench.threads
    result.threads, result.threads_from = bench.threads, bench.threads_from
    result.recommended_threads = dict(bench.recommended_threads)
    if source is not None:
        result.source = bench.source
    for e in bench.entries:
        if e.is_source:
            result.source_p50_ms[e.batch_size] = e.stats.p50_ms
    for c in timed:
        for b in result.batch_sizes:
            e = bench.entry(c.name, b)
            if e is not None:
                c.p50_ms[b] = e.stats.p50_ms
    d = result.decide_batch
    ranked = sorted((c for c in timed if d in c.p50_ms), key=lambda c: c.p50_ms[d])
    if ranked:
        best = ranked[0].p50_ms[d]
        finalists = [c for c in ranked if c.p50_ms[d] <= best * (1 + RUNOFF_WINDOW)]
        if len(finalists) > 1:
            _runoff(result, finalists, feeds[d], threads=threads)
    by_name = {c.name: c for c in cands}
    for c in cands:
        if c.same_as is not None and c.same_as in by_name:
            twin = by_name[c.same_as]
            c.p50_ms, c.runoff_ms, c.runoff_ratio = dict(twin.p50_ms), twin.runoff_ms, twin.runoff_ratio
    base = next((c for c in cands if c.is_input), None)
    for c in cands:
        for b, ms in c.p50_ms.items():
            if ms > 0 and base is not None and b in base.p50_ms:
                c.speedup_vs_input[b] = base.p50_ms[b] / ms
            if ms > 0 and b in result.source_p50_ms:
                c.speedup_vs_source[b] = result.source_p50_ms[b] / ms


def _runoff(result: AutoResult, finalists: list[Candidate], feeds: dict, *, threads: int | None) -> None:
    """Re-time the near-best in several short rounds on the same sessions. Each round's p50s
    are divided by that round's fastest, and the median of those ratios decides: load from
    other processes that comes and goes shifts a whole round, not one candidate."""
    import statistics

    from onnxkit.runtime.bench import bench_models
    from onnxkit.runtime.session import make_session

    d = result.decide_batch
    sessions = [make_session(c.path, threads=threads) for c in finalists]
    names = [c.name for c in finalists]
    ratios: dict[str, list[float]] = {n: [] for n in names}
    p50s: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(RUNOFF_ROUNDS):
        again = bench_models(sessions, {d: feeds}, warmup=result.warmup, iterations=result.iterations, names=names)
        got = {n: e.stats.p50_ms for n in names for e in [again.entry(n, d)] if e is not None}
        if not got:
            return
        low = min(got.values())
        for n, ms in got.items():
            p50s[n].append(ms)
            ratios[n].append(ms / low if low > 0 else 1.0)
    result.runoff = names
    for c in finalists:
        if p50s[c.name]:
            c.runoff_ms = statistics.median(p50s[c.name])
            c.runoff_ratio = statistics.median(ratios[c.name])


def choose(cands: list[Candidate], batch: int, *, allow_input: bool = True) -> Candidate | None:
    """The fastest eligible candidate at ``batch`` (run-off time where there was one, so
    finalists are compared on the same, longer measurement)."""
    pool = [c for c in cands if c.eligible and (allow_input or not c.is_input) and c.p50_ms.get(batch) is not None]
    # Run-off finalists were all within the window of the first round's best; whoever was
    # left out of the run-off was slower than every finalist, so finalists decide among
    # themselves on the repeated measurement.
    finalists = [c for c in pool if c.runoff_ms is not None]
    if finalists:
        return min(finalists, key=lambda c: (c.runoff_ratio if c.runoff_ratio is not None else float("inf"), c.runoff_ms))
    return min(pool, key=lambda c: c.p50_ms[batch]) if pool else None


def _write_chosen(chosen: Candidate, out: Path, trust: bool) -> None:
    from onnxkit.foundation.onnx_io import load_onnx, save_onnx

    loaded = load_onnx(chosen.path, trust=trust)
    save_onnx(loaded.model, out)


def _source_notes(result: AutoResult, chosen: Candidate) -> None:
    fw = (result.source or {}).get("framework") or "source framework"
    for b in result.batch_sizes:
        s = chosen.speedup_vs_source.get(b)
        if s is not None and s < 1.0:
            result.notes.append(
                f"at batch {b} the {fw} model is faster than the best ONNX variant ({chosen.name}): "
                f"{result.source_p50_ms[b]:.3f} ms vs {chosen.p50_ms[b]:.3f} ms ({1 / s:.2f}x); ONNX does not pay off "
                f"at this batch size")


def _finish(result: AutoResult, cands: list[Candidate], out: Path, *, allow_input: bool, write_input: bool,
            trust: bool, what: str) -> Candidate | None:
    d = result.decide_batch
    chosen = choose(cands, d, allow_input=allow_input)
    result.candidates = cands
    if chosen is None:
        result.output = None
        return None
    chosen.chosen = True
    result.chosen = chosen.name
    result.chosen_is_input = chosen.is_input
    if chosen.is_input:
        others = [c for c in cands if c.eligible and not c.is_input]
        why = (f"no {what} variant is faster than the input model at batch {d}" if others
               else f"no {what} variant is within budget")
        if write_input:
            _write_chosen(chosen, out, trust)
            result.notes.append(f"{why}; {out.name} is the input model, unchanged")
        else:
            result.output = None
            result.notes.append(f"{why}; kept the input model")
    else:
        _write_chosen(chosen, out, trust)
        s = chosen.speedup_vs_input.get(d)
        result.notes.append(f"chose {chosen.name}" + (f": {s:.2f}x the input's speed at batch {d}" if s else ""))
    _source_notes(result, chosen)
    best = result.recommended_threads.get(chosen.name if chosen.same_as is None else chosen.same_as)
    if best is not None:
        result.notes.append(f"recommended intra_op_num_threads for {chosen.name}: {best} (measured on this machine)")
    return chosen


# ---------------------------------------------------------------- optimize


def optimize_candidates(model: Any, *, hardware_specific: bool = False) -> list[Candidate]:
    """The optimize variants worth timing for this graph."""
    from onnxkit.passes.transformer import looks_like_bert

    cands = [
        Candidate("default", {"preset": "default"}),
        Candidate("aggressive", {"preset": "aggressive"}),
        Candidate("ort-extended", {"preset": "default", "level": "extended"}),
    ]
    if looks_like_bert(model):
        cands.append(Candidate("transformer", {"preset": "default", "transformer": "auto"}))
        # Fused SkipLayerNormalization is slower than Add + LayerNormalization on some ORT
        # builds (about 9% of MiniLM here): time both.
        cands.append(Candidate("transformer-split-ln", {"preset": "default", "transformer": "auto",
                                                        "after_fusion": ["split_skip_layernorm"]}))
    if hardware_specific:
        cands.append(Candidate("ort-all", {"preset": "default", "level": "all"}))
    return cands


def auto_optimize(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    source: Any = None,
    data: str | os.PathLike[str] | None = None,
    batch_sizes: tuple[int, ...] | list[int] = (1, 8),
    decide_batch: int | None = None,
    tol: list[str] | None = None,
    rtol: float | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    hardware_specific: bool = False,
    write_input: bool = True,
    seed: int = 0,
    trust: bool = False,
    probe: bool = False,
) -> AutoResult:
    """Try the optimize presets and ORT levels (and transformer fusion on BERT-like graphs),
    keep those within fp32 tolerance of the input, time them with the input and keep the
    fastest. ``source`` (a loaded SourceModel) is timed alongside, for the notes.
    ``write_input=False``: when the input wins, write nothing (the pipeline then keeps its
    previous artifact)."""
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.operations.optimize import file_size, optimize_model, validate_pair
    from onnxkit.foundation.spec import specs_from_onnx

    if iterations < 1:
        raise UsageError("--iterations must be at least 1")
    out = Path(out)
    tolerance = make_tolerance(tol, rtol, preset="fp32")
    check_output_path(out, model_path, data, onnx=True)
    loaded = load_onnx(model_path, trust=trust)
    specs = specs_from_onnx(loaded.model)
    ds = None
    if data is not None:
        from onnxkit.foundation.data import open_data

        ds = open_data(data, specs)
    res = AutoResult(command="optimize", model=str(model_path), output=str(out), stage="optimize",
                     iterations=iterations, warmup=warmup, metric="max abs",
                     budget=f"fp32 tolerance (atol {fmt_num(tolerance.atol)}, rtol {fmt_num(tolerance.rtol)}) vs the input")
    res.notes.extend(loaded.warnings)
    res.batch_sizes, res.decide_batch = _batch_plan(specs, batch_sizes, decide_batch, res.notes)
    if probe:  # once for the input, on what it will be validated and timed with; the candidates are onnxkit's own files
        _rehearse_input(model_path, loaded.model, specs, res.batch_sizes, seed, data=ds)
    base = Candidate(INPUT, {}, path=str(model_path), size=file_size(model_path, loaded.external_files), is_input=True,
                     error=0.0, cosine=1.0, max_abs=0.0, within_budget=True)
    cands = [base] + optimize_candidates(loaded.model, hardware_specific=hardware_specific)
    del loaded
    with _work_folder(out) as tmp:
        seen: dict[str, str] = {}
        for i, c in enumerate(cands[1:]):
            c.path = str(Path(tmp) / f"cand{i}-{c.name}.onnx")
            try:
                r = optimize_model(model_path, c.path, validate=False, latency=False, trust=trust, **c.settings)
            except ConversionError as exc:
                c.status, c.reason, c.path = FAILED, exc.message, None
                continue
            c.size = r.size_after
            digest = _digest(c.path)
            if digest in seen:
                c.status, c.same_as, c.reason = DUPLICATE, seen[digest], f"same graph as {seen[digest]}"
                continue
            seen[digest] = c.name
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    v = validate_pair(str(model_path), c.path, specs, tolerance, data=ds)
            except ConversionError as exc:  # e.g. a fused op this ORT build cannot run
                c.status, c.reason = FAILED, exc.message
                continue
            c.max_abs = max((o.max_abs for o in v.outputs), default=0.0)
            cos = [o.cosine for o in v.outputs if o.cosine is not None]
            c.cosine = min(cos) if cos else None
            c.error = c.max_abs
            c.within_budget = v.passed
            if not v.passed:
                c.status = INVALID
                c.reason = "; ".join(p for o in v.outputs for p in o.problems)[:200] or "out of tolerance"
        for c in cands:
            if c.same_as is not None:
                twin = next(t for t in cands if t.name == c.same_as)
                c.error, c.cosine, c.max_abs, c.within_budget = twin.error, twin.cosine, twin.max_abs, twin.within_budget
                c.status = DUPLICATE if twin.eligible else twin.status
        _time(res, cands, specs, source=source, seed=seed, threads=threads, trust=trust)
        _finish(res, cands, out, allow_input=True, write_input=write_input, trust=trust, what="optimized")
    return res


# ---------------------------------------------------------------- quantize


def quantize_candidates(*, calibrated: bool, stem: str | None = None) -> list[Candidate]:
    """The int8 variants worth timing. fp16 is left out: on CPU it is slower than fp32.
    Static activations are tried unsigned (fast with VNNI-less int8 GEMMs, measured 5.1x vs
    1.4x on a CNN) and signed (what some accelerators need). ``stem``: the model's first
    convolution (quantize.selection.stem_conv), also tried in float."""
    cands = [
        Candidate("dynamic-pc", {"mode": "dynamic", "per_channel": True}),
        Candidate("dynamic-pt", {"mode": "dynamic", "per_channel": False}),
    ]
    if calibrated:
        cands += [
            Candidate("static-qdq-pc", {"mode": "static", "fmt": "qdq", "per_channel": True}),
            Candidate("static-qdq-pt", {"mode": "static", "fmt": "qdq", "per_channel": False}),
            Candidate("static-qdq-s8", {"mode": "static", "fmt": "qdq", "per_channel": True, "activation_type": "int8"}),
            Candidate("static-qop-pc", {"mode": "static", "fmt": "qoperator", "per_channel": True}),
        ]
        if stem is not None:
            cands.append(Candidate("static-qdq-pc-stem-float", {"mode": "static", "fmt": "qdq", "per_channel": True,
                                                                "exclude_nodes": [stem]}))
    return cands


def _quantize_candidate(c: Candidate, res: AutoResult, model_path: Any, common: dict[str, Any], budget: float) -> None:
    """One quantized variant made and measured against the budget; its status says how it went."""
    from onnxkit.operations.quantize import quantize_model

    kw = dict(common)
    if c.settings["mode"] == "dynamic":
        kw.update(calib_data=None, calib_random=0)
    try:
        r = quantize_model(model_path, c.path, **kw, **c.settings)
    except ConversionError as exc:
        c.status, c.reason, c.path = FAILED, exc.message, None
        return
    except OnnxkitError:
        raise  # bad data or usage: the same for every candidate, and the user must hear it
    except Exception as exc:  # a library bug on one variant must not sink the others
        log.debug("candidate %s failed", c.name, exc_info=True)
        c.status, c.reason, c.path = FAILED, f"{type(exc).__name__}: {str(exc)[:200]}", None
        return
    c.size = r.size_after
    for n in r.notes:
        # Per-candidate verdicts live in the table; shared facts (reduce_range, random
        # calibration, pre-processing) are worth saying once.
        if "written anyway" not in n and "budget missed" not in n and n not in res.notes:
            res.notes.append(n)
    e = r.error or {}
    c.error, c.cosine, c.max_abs = e.get("error"), e.get("cosine"), e.get("max_abs")
    c.excluded = len(r.excluded)
    if c.excluded:
        c.settings = dict(c.settings) | {"kept_float": c.excluded}
    c.within_budget = bool(r.budget_met)
    if r.nodes_quantized == 0:
        c.status, c.reason = NOOP, "no node was quantized"
    elif not c.within_budget:
        c.status = INVALID
        c.reason = f"error {fmt_num(c.error)} > {fmt_num(budget)}" + (f" after keeping {c.excluded} node(s) in float" if c.excluded else "")


def auto_quantize(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    calib_data: str | None = None,
    calib_random: int = 0,
    calib_method: str = "minmax",
    data: str | None = None,
    metric: str = "cosine",
    max_error: float | None = None,
    batch_sizes: tuple[int, ...] | list[int] = (1, 8),
    decide_batch: int | None = None,
    source: Any = None,
    iterations: int = DEFAULT_ITERATIONS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    require_quantized: bool = False,
    write_input: bool = True,
    reduce_range: bool | None = None,
    fuse: bool = True,
    seed: int = 0,
    trust: bool = False,
    probe: bool = False,
    target_cpu: str = "portable",
) -> AutoResult:
    """Quantize several ways (each held to the accuracy budget by quantize_model's exclusion
    loop), time the ones within budget with the float input, keep the fastest.

    The float input competes too (quantized int8 is slower on some CPUs and for tiny
    models); ``require_quantized`` keeps the fastest quantized one instead. The result
    fails (exit 1) when no quantized variant meets the budget."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.operations.optimize import file_size
    from onnxkit.operations.quantize import METRICS, default_budget, random_budget_note
    from onnxkit.operations.quantize.target import host_note, resolve_target
    from onnxkit.foundation.spec import specs_from_onnx

    if metric not in METRICS:
        raise UsageError(f"unknown --metric {metric!r}; choose from {', '.join(METRICS)}")
    if max_error is None and metric != "cosine":
        raise UsageError(f"--metric {metric} needs --max-error (the default budget is for cosine)")
    if iterations < 1:
        raise UsageError("--iterations must be at least 1")
    if calib_data and calib_random:
        raise UsageError("give either --calib-data or --calib-random, not both")
    target = resolve_target(target_cpu)
    out = Path(out)
    check_output_path(out, model_path, data, calib_data, onnx=True)
    random_data = not (data or calib_data)
    budget = default_budget("dynamic", random_data=random_data) if max_error is None else max_error
    loaded = load_onnx(model_path, trust=trust)
    specs = specs_from_onnx(loaded.model)
    res = AutoResult(command="quantize", model=str(model_path), output=str(out), stage="quantize",
                     iterations=iterations, warmup=warmup, metric=f"error ({metric})",
                     budget=f"{metric} error <= {fmt_num(budget)}" + (" (cosine >= " + fmt_num(1 - budget) + ")" if metric == "cosine" else ""))
    res.notes.extend(loaded.warnings)
    if max_error is None and random_data:
        res.notes.append(random_budget_note("dynamic"))
    res.batch_sizes, res.decide_batch = _batch_plan(specs, batch_sizes, decide_batch, res.notes)
    if probe:  # once for the input; the candidates are onnxkit's own files
        _rehearse_input(model_path, loaded.model, specs, res.batch_sizes, seed, data=data or calib_data)
    base = Candidate(INPUT, {"mode": "float"}, path=str(model_path), size=file_size(model_path, loaded.external_files),
                     is_input=True, error=0.0, within_budget=True)
    from onnxkit.operations.quantize.selection import stem_conv

    stem = stem_conv(loaded.model)
    del loaded
    calibrated = bool(calib_data or calib_random)
    cands = [base] + quantize_candidates(calibrated=calibrated, stem=stem)
    # Timing happens here, the model runs on the target: a variant that is only fast where
    # this machine differs from the target must not win.
    for c in cands[1:]:
        if not target.allows(c.settings):
            c.status, c.reason = NOT_FOR_TARGET, f"{target.label}: int8 activations are slow on CPUs without VNNI"
    if (where := host_note(target)) is not None:
        res.notes.append(where)
    if not calibrated:
        res.notes.append("static int8 variants not tried: they need --calib-data FILE (or --calib-random N)")
    common = {"calib_data": calib_data, "calib_random": calib_random, "calib_method": calib_method, "data": data,
              "metric": metric, "max_error": budget, "budget": True, "seed": seed, "latency": False, "trust": trust,
              "reduce_range": reduce_range, "fuse": fuse, "target_cpu": target_cpu}
    with _work_folder(out) as tmp:
        for i, c in enumerate(cands[1:]):
            if c.status == NOT_FOR_TARGET:
                continue
            c.path = str(Path(tmp) / f"cand{i}-{c.name}.onnx")
            _quantize_candidate(c, res, model_path, common, budget)
        _time(res, cands, specs, source=source, seed=seed, threads=threads, trust=trust)
        chosen = _finish(res, cands, out, allow_input=not require_quantized, write_input=write_input, trust=trust,
                         what="quantized")
    if not any(c.eligible and not c.is_input for c in cands):
        res.passed = False
        res.notes.append(f"no quantized variant meets the accuracy budget ({res.budget})"
                         + ("; nothing was written" if chosen is None else ""))
    return res
