"""``--precision f32|bf16|f16``: the inference precision a runtime that chooses one
(OpenVINO) is asked for, and the tolerance its answers are held to.

OpenVINO's CPU plugin computes a float32 model in bfloat16 by default on a CPU that does
bf16 natively; that is what the user deploys, so validate, bench, run and targets run it
that way unless told otherwise, and say so. A narrower precision moves answers by 1e-2 and
more, which the float32 limits would fail on every correct run: without a tolerance flag,
such a run is held to the ``fp16`` preset, with a note."""

from __future__ import annotations

from typing import Any

from onnxkit.errors import UsageError

PRECISIONS = ("f32", "bf16", "f16")


def check_precision(value: str | None) -> str | None:
    """``--precision`` as given, or exit 2 naming the choices."""
    if value is None:
        return None
    name = value.strip().lower()
    if name not in PRECISIONS:
        raise UsageError(f"unknown --precision {value!r}; choose from {', '.join(PRECISIONS)}")
    return name


# The int8 preset bounds float vs int8 (a quantization error: cosine 0.99, 20% of the norm).
# Two runtimes running the same quantized graph differ where they round a tie apart, and
# dynamic quantization carries that into the next layer's scales. Measured on an int8 MiniLM
# (random ids, against ONNX Runtime CPU): OpenVINO at f32 cosine 0.99995, onnxruntime-web's
# wasm kernels 0.998 (relative error 0.06), OpenVINO at its bf16 default 0.986 (0.165: as far
# as a second quantization, which must not pass); on QDQ Conv and Gemm, one int8 step (0.05)
# on 0.2-0.4% of elements. The element-wise bound (narrow rows) admits an output step or two,
# not the int8 preset's 0.5.
QUANTIZED_SAME_GRAPH = {"atol": 0.1, "rtol": 0.1, "min_cosine": 0.995, "max_rel_error": 0.1}


def same_quantized_graph() -> Any:
    from dataclasses import replace

    from onnxkit.foundation.compare import make_tolerance

    return replace(make_tolerance(preset="int8"), **QUANTIZED_SAME_GRAPH)


_HALF_TYPES = (10, 16)  # TensorProto.FLOAT16, BFLOAT16


def is_half(model: Any) -> bool:
    """True when the graph computes in float16/bfloat16 (half weights, or half inputs/outputs):
    two correct runtimes then differ by half-precision steps (measured: onnxruntime-web vs ONNX
    Runtime CPU on a float16 MiniLM, 0.002 at magnitude 2-4). A lone Cast to half in a float32
    graph (a mask) does not loosen the comparison."""
    g = model.graph
    if any(t.data_type in _HALF_TYPES for t in g.initializer):
        return True
    return any(v.type.tensor_type.elem_type in _HALF_TYPES for v in [*g.input, *g.output])


def tolerance_for(used: str | None, tolerance: Any, given: bool, quantized: bool = False,
                  half: bool = False) -> tuple[Any, str | None]:
    """The user's tolerance when given. Otherwise a quantized model gets the int8 preset and a
    run computed in bf16/f16 the fp16 preset; the note says which and why (None: unchanged)."""
    if given:
        return tolerance, None
    from onnxkit.foundation.compare import make_tolerance

    if quantized:
        return same_quantized_graph(), ("compared with the tolerance for one quantized graph on two runtimes (cosine "
                                        f"{QUANTIZED_SAME_GRAPH['min_cosine']}, relative error "
                                        f"{QUANTIZED_SAME_GRAPH['max_rel_error']}, element-wise "
                                        f"{QUANTIZED_SAME_GRAPH['atol']}): the model is quantized")
    if used not in (None, "f32"):
        return make_tolerance(preset="fp16"), f"compared with the fp16 tolerance preset because it ran in {used}"
    if half:
        return make_tolerance(preset="fp16"), "compared with the fp16 tolerance preset: the model computes in float16"
    return tolerance, None


def ignored_note(precision: str | None, runtime: str = "ONNX Runtime") -> list[str]:
    """The note for --precision given to a runtime that runs the graph's own types."""
    if precision in (None, "f32"):
        return []
    return [f"--precision {precision} ignored: {runtime} runs the graph's own types (only --provider openvino chooses one)"]
