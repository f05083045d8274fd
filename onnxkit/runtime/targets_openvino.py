"""The ``openvino`` target: Intel's OpenVINO runtime (the ``openvino`` pip package, extra
``onnxkit[openvino]``) reading the ONNX file directly and compiling it for its CPU plugin.

OpenVINO picks its own inference precision: on a CPU with AVX-512 BF16 or AMX it compiles a
float32 model to bfloat16 unless told otherwise, which moves answers by 1e-2 and more. The
precision the compiled model reports is what this target says it used; ``--precision f32``
sets ``INFERENCE_PRECISION_HINT`` to force float32."""

from __future__ import annotations

import importlib.util
import re

from onnxkit.runtime.targets_common import first_line, reply, timed

DEVICE = "CPU"
# onnxkit's names -> OpenVINO's INFERENCE_PRECISION_HINT values, and back.
HINTS = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
_TYPE_NAMES = {"f32": "f32", "bf16": "bf16", "f16": "f16", "float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def availability() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "the openvino package is not installed (pip install 'onnxkit[openvino]')"
    return None


def precision_name(value: object) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``) -> f32 / bf16 / f16."""
    name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return _TYPE_NAMES.get(str(name).lower(), str(name))


def default_precision() -> str | None:
    """The precision OpenVINO's CPU plugin picks on this machine when not told (None if unknown)."""
    try:
        import openvino as ov

        return precision_name(ov.Core().get_property(DEVICE, "INFERENCE_PRECISION_HINT"))
    except Exception:
        return None


# The CPU features that make OpenVINO's CPU plugin compute in a narrower type by default.
_NATIVE = {"bf16": ("AVX512-BF16", "AMX-BF16"), "f16": ("AVX512-FP16", "AMX-FP16", "FP16")}


def default_reason(used: str) -> str:
    """Why OpenVINO picked ``used`` when nobody asked for a precision (one clause)."""
    try:
        from onnxkit.foundation.hostfacts import host_facts

        have = [name for name in _NATIVE.get(used, ()) if host_facts().has(name)]
    except Exception:
        have = []
    why = f"this CPU computes {used} natively ({', '.join(have)})" if have else f"it computes {used} natively on this CPU"
    return f"OpenVINO's default precision, picked because {why}"


def not_honoured(asked: str, used: str) -> str:
    """OpenVINO's CPU plugin takes the hint as a wish: without native support for the type
    asked it compiles to another one, silently."""
    return (f"--precision {asked} asked, but OpenVINO computed in {used}: its CPU plugin falls back to what this CPU "
            f"computes natively")


_NO_RULE = re.compile(r"No conversion rule found for operations?: (?P<ops>[^\n]+)")


def _error_text(exc: BaseException) -> str:
    """OpenVINO's messages start with the C++ file and line; the useful line comes later."""
    text = str(exc)
    m = _NO_RULE.search(text)
    if m:
        return "no conversion rule for " + m["ops"].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not re.match(r"^(Exception from|Check '.*' failed at) ", ln.strip())]
    return (lines[-1] if lines else first_line(exc))[:400]


def _read_failures(exc: BaseException) -> list[list[str]]:
    m = _NO_RULE.search(str(exc))
    return [[op.strip(), ""] for op in m["ops"].split(",")] if m else []


def _unsupported(core, model) -> list[list[str]]:
    """[op type, node name] of the operations the CPU plugin says it cannot take."""
    try:
        placed = core.query_model(model, DEVICE)
    except Exception:
        return []
    return [[op.get_type_name(), op.get_friendly_name()] for op in model.get_ordered_ops()
            if op.get_friendly_name() not in placed and op.get_type_name() not in ("Parameter", "Result", "Constant")]


def run(model_path: str, feeds: list[dict], precision: str | None, options: dict) -> dict:
    """Read, compile and run ``model_path`` with OpenVINO on its CPU plugin."""
    import numpy as np

    notes: list[str] = []
    try:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(model_path)
    except Exception as exc:
        return reply(stage="convert", error="OpenVINO could not read the ONNX model: " + _error_text(exc),
                     unsupported=_read_failures(exc))
    unsupported = _unsupported(core, model)
    try:
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision]} if precision else {}
        compiled = core.compile_model(model, DEVICE, config)
    except Exception as exc:
        return reply(stage="compile", error="OpenVINO could not compile the model for CPU: " + _error_text(exc),
                     unsupported=unsupported)
    used = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if precision is None and used != "f32":
        notes.append(f"OpenVINO chose {used}: {default_reason(used)}; --precision f32 forces float32")
    elif precision is not None and used != precision:
        notes.append(not_honoured(precision, used))
    names = [o.get_any_name() for o in compiled.outputs]
    request = compiled.create_infer_request()
    outs = []
    try:
        for f in feeds:
            result = request.infer(f)
            outs.append({n: np.array(result[compiled.outputs[i]]) for i, n in enumerate(names)})
        latency = timed(lambda: request.infer(feeds[0])) if feeds else None
    except Exception as exc:
        return reply(stage="run", error="OpenVINO failed to run the model: " + _error_text(exc), precision=used,
                     unsupported=unsupported, notes=notes)
    return reply(outputs=outs, precision=used, latency_ms=latency, unsupported=unsupported, notes=notes,
                 extra={"openvino": ov.__version__.split("-")[0]})
