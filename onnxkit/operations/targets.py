"""``onnxkit targets``: will this ONNX file run on each deployment target, and does it give
the answers ONNX Runtime on the CPU gives?

Every target runs the same inputs (seeded random, or ``--data``); the ``cpu`` target is the
reference. A target's outcome is one of: ``passed``, ``failed`` (it could not convert,
compile, load or run the model), ``disagrees`` (it ran, outside tolerance), ``unavailable``
(not installed or no device here; the reason says which). Exit 1 when a requested target
failed or disagrees; otherwise 3 when one that was asked for by name is unavailable.
Untrusted models run on each target in a contained child process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, EXIT_OK, InputError, UsageError
from onnxkit.results import Result, Table, fmt_num

log = logging.getLogger(__name__)

TARGETS = ("cpu", "openvino", "mobile", "web", "cuda", "tensorrt")
# A target's run (conversion included) in a contained child: OpenVINO compiles and the ORT
# format conversion optimizes the whole graph first, both far slower than one inference.
TARGET_TIMEOUT_S = 600.0


@dataclass
class TargetOutcome:
    target: str
    status: str = "unavailable"  # passed, failed, disagrees, unavailable
    reason: str | None = None  # why unavailable / why it failed
    stage: str | None = None  # where it failed: convert, compile, load, run
    precision: str | None = None
    latency_ms: float | None = None
    max_abs_diff: float | None = None
    unsupported: list[dict[str, str]] = field(default_factory=list)  # {op, node}
    outputs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    requested: bool = False  # named in --target (not only in the default list)


@dataclass
class TargetsResult(Result):
    command: str = "targets"
    model: str = ""
    inputs: str = ""
    tolerance: dict[str, Any] = field(default_factory=dict)
    targets: list[TargetOutcome] = field(default_factory=list)
    fused_ops: dict[str, Any] | None = None  # com.microsoft ops in the model and which each target cannot run

    @property
    def exit_code(self) -> int:
        if any(t.status in ("failed", "disagrees") for t in self.targets):
            return EXIT_CHECK_FAILED
        if any(t.status == "unavailable" and t.requested for t in self.targets):
            return EXIT_ENVIRONMENT
        return EXIT_OK

    @property
    def verdict(self) -> str:
        code = self.exit_code
        return "PASSED" if code == EXIT_OK else ("FAILED" if code == EXIT_CHECK_FAILED else "UNAVAILABLE")

    def headline(self) -> str:
        """For -q: each target that ran, its state and max |diff|."""
        parts = []
        for t in self.targets:
            if t.status == "unavailable" and not t.requested:
                continue
            diff = f" {fmt_num(t.max_abs_diff)}" if t.max_abs_diff is not None and t.target != "cpu" else ""
            parts.append(f"{t.target} {t.status}{diff}" + (f" ({t.precision})" if t.precision not in (None, "f32") else ""))
        return ", ".join(parts)

    def tables(self) -> list[Table]:
        rows = []
        for t in self.targets:
            state = t.status if t.status == "passed" else f"{t.status}" + (f" ({t.stage})" if t.stage and t.status == "failed" else "")
            ops = ", ".join(sorted({u["op"] for u in t.unsupported})) or "-"
            rows.append([t.target, state, t.precision or "-", fmt_num(t.max_abs_diff), fmt_num(t.latency_ms), ops,
                         t.reason or "-"])
        out = [Table("Targets (reference: ONNX Runtime CPU)",
                     ["target", "result", "precision", "max |diff|", "latency ms", "ops it cannot run", "why"], rows)]
        mobile = next((t for t in self.targets if t.target == "mobile" and t.details.get("partitions")), None)
        if mobile:
            prow = []
            for ep, info in mobile.details["partitions"].items():
                if "error" in info:
                    prow.append([ep, "-", "-", info["error"]])
                else:
                    prow.append([ep, f"{info['supported_nodes']}/{info['nodes']}", info["partitions"],
                                 ", ".join(info["unsupported_ops"]) or "-"])
            out.append(Table("Mobile accelerators (nodes outside run on the phone's CPU)",
                             ["provider", "nodes taken", "partitions", "ops it does not take"], prow))
        if self.fused_ops:
            from onnxkit.operations.targets_fused import table

            out.append(table(self.fused_ops, self.targets))
        return out


def parse_targets(value: str | None) -> tuple[list[str], bool]:
    """``--target cpu,openvino`` -> (targets, named explicitly). cpu is always run: it is the reference."""
    if not value:
        return list(TARGETS), False
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise UsageError(f"unknown target {', '.join(unknown) or repr(value)}; choose from {', '.join(TARGETS)}")
    return list(dict.fromkeys(["cpu", *names])), True


def _runner(target: str):
    """(availability function, run function taking (model, feeds, precision, options))."""
    if target in ("cpu", "cuda", "tensorrt"):
        from functools import partial

        from onnxkit.runtime import targets_ort

        return partial(targets_ort.availability, target), partial(targets_ort.run, target)
    if target == "openvino":
        from onnxkit.runtime import targets_openvino as mod
    elif target == "mobile":
        from onnxkit.runtime import targets_mobile as mod
    else:
        from onnxkit.runtime import targets_web as mod
    return mod.availability, mod.run


def _execute(run, model_path: str, feeds: list[dict], precision: str | None, options: dict, *, trust: bool, target: str) -> dict:
    if trust:
        return run(model_path, feeds, precision, options)
    from onnxkit.foundation.sandbox import run_isolated
    from onnxkit.runtime.contained import default_memory_mb

    # The same memory limit as run's and validate's contained worker. Node.js and Chromium
    # reserve far more address space than they use (V8's cage, wasm guard regions), so
    # RLIMIT_AS stops them from starting: the web runner watches their resident size instead.
    # CUDA's start-up reservation breaks under RLIMIT_AS too (see runtime/contained.py).
    limit = default_memory_mb()
    rlimit = None if target in ("web", "cuda", "tensorrt") else limit
    if target == "web":
        options = {**options, "memory_mb": limit}
    import shutil
    import tempfile

    # The runners' scratch folders live in one the parent owns: a child killed at the time
    # limit cannot remove its own.
    scratch = tempfile.mkdtemp(prefix=f"onnxkit-{target}-")
    try:
        return run_isolated(_in_scratch, scratch, run, model_path, feeds, precision, options,
                            timeout_s=TARGET_TIMEOUT_S, memory_mb=rlimit,
                            what=f"model {Path(model_path).name} on target {target}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _in_scratch(scratch: str, run, *args):
    """In the contained child: temporary folders under ``scratch``, then the target's run."""
    import tempfile

    tempfile.tempdir = scratch
    return run(*args)


def _compare(outcome: TargetOutcome, ref: list[dict], cand: list[dict], tolerance) -> None:
    from onnxkit.foundation.compare import Comparator

    if len(cand) != len(ref):  # zip would compare the first batches only, as if they were all
        outcome.status, outcome.stage = "failed", "compare"
        outcome.reason = f"the target answered {len(cand)} of the {len(ref)} input batches"
        return
    comp = Comparator(tolerance)
    try:
        for r, c in zip(ref, cand):
            comp.add(r, c)
        results = comp.results()
    except InputError as exc:  # e.g. the target dropped or added an output
        outcome.status, outcome.stage, outcome.reason = "failed", "compare", exc.message
        return
    outcome.outputs = [{"name": o.name, "max_abs": o.max_abs, "atol": o.atol, "rtol": o.rtol,
                        "out_of_tol": o.out_of_tol, "cosine": o.cosine, "passed": o.passed, "problems": o.problems}
                       for o in results]
    numeric = [o.max_abs for o in results if o.kind == "numeric"]
    outcome.max_abs_diff = max(numeric) if numeric else 0.0
    outcome.notes.extend(comp.notes)
    outcome.status = "passed" if all(o.passed for o in results) else "disagrees"
    if outcome.status == "disagrees":
        bad = next(o for o in results if not o.passed)
        outcome.reason = f"output {bad.name}: max |diff| {fmt_num(bad.max_abs)} at {outcome.precision or 'f32'}" + \
            (f"; {bad.problems[0]}" if bad.problems else "")


# Ops whose outputs are rounded to integers: two correct runtimes may round a tie apart and
# land one quantization step apart (measured: OpenVINO vs ORT on a QDQ Conv, one element in 256).
_QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                  "ConvInteger", "DynamicQuantizeMatMul", "QAttention", "MatMulNBits"}


def is_quantized(model) -> bool:
    return any(n.op_type in _QUANTIZED_OPS for n in model.graph.node)


def _feeds(loaded, data: str | None, seed: int) -> tuple[list[dict], str]:
    from onnxkit.foundation.data import check_feeds, load_all, random_feeds
    from onnxkit.foundation.spec import specs_from_onnx

    specs = specs_from_onnx(loaded.model)
    if data:
        feeds = check_feeds(load_all(data, specs), specs, where=f"data file {data}")
        return [feeds], f"data file {data}"
    return [random_feeds(specs, batch=1, seq=16, seed=seed), random_feeds(specs, batch=2, seq=16, seed=seed + 1)], \
        f"random (seed {seed}; batch 1 and 2, sequence 16)"


def run_targets(
    model: str | os.PathLike[str],
    *,
    targets: str | None = None,
    data: str | None = None,
    precision: str | None = None,
    tolerance=None,
    tolerance_given: bool = False,
    seed: int = 0,
    trust: bool = False,
    provider_options: dict[str, dict[str, str]] | None = None,
    browser: str | None = None,  # the web target's browser (targets_browser.find_browser)
) -> TargetsResult:
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.operations.quantize.target import notes_for_model

    from onnxkit.operations.precision import check_precision, is_half, tolerance_for

    precision = check_precision(precision)
    names, explicit = parse_targets(targets)
    tolerance = tolerance or make_tolerance()
    from onnxkit.runtime.ort_format import is_ort_file

    if Path(model).is_file() and is_ort_file(model):
        raise InputError(f"{Path(model).name} is in the ORT format; targets reads the ONNX model it was converted from "
                         "(the mobile target converts it itself)")
    loaded = load_onnx(model, trust=trust, load_external=False)
    feeds, described = _feeds(loaded, data, seed)
    quantized = is_quantized(loaded.model)
    half = is_half(loaded.model)
    result = TargetsResult(model=str(model), inputs=described, tolerance=tolerance.to_dict())
    result.notes.extend(notes_for_model(model))
    options = {"provider_options": provider_options or {}, "browser": browser}
    reference: list[dict] | None = None
    for name in names:
        outcome = TargetOutcome(name, requested=explicit or name == "cpu")
        result.targets.append(outcome)
        available, run = _runner(name)
        why = available()
        if why:
            outcome.reason = why
            continue
        # cpu is the reference: the precision switch is for the deployment target
        try:
            reply = _execute(run, str(loaded.path), feeds, None if name == "cpu" else precision, options,
                             trust=trust, target=name)
        except InputError as exc:
            if name == "cpu":
                raise  # ONNX Runtime itself crashed or hung on the file: bad input, as everywhere
            # the contained child crashed, hung or ran out of memory on this target only
            outcome.status, outcome.stage, outcome.reason = "failed", "run", exc.message
            continue
        outcome.precision = reply["precision"]
        outcome.latency_ms = reply["latency_ms"]
        outcome.unsupported = [{"op": op, "node": node} for op, node in reply["unsupported"]]
        outcome.notes.extend(reply["notes"])
        outcome.details = reply["extra"]
        if reply["error"] and reply["stage"] == "unavailable":
            outcome.status, outcome.reason = "unavailable", reply["error"]
            continue
        if reply["error"]:
            outcome.status, outcome.stage, outcome.reason = "failed", reply["stage"], reply["error"]
            if name == "cpu":
                result.notes.append("the reference (ONNX Runtime CPU) could not run the model: nothing was compared")
                for rest in names[1:]:
                    result.targets.append(TargetOutcome(rest, status="skipped", reason="no reference outputs",
                                                        requested=explicit))
                break
            continue
        if name == "cpu":
            reference = reply["outputs"]
            outcome.status, outcome.max_abs_diff = "passed", 0.0
            continue
        tol, why_tol = tolerance_for(outcome.precision, tolerance, tolerance_given, quantized, half)
        if why_tol:
            outcome.notes.append(why_tol)
        _compare(outcome, reference, reply["outputs"], tol)
    from onnxkit.operations.targets_fused import summarize

    result.fused_ops = summarize(result.targets, loaded.model)
    for t in result.targets:
        result.notes.extend(f"{t.target}: {n}" for n in t.notes)
    result.passed = result.exit_code == EXIT_OK
    return result
