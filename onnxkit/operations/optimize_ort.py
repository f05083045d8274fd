"""``onnxkit optimize MODEL.onnx -o model.ort``: the optimized model in ONNX Runtime's ORT
format (for the mobile and minimal builds), with its reduced-operator config beside it.

The graph passes asked for run first (as for an ONNX output); ONNX Runtime then optimizes
it at ``--level`` (default ``all``, without the x86-only NCHWc layout) and saves it in the
ORT format. The ``.ort`` file is loaded and run by ONNX Runtime and compared with the input
model before anything is published: a file that does not load, or disagrees beyond
tolerance, is not written (exit 4 / exit 1). Both files are written atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from onnxkit.errors import ConversionError, InputError, UsageError
from onnxkit.operations.optimize import LEVELS, OptimizeResult, optimize_model
from onnxkit.results import Table, fmt_bytes

ORT_SUFFIX = ".ort"


def wants_ort(output: str | os.PathLike[str] | None) -> bool:
    return output is not None and str(output).lower().endswith(ORT_SUFFIX)


def ort_table(res: OptimizeResult) -> Table:
    """The ORT-format file, its ONNX Runtime level and the operators its config lists."""
    o = res.ort or {}
    rows = [["file", f"{res.output} ({fmt_bytes(o.get('bytes'))})" if o.get("written") else "not written"],
            ["ONNX Runtime level", o.get("level")],
            ["reduced-operator config", o.get("config") if o.get("written") else "not written"],
            ["operators (domain;opset;ops)", "  ".join(o.get("required_operators") or []) or "-"]]
    return Table("ORT format", ["", ""], rows)


def _check_inputs(model: Path, out: Path, level: str | None) -> tuple[Path, str]:
    from onnxkit.foundation.files import check_io
    from onnxkit.runtime.ort_format import config_path_for, is_ort_file

    if level is not None and level not in LEVELS:
        raise UsageError(f"unknown --level {level!r}; choose from {', '.join(LEVELS)}")
    if model.is_file() and (is_ort_file(model) or model.suffix.lower() == ORT_SUFFIX):
        raise UsageError(f"{model.name} is already in the ORT format; optimize reads an ONNX model "
                         "(give the .onnx it was converted from)")
    config = config_path_for(out)
    check_io([out, config], [model])
    return config, level or "all"


def optimize_to_ort(model_path: str | os.PathLike[str], output: str | os.PathLike[str], *, level: str | None = None,
                    tol: list[str] | None = None, rtol: float | None = None, validate: bool = True,
                    trust: bool = False, probe: bool = False, fp16: bool = False, **passes: Any) -> OptimizeResult:
    """``passes``: optimize_model's graph options (preset, passes, transformer, num_heads,
    hidden_size, opset)."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.passes.large import is_large

    model, out = Path(model_path), Path(output)
    config, level = _check_inputs(model, out, level)
    loaded = load_onnx(model, trust=trust, load_external=False)
    if is_large(loaded.model):
        raise UsageError(f"{model.name} is over 2 GB: an ORT-format file is one flatbuffer and cannot hold it; "
                         "keep the ONNX format (-o model.onnx)")
    specs_model = loaded.model
    del loaded
    with tempfile.TemporaryDirectory(prefix="onnxkit-ort-") as tmp:
        graph_out = Path(tmp) / "model.onnx"
        base = optimize_model(model, graph_out, fp16=fp16, tol=tol, rtol=rtol, validate=False, latency=False,
                              trust=trust, probe=probe, **passes)
        res = base
        res.output = str(out)
        res.notes = [n for n in res.notes if not n.startswith("validation skipped")]
        ort_file = Path(tmp) / "model.ort"
        made_config = _convert(graph_out, ort_file, level)
        res.ort = {"level": level, "bytes": ort_file.stat().st_size, "config": str(config),
                   "required_operators": _required(made_config), "written": False}
        res.size_after = ort_file.stat().st_size
        res.notes.append("the Operators table shows the graph before ONNX Runtime's own optimization; the .ort file "
                         "holds the operators listed under ORT format (and in its config)")
        _check_and_time(res, model, ort_file, specs_model, tol, rtol, fp16, validate)
        if res.passed is False:
            res.notes.append(f"{out.name} was not written: the ORT-format model disagrees with the input")
            return res
        _publish(ort_file, made_config, out, config)
        res.ort["written"] = True
    return res


def _required(config: Path) -> list[str]:
    from onnxkit.runtime.ort_format import required_operators

    return required_operators(config)


def _convert(graph: Path, ort_file: Path, level: str) -> Path:
    from onnxkit.runtime.ort_format import convert
    from onnxkit.runtime.targets_common import first_line, ort_unsupported

    try:
        return convert(graph, ort_file, level=level)
    except Exception as exc:
        missing = ort_unsupported(str(exc))
        what = "; ".join(f"no ONNX Runtime kernel for {op} (node {node or '?'})" for op, node in missing)
        raise ConversionError(f"conversion to the ORT format failed: {what or first_line(exc)}") from None


def _check_and_time(res: OptimizeResult, model: Path, ort_file: Path, graph: Any, tol, rtol, fp16: bool,
                    validate: bool) -> None:
    """The .ort loaded and run by ONNX Runtime next to the input (latency), and compared with it."""
    import warnings

    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.foundation.data import feeds_rows
    from onnxkit.foundation.spec import specs_from_onnx
    from onnxkit.operations.optimize import feeds_label, latency_feeds, validate_pair, validation_rows
    from onnxkit.runtime.bench import bench_models
    from onnxkit.runtime.session import make_session

    specs = specs_from_onnx(graph)
    try:
        sessions = [make_session(model, spinning=False), make_session(ort_file, spinning=False)]
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime could not load the ORT-format file it wrote: {exc}") from None
    try:
        feeds = latency_feeds(specs)
        batch = feeds_rows(feeds)
        timed = bench_models(sessions, {batch: feeds}, iterations=10, warmup=2, names=["input", "ort"])
        res.latency_ms_before = timed.entry("input", batch).stats.p50_ms
        res.latency_ms_after = timed.entry("ort", batch).stats.p50_ms
        res.latency_feeds = feeds_label(feeds)
    except Exception as exc:  # informative only
        res.notes.append(f"latency not measured: {exc}")
    if not validate:
        res.notes.append("validation skipped (--no-validate): the .ort file was loaded but not compared with the input")
        return
    tolerance = make_tolerance(tol, rtol, preset="fp16" if fp16 else "fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = validate_pair(str(model), str(ort_file), specs, tolerance, cand_name="ort")
        except InputError as exc:
            raise ConversionError(f"the ORT-format file does not run like the input: {exc.message}") from None
    res.validated = True
    res.validation = {"passed": v.passed, "samples": v.samples, "tolerance": v.tolerance,
                      "outputs": [o.to_dict() for o in v.outputs], "rows": validation_rows(v.outputs)}
    if not v.passed:
        res.passed = False


def _publish(ort_file: Path, made_config: Path, out: Path, config: Path) -> None:
    from onnxkit.foundation.files import atomic_output, write_text_atomic
    from onnxkit.runtime.ort_format import config_text

    write_text_atomic(config, config_text(made_config, out.name))
    with atomic_output(out) as tmp:
        shutil.copyfile(ort_file, tmp)
