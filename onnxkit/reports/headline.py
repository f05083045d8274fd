"""The one line `-q` prints: the verdict, the command and the number that decided it.

A CI log or a shell script reading `onnxkit ... -q` gets one line per command, so that line
must carry what a person would look for first in the tables: the worst difference for a
check, the speed-up for an optimization, the accuracy for a quantization.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from onnxkit.results import Result, fmt_bytes, fmt_num

log = logging.getLogger(__name__)


def headline(result: Result) -> str:
    """``PASSED validate: max abs diff 1.9e-06 (atol 2e-05) over 9 samples`` and the like."""
    head = result.verdict + (f" {result.command}" if result.command else "")
    describe = _DESCRIBERS.get(type(result).__name__)
    if describe is None:
        return head
    try:
        detail = describe(result)
    except Exception:  # the verdict must be printed even if a detail is missing
        log.debug("no headline detail for %s", type(result).__name__, exc_info=True)
        detail = ""
    return f"{head}: {detail}" if detail else head


def _name(path: Any) -> str:
    return Path(str(path)).name if path else "-"


def _speedup(before: float | None, after: float | None) -> str | None:
    if not before or not after:
        return None
    return _times(before / after)


def _times(speedup: float) -> str:
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


def _validation(v: Any) -> str:
    outputs = list(getattr(v, "outputs", None) or [])
    if not outputs:
        return f"{getattr(v, 'samples', 0)} samples, no output compared"
    failing = [o for o in outputs if not o.passed]
    worst = failing[0] if failing else max(outputs, key=lambda o: o.max_abs if o.kind == "numeric" else -1.0)
    if worst.kind == "numeric":
        what = f"max abs diff {fmt_num(worst.max_abs)} (atol {fmt_num(worst.atol)}, rtol {fmt_num(worst.rtol)})"
    else:
        what = f"label agreement {fmt_num(worst.label_agreement)}"
    where = f" on {worst.name}" if len(outputs) > 1 or failing else ""
    failed = f", {len(failing)} of {len(outputs)} outputs out of tolerance" if failing else ""
    return f"{what}{where}{failed}, {v.samples} samples"


def _export(r: Any) -> str:
    parts = [f"{_name(r.output)} ({fmt_bytes(r.file_size)})"]
    if r.validation is not None:
        parts.append(_validation(r.validation))
    elif not r.checker_ok:
        parts.append("checker: " + "; ".join(r.checker_problems[:1]))
    return ", ".join(parts)


def _optimize(r: Any) -> str:
    parts = [f"{_name(r.output)}, {r.nodes_before} -> {r.nodes_after} nodes"]
    speed = _speedup(r.latency_ms_before, r.latency_ms_after)
    if speed:
        parts.append(speed)
    outputs = (r.validation or {}).get("outputs") or []
    diffs = [o["max_abs"] for o in outputs if isinstance(o, dict) and o.get("max_abs") is not None]
    if diffs:
        parts.append(f"max abs diff {fmt_num(max(diffs))} vs the input")
    return ", ".join(parts)


def _quantize(r: Any) -> str:
    parts = [f"{_name(r.output)} ({r.mode})"]
    accuracy = _accuracy(r.metric, r.error or {}, r.max_error)
    if accuracy:
        parts.append(accuracy)
    if r.size_before and r.size_after:
        parts.append(f"{fmt_bytes(r.size_before)} -> {fmt_bytes(r.size_after)}")
    speed = _speedup(r.latency_ms_before, r.latency_ms_after)
    if speed:
        parts.append(speed)
    return ", ".join(parts)


def _accuracy(metric: str, e: dict[str, Any], max_error: float | None) -> str:
    # The budget bounds an error (1 - cosine, 1 - agreement, max abs); people read the metric.
    if metric == "cosine" and e.get("cosine") is not None:
        return f"cosine {fmt_num(e['cosine'])}" + (f" (budget >= {fmt_num(1 - max_error)})" if max_error is not None else "")
    if metric == "label" and e.get("agreement") is not None:
        return f"label agreement {fmt_num(e['agreement'])}" + (
            f" (budget >= {fmt_num(1 - max_error)})" if max_error is not None else "")
    if e.get("max_abs") is not None:
        return f"max abs diff {fmt_num(e['max_abs'])}" + (f" (budget <= {fmt_num(max_error)})" if max_error is not None else "")
    return ""


def _bench(r: Any) -> str:
    regressed = [c for c in r.comparisons if c.regressed]
    if regressed:
        c = regressed[0]
        return f"{c.name} @{c.batch_size} {c.change_pct:+.1f}% {c.metric} vs baseline (max +{fmt_num(r.max_regression_pct)}%)"
    onnx = [e for e in r.entries if not e.is_source]
    if not onnx:
        return ""
    first = onnx[0]
    line = f"{first.name} p50 {first.stats.p50_ms:.3f} ms at batch {first.batch_size}"
    if first.speedup_vs_source is not None:
        line += f", {_times(first.speedup_vs_source)} than the source"
    return line


def _run(r: Any) -> str:
    line = f"{r.rows:,} row{'s' if r.rows != 1 else ''} in {_batches(r.batches, r.batch_size)}, {fmt_num(r.rows_per_second)} rows/s"
    return line + (f", written to {r.output_file}" if r.output_file else "")


def _batches(batches: int, size: int) -> str:
    return f"{batches} batch{'es' if batches != 1 else ''} of {size:,} row{'s' if size != 1 else ''}"


def _inspect(r: Any) -> str:
    checker = "checker ok" if r.checker_ok else f"checker: {r.checker_problems[0] if r.checker_problems else 'invalid'}"
    return f"{r.node_count} nodes, {fmt_num(r.parameter_count)} parameters, {checker}"


def _auto(r: Any) -> str:
    chosen = r.candidate(r.chosen) if r.chosen else None
    if chosen is None:
        return "no candidate within budget"
    if r.chosen_is_input:
        return "kept the input model: no candidate was faster within budget"
    speed = chosen.speedup_vs_input.get(r.decide_batch)
    return f"{chosen.name} -> {_name(r.output)}" + (f", {_times(speed)} than the input" if speed else "")


def _pipeline(r: Any) -> str:
    failures = r.failures()
    if failures:
        return failures[0] + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")
    return f"final model {r.final_model or '-'}" + (f" ({r.final_variant})" if r.final_variant else "")


def _init(r: Any) -> str:
    return f"wrote {r.config}"


def _providers(r: Any) -> str:
    usable = [p.name.replace("ExecutionProvider", "") for p in r.providers if p.available and p.usable is not False]
    return "usable: " + (", ".join(usable) or "none")


_DESCRIBERS = {
    "ValidationResult": _validation, "ExportResult": _export, "OptimizeResult": _optimize,
    "QuantizeResult": _quantize, "BenchResult": _bench, "RunResult": _run, "InspectResult": _inspect,
    "AutoResult": _auto, "PipelineResult": _pipeline, "InitResult": _init, "ProvidersResult": _providers,
    "TargetsResult": lambda r: r.headline(), "RayRunResult": lambda r: r.headline(),
}
