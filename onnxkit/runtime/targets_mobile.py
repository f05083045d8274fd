"""The ``mobile`` target: the model converted to ONNX Runtime's ORT format (what the mobile
packages load), run by ONNX Runtime, plus ONNX Runtime's own mobile usability check: which
nodes the NNAPI (Android) and CoreML (iOS) execution providers would take.

The ORT-format file runs here with the same CPU kernels as the full mobile package, which
includes the com.microsoft contrib ops; the NNAPI and CoreML partitions do not, so nodes
outside them run on the phone's CPU: they are reported, not failed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from onnxkit.runtime.targets_common import first_line, ort_unsupported, reply, run_ort_session

# ONNX Runtime's usability checker config for CoreML's ML Program format (the current one).
_COREML_CONFIG = "coreml_supported_mlprogram_ops.md"


def availability() -> str | None:
    import importlib.util

    if importlib.util.find_spec("onnxruntime.tools.convert_onnx_models_to_ort") is None:
        return "this onnxruntime build has no onnxruntime.tools (a minimal build?)"
    return None


def convert(model_path: str, out_dir: Path) -> tuple[Path, Path | None]:
    """Convert ``model_path`` to the ORT format in ``out_dir``; returns (the .ort file, its
    reduced-operator config). The same conversion as ``optimize -o model.ort``
    (:mod:`onnxkit.runtime.ort_format`, what ONNX Runtime's converter does with its fixed
    optimizations): ONNX Runtime reads the model, external data included, where it lies."""
    from onnxkit.runtime.ort_format import convert as to_ort

    dest = out_dir / "model.ort"
    return dest, to_ort(model_path, dest, level="all")


def _partitions(model_path: str) -> dict:
    """NNAPI and CoreML coverage, as ONNX Runtime's usability checker estimates it."""
    import onnx
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    model = onnx.load(model_path)
    out: dict = {}
    for name, check in (("nnapi", lambda m: uc.check_nnapi_partitions(m, require_fixed_input_sizes=False)),
                        ("coreml", lambda m: uc.check_coreml_partitions(m, False, _COREML_CONFIG))):
        try:
            info = check(model)
        except Exception as exc:
            out[name] = {"error": first_line(exc)}
            continue
        out[name] = {
            "nodes": int(info.num_nodes), "supported_nodes": int(info.num_supported_nodes),
            "partitions": int(info.num_partitions), "unsupported_ops": sorted(info.unsupported_ops),
        }
    return out


def _required_ops(config: Path | None) -> list[str]:
    from onnxkit.runtime.ort_format import required_operators

    return required_operators(config) if config is not None and config.is_file() else []


def run(model_path: str, feeds: list[dict], precision: str | None, options: dict) -> dict:
    import logging

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    notes = [f"--precision {precision} ignored: the ORT format runs the graph's own types"] if precision not in (None, "f32") else []
    tmp = Path(tempfile.mkdtemp(prefix="onnxkit-mobile-"))
    try:
        try:
            ort_file, config = convert(model_path, tmp)
        except Exception as exc:
            return reply(stage="convert", error="conversion to the ORT format failed: " + first_line(exc),
                         unsupported=ort_unsupported(str(exc)), notes=notes)
        extra = {"ort_bytes": ort_file.stat().st_size, "required_operators": _required_ops(config),
                 "partitions": _partitions(model_path)}
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sess = ort.InferenceSession(str(ort_file), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            return reply(stage="load", error="ONNX Runtime could not load the .ort file: " + first_line(exc),
                         unsupported=ort_unsupported(str(exc)), notes=notes, extra=extra)
        try:
            outs, latency = run_ort_session(sess, feeds)
        except Exception as exc:
            return reply(stage="run", error=first_line(exc), notes=notes, extra=extra)
        return reply(outputs=outs, precision="f32", latency_ms=latency, notes=notes, extra=extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
