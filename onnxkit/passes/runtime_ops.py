"""Undo ONNX Runtime's CPU fusions that hide standard ops from other tools.

``optimize --level extended`` (and presets that include it) save com.microsoft FusedConv and
FusedGemm: a Conv or Gemm with its activation (and, for FusedConv, a residual Add) folded in.
The quantizers only know Conv and Gemm, so these stay float: measured on a residual CNN,
static int8 of such a graph ran at 1.06x its input instead of 1.65x. Splitting them back is
exact; ONNX Runtime fuses the quantized graph again when it loads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# FusedConv/FusedGemm "activation" values and how to write each as a standard node.
_SIMPLE = {"Relu", "Tanh", "Sigmoid"}


def _activation_nodes(kind: str, params: list[float], src: str, dst: str, name: str, inits: list[Any],
                      dtype: Any = np.float32) -> list[Any] | None:
    from onnx import helper, numpy_helper

    if kind in _SIMPLE:
        return [helper.make_node(kind, [src], [dst], name=name)]
    if kind == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [src], [dst], name=name, alpha=params[0] if params else 0.01)]
    if kind == "HardSigmoid":
        alpha, beta = (params + [0.2, 0.5][len(params):])[:2]
        return [helper.make_node("HardSigmoid", [src], [dst], name=name, alpha=alpha, beta=beta)]
    if kind == "Clip" and len(params) == 2:
        lo, hi = f"{name}_min", f"{name}_max"
        inits.append(numpy_helper.from_array(np.array(params[0], dtype), lo))  # Clip's bounds take the input's type
        inits.append(numpy_helper.from_array(np.array(params[1], dtype), hi))
        return [helper.make_node("Clip", [src, lo, hi], [dst], name=name)]
    return None


def unfuse_runtime_ops(model: Any) -> tuple[Any, int]:
    """Rewrite com.microsoft FusedConv as Conv [+ Add(Z)] + activation and FusedGemm as Gemm +
    activation. Activations with no standard equivalent leave the node as it is. Returns the
    model and how many nodes were rewritten."""
    from onnx import helper

    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    inits = {t.name: t for t in model.graph.initializer}
    nodes: list[Any] = []
    new_inits: list[Any] = []
    count = 0
    for n in model.graph.node:
        if n.domain != "com.microsoft" or n.op_type not in ("FusedConv", "FusedGemm") or (opset < 11 and n.op_type == "FusedConv"):
            nodes.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        kind = attrs.pop("activation", b"")
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        params = [float(p) for p in attrs.pop("activation_params", [])]
        for key in [k for k in attrs if k.startswith("activation_")]:  # FusedGemm's activation_alpha/beta/gamma
            params.append(float(attrs.pop(key)))
        base = n.name or f"{n.op_type}_{count}"
        pre = f"{base}_pre_activation"
        extra_inits: list[Any] = []
        weight = inits.get(n.input[1]) if len(n.input) > 1 else None
        dtype = helper.tensor_dtype_to_np_dtype(weight.data_type) if weight is not None else np.float32
        act = _activation_nodes(kind, params, pre, n.output[0], f"{base}_{kind.lower()}", extra_inits, dtype)
        if act is None or (n.op_type == "FusedGemm" and kind not in _SIMPLE):
            nodes.append(n)  # FusedGemm's parameters are named attributes; only the plain ones are mapped
            continue
        ins = list(n.input)
        core_op = "Conv" if n.op_type == "FusedConv" else "Gemm"
        if core_op == "Conv" and len(ins) > 3 and ins[3]:  # Z: a residual added before the activation
            summed = f"{base}_conv"
            nodes.append(helper.make_node("Conv", ins[:3], [summed], name=f"{base}_conv", **attrs))
            nodes.append(helper.make_node("Add", [summed, ins[3]], [pre], name=f"{base}_add"))
        else:
            nodes.append(helper.make_node(core_op, ins[:3], [pre], name=f"{base}_{core_op.lower()}", **attrs))
        nodes.extend(act)
        new_inits.extend(extra_inits)
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.extend(new_inits)
    return model, count
