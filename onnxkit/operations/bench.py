"""`onnxkit bench`: check paths, build inputs, rehearse untrusted models, time, gate (the --plot
path is checked here and drawn by reports/bench_plot.py).

The timing itself is :func:`onnxkit.runtime.bench.bench_models`."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from onnxkit.errors import UsageError
from onnxkit.runtime.bench import (
    METRICS, BenchResult, _adapt_feeds, bench_models, compare_baseline, input_mismatch, load_baseline,
    parse_regression, save_baseline,
)

def parse_batch_sizes(text: str | list[str] | None) -> list[int]:
    parts = [p for t in ([text] if isinstance(text, str) else (text or ["1"])) for p in str(t).split(",") if p.strip()]
    sizes = []
    for p in parts:
        if not p.strip().isdigit() or int(p) < 1:
            raise UsageError(f"malformed --batch-size {p.strip()!r}; expected positive integers such as 1,8,32")
        sizes.append(int(p))
    return sorted(set(sizes)) or [1]


def _common_specs(models: list, user_specs: list, *, trust: bool) -> list:
    """The first model's inputs (with --input applied); every other model must take them,
    since all are fed the same feeds."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.foundation.spec import merge_specs, specs_from_onnx

    first = load_onnx(models[0], load_external=False, trust=trust)
    first_specs = specs_from_onnx(first.model)
    specs = merge_specs(first_specs, user_specs)
    del first
    for m in models[1:]:
        why = input_mismatch(first_specs, specs_from_onnx(load_onnx(m, load_external=False, trust=trust).model))
        if why:
            raise UsageError(f"{Path(m).name} cannot be timed on {Path(models[0]).name}'s inputs: {why}",
                             hint="bench compares variants of one model; time different models in separate runs")
    return specs


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
    threads: int | str | None = None,
    io_binding: bool | None = None,
    plot: str | Path | None = None,
    save_baseline_to: str | Path | None = None,
    baseline: str | Path | None = None,
    max_regression: str | None = None,
    metric: str = "p50",
    trust: bool = False,
    timeout: float | None = None,
    min_speedup: float | None = None,
    precision: str | None = None,
    texts: list[str] | None = None,
    seq: int | None = None,
    context: str | None = None,
    new_tokens: int | None = None,
) -> BenchResult:
    """Everything `onnxkit bench` does: check paths, build inputs, time, plot, gate."""
    from onnxkit.operations.hf_folder_bench import bench_if_folders

    folders = bench_if_folders(models, texts=texts, seq=seq, context=context, new_tokens=new_tokens, source=source,
                               batch_sizes=batch_sizes, iterations=iterations, warmup=warmup, threads=threads, trust=trust,
                               timeout=timeout, unsupported={
        "--provider": providers, "--provider-option": provider_options, "--fallback": fallback, "--input": inputs,
        "--duration": duration, "--io-binding": io_binding, "--plot": plot, "--save-baseline": save_baseline_to,
        "--baseline": baseline, "--max-regression": max_regression, "--min-speedup": min_speedup,
        "--precision": precision})
    if folders is not None:
        return folders
    from onnxkit.foundation.data import random_feeds
    from onnxkit.foundation.files import check_io
    from onnxkit.operations.quantize.target import notes_for_models
    from onnxkit.operations.run import fallback_notes
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.runtime.providers import parse_provider_options, plan_providers, provider_options_for

    iterations, metric_key, limit = _check_options(iterations, duration, source, min_speedup, metric, max_regression,
                                                   baseline, plot)
    threads = parse_threads(threads)
    check_io([plot, save_baseline_to], [*models, baseline, source])
    sizes = parse_batch_sizes(batch_sizes)
    from onnxkit.operations.precision import check_precision, ignored_note
    from onnxkit.runtime import openvino_session

    precision = check_precision(precision)
    use_openvino = openvino_session.wanted(providers)  # the openvino package, timed beside ORT CPU
    if use_openvino:
        from onnxkit.operations.bench_openvino import check_use

        check_use(provider_options, io_binding)
    chosen = ["CPUExecutionProvider"] if use_openvino else plan_providers(providers, fallback=fallback)
    options = provider_options_for(chosen, parse_provider_options(provider_options, chosen))

    user_specs = parse_specs(inputs)
    specs = _common_specs(models, user_specs, trust=trust)
    src = _load_source(source, trust, user_specs) if source is not None else None
    feeds_by_batch = {b: random_feeds(specs, batch=b, seed=seed) for b in sizes}
    if not trust:
        _contain(models, src, feeds_by_batch, chosen, options, threads, timeout)
    if use_openvino:
        from onnxkit.operations.bench_openvino import bench_with_openvino

        result = bench_with_openvino(list(models), feeds_by_batch, precision=precision, threads=threads, trust=trust,
                                     source=src, warmup=warmup, iterations=iterations, duration=duration)
    else:
        result = bench_models(
            list(models), feeds_by_batch, providers=chosen, provider_options=options, threads=threads, warmup=warmup,
            iterations=iterations, duration=duration, source=src, io_binding=io_binding, fallback=fallback, trust=trust,
        )
        result.notes.extend(fallback_notes(providers, chosen))
        result.notes.extend(ignored_note(precision))
    result.notes.extend(notes_for_models(list(models)))  # a model made for VNNI on a CPU without it
    if save_baseline_to is not None:
        save_baseline(result, save_baseline_to)
    if baseline is not None:
        compare_baseline(result, baseline, limit, metric_key)
    if min_speedup is not None:
        from onnxkit.runtime.speedup_ci import gate_bench

        gate_bench(result, min_speedup)
    return result


def _contain(models, src, feeds_by_batch, chosen, options, threads, timeout) -> None:
    """Untrusted models: the exact inputs of the timing loop run contained first (see
    contained.rehearse); an untrusted ONNX source gets ``--timeout`` too, as it predicts in its
    contained worker during the timing itself."""
    from onnxkit.runtime.contained import rehearse

    for m in models:
        rehearse(m, feeds_by_batch, _adapt_feeds, providers=chosen, provider_options=options,
                 threads=threads if isinstance(threads, int) else None, timeout_s=timeout)
    if timeout is not None and hasattr(getattr(src, "session", None), "timeout_s"):
        src.session.timeout_s = float(timeout)


def _load_source(source, trust: bool, user_specs):
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.registry import load_source

    if "torch" not in sys.modules:
        # ONNX Runtime's threads do not spin in interleaved timing; PyTorch's OpenMP threads
        # sleep alike only if told before it loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return load_source(source, LoadOptions(trust=trust, inputs=user_specs))


def _check_options(iterations, duration, source, min_speedup, metric: str, max_regression, baseline, plot):
    """The option combinations bench refuses, before anything loads; (iterations, metric key, regression limit)."""
    if iterations is not None and duration is not None:
        raise UsageError("give --iterations or --duration, not both")
    if iterations is None and duration is None:
        iterations = 50
    if min_speedup is not None and source is None:
        raise UsageError("--min-speedup needs --vs SOURCE: a speed-up is measured against the source framework")
    if min_speedup is not None and not (math.isfinite(min_speedup) and min_speedup > 0):
        raise UsageError(f"--min-speedup must be a positive number, not {min_speedup:g}")
    metric_key = metric if metric.endswith("_ms") else f"{metric}_ms"
    if metric_key not in METRICS:
        raise UsageError(f"unknown --metric {metric!r}; choose from {', '.join(m.removesuffix('_ms') for m in METRICS)}")
    limit = parse_regression(max_regression)
    if baseline is None and limit is not None:
        raise UsageError("--max-regression needs --baseline FILE")
    if baseline is not None:
        limit = 10.0 if limit is None else limit
        load_baseline(baseline)  # a malformed baseline fails now, not after minutes of timing
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG; give a .png path, not {Path(plot).name}")
    return iterations, metric_key, limit


def parse_threads(text: int | str | None) -> int | str | None:
    """--threads: a positive count or 'auto' (measured)."""
    if text is None or isinstance(text, int) and not isinstance(text, bool):
        if isinstance(text, int) and text < 1:
            raise UsageError("--threads must be at least 1")
        return text
    t = str(text).strip().lower()
    if t == "auto":
        return "auto"
    if not t.isdigit():
        raise UsageError(f"malformed --threads {text!r}; expected a positive count or auto")
    if int(t) < 1:
        raise UsageError("--threads must be at least 1")
    return int(t)
