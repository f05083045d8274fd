"""float16 conversion: weights and compute in fp16, graph inputs/outputs kept float32,
ops that overflow or lose too much in fp16 kept in float32."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from onnxkit.errors import CheckFailed

# Besides the library's own block list (ML-domain ops, TopK, Range, ...): ops whose fp16
# results overflow (65504) or lose the precision the next op needs.
FP16_UNSAFE_OPS = ["Exp", "Log", "Pow", "Reciprocal", "ReduceSumSquare", "ReduceLogSumExp", "Softplus",
                   "ReduceProd", "CumSum", "Range", "RandomNormal", "RandomUniform"]


def to_fp16(model: Any, *, keep_io_types: bool = True, op_block_list: list[str] | None = None) -> Any:
    from onnxruntime.transformers import float16

    block = list(float16.DEFAULT_OP_BLOCK_LIST) + FP16_UNSAFE_OPS + list(op_block_list or [])
    # Attention masks legitimately hold -inf constants; only values the conversion made
    # non-finite (overflow past 65504) are a problem.
    already = set(non_finite_initializers(model))
    with warnings.catch_warnings():
        # The converter warns once per value it clamps to the fp16 range; checked below instead.
        warnings.simplefilter("ignore")
        out = float16.convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=sorted(set(block)),
                                               disable_shape_infer=False)
    bad = [name for name in non_finite_initializers(out) if name not in already]
    if bad:
        raise CheckFailed(f"fp16 conversion produced NaN/Inf in {len(bad)} weight(s), e.g. {bad[0]}")
    return out


def non_finite_initializers(model: Any) -> list[str]:
    """Names of float initializers and Constant outputs holding NaN or Inf."""
    from onnx import numpy_helper

    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    bad = []
    for name, t in tensors:
        if t.data_type in (1, 10, 11, 16):
            arr = numpy_helper.to_array(t)
            if not np.isfinite(arr.astype(np.float32)).all():
                bad.append(name)
    return bad


def fp16_pass(model: Any) -> tuple[Any, bool]:
    return to_fp16(model), True
