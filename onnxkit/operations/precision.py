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


def tolerance_for(used: str | None, tolerance: Any, given: bool, quantized: bool = False) -> tuple[Any, str | None]:
    """The user's tolerance when given. Otherwise a quantized model gets the int8 preset and a
    run computed in bf16/f16 the fp16 preset; the note says which and why (None: unchanged)."""
    if given:
        return tolerance, None
    from onnxkit.foundation.compare import make_tolerance

    if quantized:
        return make_tolerance(preset="int8"), "compared with the int8 tolerance preset: the model is quantized"
    if used in (None, "f32"):
        return tolerance, None
    return make_tolerance(preset="fp16"), f"compared with the fp16 tolerance preset because it ran in {used}"


def ignored_note(precision: str | None, runtime: str = "ONNX Runtime") -> list[str]:
    """The note for --precision given to a runtime that runs the graph's own types."""
    if precision in (None, "f32"):
        return []
    return [f"--precision {precision} ignored: {runtime} runs the graph's own types (only --provider openvino chooses one)"]
