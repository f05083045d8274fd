"""``bench --provider openvino``: every model timed on ONNX Runtime CPU and on the OpenVINO
runtime side by side (interleaved, same inputs, same thread count), and beside the source
framework with ``--vs``; each OpenVINO entry names the inference precision it ran at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxkit.errors import UsageError


def check_use(provider_options: list[str] | None, io_binding: bool | None) -> None:
    if provider_options:
        raise UsageError("--provider-option is for ONNX Runtime providers; --provider openvino takes --precision")
    if io_binding:
        raise UsageError("--io-binding is for ONNX Runtime's device providers; OpenVINO runs on the CPU here")


def ov_name(name: str, precision: str) -> str:
    return f"{name} [openvino {precision}]"


def _measure_threads(models: list, names: list[str], feeds_by_batch: dict, source: Any, trust: bool):
    """--threads auto (the default with --vs): the brief probe on ONNX Runtime and the source,
    whose fastest common count OpenVINO then runs at too."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.runtime.threads_probe import probe_threads

    for m in models:
        load_onnx(m, load_external=False, trust=trust)
    source_name = Path(str(getattr(source, "path", "source"))).name if source is not None else ""
    return probe_threads(list(models), names, feeds_by_batch[max(feeds_by_batch)], source=source,
                         source_name=source_name, providers=["CPUExecutionProvider"], provider_options={})


def bench_with_openvino(models: list, feeds_by_batch: dict, *, precision: str | None, threads: int | str | None,
                        trust: bool, source: Any, **timing: Any):
    """Time each model on ONNX Runtime CPU and on OpenVINO (in that order, so ratios are
    against the first model on ONNX Runtime); returns bench's result with precisions filled in."""
    from onnxkit.runtime.bench import _unique_names, bench_models
    from onnxkit.runtime.openvino_bench import open_for_bench
    from onnxkit.runtime.openvino_session import precision_notes
    from onnxkit.runtime.session import make_session

    names = _unique_names(list(models))
    probe = None
    if threads == "auto" or (threads is None and source is not None):
        probe = _measure_threads(models, names, feeds_by_batch, source, trust)
        threads = probe.common
    count = threads if isinstance(threads, int) else None
    sessions: list = []
    entry_names: list[str] = []
    notes: list[str] = []
    precisions: dict[str, str] = {}
    try:
        for m, name in zip(models, names):
            ov = open_for_bench(m, feeds_by_batch, trust=trust, precision=precision, threads=count)
            # the ORT side made here too (not by path) so that both are built before timing starts
            sessions.append(make_session(m, providers=["CPUExecutionProvider"], threads=count, profile=True,
                                         spinning=False))
            sessions.append(ov)
            entry_names += [name, ov_name(name, ov.precision)]
            precisions[ov_name(name, ov.precision)] = ov.precision
            for n in precision_notes(ov.ov, precision):
                if n not in notes:
                    notes.append(n)
        result = bench_models(sessions, feeds_by_batch, threads=count, source=source, names=entry_names,
                              trust=trust, **timing)
    finally:
        for s in sessions:
            s.node_providers()  # ends ORT profiling (and removes its file)
            s.close()
    for e in result.entries:
        e.precision = precisions.get(e.name)
    result.models = [str(m) for m in models]
    if probe is not None:
        result.thread_probe, result.recommended_threads = probe.p50_ms, probe.best
        result.threads_from = "measured"
        result.notes.append(probe.summary() + " (measured on ONNX Runtime" + (" and the source" if source else "")
                            + "; OpenVINO runs at the same count)")
    elif count is not None:
        result.threads_from = "--threads"
    result.notes.extend(notes)
    result.notes.append("each model is timed on ONNX Runtime CPU and on OpenVINO (the openvino package, "
                        f"INFERENCE_NUM_THREADS={count or 'its default'}), interleaved on the same inputs")
    return result
