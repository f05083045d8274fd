"""Whether a quantization can do anything, and said so when it did nothing; Gemm made
reachable by the int4 quantizer; the hint that convolutional networks want static int8.

A quantize that quantized nothing used to write a copy of the float model (104% the size)
and exit 0; a scikit-learn model made ONNX Runtime's quantizer fail with "Failed to find
proper ai.onnx domain". Both now stop with exit 1 naming the reason, before anything is
written, and ``onnxkit pipeline`` skips its quantize stage with that reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from onnxkit.errors import CheckFailed

# Ops each mode's quantizer rewrites when their weight is a constant.
QUANTIZABLE = {
    "dynamic": {"MatMul", "Gemm", "Conv", "Gather", "Attention", "LSTM", "EmbedLayerNormalization"},
    "static": {"MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "Attention"},
    "int4": {"MatMul", "Gemm"},
}
# Dynamic int8 turns Conv into ConvInteger, which ONNX Runtime's CPU kernels run far slower
# than float (a 4-conv CNN built in code: 0.11x to 0.3x the fp32 speed); static int8 with
# QLinearConv is the fast path for convolutions.
CONV_SHARE_FOR_HINT = 0.5


class NothingQuantized(CheckFailed):
    """The quantizer was asked for something it could not do on any node of this model."""


def _constants(graph: Any) -> set[str]:
    names = {t.name for t in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


# ONNX Runtime's own fusions (as optimize --level extended saves them) are split back into
# these standard ops before quantizing, so they count as quantizable up front.
_RUNTIME_FUSED = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul"}


def _weighted(graph: Any, ops: set[str]) -> list[Any]:
    consts = _constants(graph)
    return [n for n in graph.node if _RUNTIME_FUSED.get(n.op_type, n.op_type) in ops and n.domain != "ai.onnx.ml"
            and any(i in consts for i in n.input)]


def _ops_summary(graph: Any) -> str:
    hist = Counter((f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in graph.node)
    top = ", ".join(f"{op} x{k}" for op, k in hist.most_common(8))
    return top + (", ..." if len(hist) > 8 else "")


def check_quantizable(model: Any, mode: str) -> None:
    """Refuse (exit 1) a model that has no node ``mode`` quantizes, before any work."""
    ops = QUANTIZABLE.get(mode)
    if ops is None:  # fp16 converts any float node
        return
    if _weighted(model.graph, ops):
        return
    ml = any(n.domain == "ai.onnx.ml" for n in model.graph.node)
    why = (" (scikit-learn, XGBoost and LightGBM models run as ai.onnx.ml operators, which ONNX Runtime's "
           "quantizers do not touch)" if ml else "")
    what = ("no MatMul/Gemm node with constant weights, the only ops --mode int4 quantizes" if mode == "int4" else
            f"no node with constant weights of an op the int8 quantizers rewrite ({'/'.join(sorted(ops))})")
    raise NothingQuantized(
        f"nothing was quantized: the model has {what}{why}; its ops: {_ops_summary(model.graph)}",
        hint="nothing was written: keep the float model (onnxkit optimize may still speed it up)",
    )


def check_something_quantized(count: int, mode: str, base: Any, excluded: dict[str, str]) -> None:
    """After quantizing: zero quantized nodes is a failure with the reason, not a copy of the
    float model passed off as quantized."""
    if count:
        return
    ops = QUANTIZABLE.get(mode, set())
    candidates = [n.name for n in _weighted(base.graph, ops)]
    left = [n for n in candidates if n not in excluded]
    if mode == "fp16":
        reason = "no node computes in float16 after conversion (no float computation to convert, or every node excluded)"
    elif candidates and not left:
        reason = f"all {len(candidates)} quantizable node(s) are excluded (--exclude-nodes/--exclude-ops or the accuracy budget)"
    elif mode == "int4":
        reason = ("the int4 quantizer left every MatMul in float (it needs a constant 2-D weight whose input dimension "
                  f"is at least 16); quantizable nodes: {len(candidates)}")
    else:
        reason = f"ONNX Runtime's {mode} quantizer left all {len(candidates)} candidate node(s) in float"
    raise NothingQuantized(f"nothing was quantized: {reason}", hint="nothing was written")


def gemm_to_matmul(model: Any) -> tuple[Any, int]:
    """Rewrite Gemm nodes with a constant B as MatMul (+ Add): ORT's int4 quantizer only
    reaches MatMul, and its pre-processing fuses every exporter's MatMul + Add into Gemm.
    Returns the model (edited in place) and the number of Gemm nodes rewritten."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes = []
    count = 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        ok = (n.op_type == "Gemm" and n.domain in ("", "ai.onnx") and len(n.input) >= 2 and n.input[1] in inits
              and not attrs.get("transA", 0) and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0)
        if not ok:
            new_nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        wname = f"{n.input[1]}_matmul" if attrs.get("transB", 0) else n.input[1]
        if wname != n.input[1]:
            g.initializer.append(numpy_helper.from_array(w, wname))
        name = n.name or f"gemm{count}"
        has_bias = len(n.input) > 2 and n.input[2]
        mm_out = f"{n.output[0]}_mm" if has_bias else n.output[0]
        new_nodes.append(helper.make_node("MatMul", [n.input[0], wname], [mm_out], name=f"{name}_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=f"{name}_Add"))
        count += 1
    if count:
        del g.node[:]
        g.node.extend(new_nodes)
        used = {i for node in g.node for i in node.input}
        keep = [t for t in g.initializer if t.name in used or t.name in {i.name for i in g.input}]
        del g.initializer[:]
        g.initializer.extend(keep)
    return model, count


def conv_hint(model: Any, mode: str, before_ms: float | None = None, after_ms: float | None = None) -> str | None:
    """For dynamic int8 on a convolutional network: say that static int8 (or --mode auto)
    is the way, with the measured slowdown when there is one."""
    if mode != "dynamic":
        return None
    inits = {t.name: int(np.prod(t.dims)) if t.dims else 1 for t in model.graph.initializer}
    conv = sum(inits.get(n.input[1], 0) for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose") and len(n.input) > 1)
    dense = sum(inits.get(i, 0) for n in model.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input[1:2])
    if not conv or conv < CONV_SHARE_FOR_HINT * (conv + dense):
        return None
    speed = ""
    if before_ms and after_ms:
        speed = f" (here {before_ms / after_ms:.2f}x the float speed)"
    return ("convolutional network: dynamic int8 runs its convolutions as ConvInteger, which ONNX Runtime's CPU "
            f"kernels run slower than float{speed}; static int8 (--mode static --calib-data FILE) is the fast path "
            "for convolutions, and --mode auto times both and keeps the fastest within the accuracy budget")


def skip_when_nothing_quantized(fn: Callable[[Any], None], skipped: str) -> Callable[[Any], None]:
    """For ``onnxkit pipeline``: a quantize stage that has nothing to quantize is skipped, with
    the reason, instead of failing the run."""

    def run(rec: Any) -> None:
        try:
            fn(rec)
        except NothingQuantized as exc:
            rec.status, rec.reason = skipped, exc.message

    return run


def check_finite_weights(model: Any, mode: str) -> None:
    """Refuse (exit 2) a weight the quantizer would read that holds NaN or Inf: ONNX Runtime's
    quantizers fail on it with "scale issue" (dynamic) or write NaN scales, and the float model
    already computes NaN from it, so there is nothing sound to quantize or to measure."""
    from onnx import TensorProto, numpy_helper

    from onnxkit.errors import InputError

    ops = QUANTIZABLE.get(mode)
    if ops is None:
        return
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    for node in _weighted(model.graph, ops):
        for name in node.input[1:]:
            t = inits.get(name)
            if t is None or name in seen or t.data_location == TensorProto.EXTERNAL:
                continue
            seen.add(name)
            try:
                w = numpy_helper.to_array(t)
            except Exception:  # malformed (truncated data): ONNX Runtime's load refuses it, naming why
                continue
            if w.dtype.kind != "f":
                continue
            bad = ~np.isfinite(w)
            if bad.any():
                kinds = ", ".join(k for k, m in (("NaN", np.isnan(w)), ("Inf", np.isinf(w))) if m.any())
                raise InputError(
                    f"weight {name!r} of node {node.name or node.op_type!r} holds {int(bad.sum())} non-finite value(s) "
                    f"({kinds}): the model computes {kinds} from it and no quantization scale can be taken from it",
                    hint="fix or re-export the model; nothing was written",
                )
