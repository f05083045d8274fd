"""Input dtypes given with --input that contradict what a PyTorch model computes with.

A factory or TorchScript module has no recorded signature; what it does record is the
dtype of its weights. When the model fails on the example inputs and an input whose
dtype differs from the weights' runs once given the weights' dtype, the spec is what
is wrong: a usage error naming the input and both dtypes, instead of PyTorch's
"mat1 and mat2 must have the same dtype".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxkit.errors import InputError, UsageError


def model_float_dtype(module) -> np.dtype | None:
    """The dtype of the module's first floating-point parameter or buffer; None if it has none."""
    from onnxkit.frameworks.torch_pt2 import _np_dtype

    tensors = list(module.parameters()) + list(module.buffers())
    for t in tensors:
        if t.is_floating_point():
            return np.dtype(_np_dtype(t.dtype))
    return None


def promoted_by_input(source: Any, outputs: list) -> UsageError | None:
    """A float input of another precision than the weights that runs anyway (PyTorch
    promotes float32 * float64 to float64) and turns outputs into its own dtype: the
    export would compute in a precision the model was not built for."""
    want = model_float_dtype(source.module)
    if want is None:
        return None
    from onnxkit.frameworks.torch_pt2 import _np_dtype

    produced = {np.dtype(_np_dtype(t.dtype)) for t in outputs if t.is_floating_point()}
    for spec in source.input_specs:
        have = np.dtype(spec.dtype)
        if have.kind == "f" and have != want and have in produced:
            return UsageError(
                f"--input {spec.name} says {have.name}, but the model computes in {want.name} (the dtype of its weights); "
                f"given {have.name}, its outputs become {have.name}",
                hint=f"give {spec.name} as {want.name}: --input {spec.name}:[...]:{want.name}",
            )
    return None


def dtype_contradiction(source: Any, feeds: dict[str, np.ndarray], failure: InputError) -> UsageError | None:
    """The usage error that explains ``failure``, or None when no input's dtype does."""
    want = model_float_dtype(source.module)
    if want is None:
        return None
    for spec in source.input_specs:
        have = np.dtype(spec.dtype)
        if have == want or have.kind not in "biuf":
            continue
        trial = dict(feeds)
        trial[spec.name] = feeds[spec.name].astype(want)
        try:
            source._forward(source._args(trial))
        except InputError:
            continue
        return UsageError(
            f"--input {spec.name} says {have.name}, but the model computes in {want.name} (the dtype of its weights) "
            f"and fails on {have.name} input ({failure.message.split(': ', 1)[-1]})",
            hint=f"give {spec.name} as {want.name}: --input {spec.name}:[...]:{want.name}",
        )
    return None
