"""Transformer fusions (attention, LayerNorm, SkipLayerNorm, GELU, bias) for ONNX Runtime.

Two fusers exist and each matches graphs the other misses: onnxruntime.transformers'
model optimizers match TorchScript-style exports; onnxscript's ORT fusion rewriter matches
torch.export (dynamo) exports, attention included. Both are tried and the graph with fewer
nodes is kept; the report says which fusions applied and which expected ones did not.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxkit.errors import ConversionError, UsageError

log = logging.getLogger(__name__)

# model types onnxruntime.transformers knows; "auto" detects BERT-like graphs.
MODEL_TYPES = ("auto", "bert", "gpt2", "bart", "t5", "vit", "clip", "unet", "vae", "phi", "conformer", "swin", "sam2", "mmdit")

ATTENTION_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention")
LAYERNORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                 "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization")
GELU_OPS = ("Gelu", "FastGelu", "BiasGelu", "GemmFastGelu", "QuickGelu")
FUSED_OPS = ATTENTION_OPS + LAYERNORM_OPS + GELU_OPS + ("BiasAdd", "BiasSplitGelu", "RotaryEmbedding", "SkipGroupNorm")


@dataclass
class TransformerReport:
    model_type: str = ""
    num_heads: int = 0
    hidden_size: int = 0
    fuser: str = ""  # which fuser's graph was kept
    candidates: dict[str, int] = field(default_factory=dict)  # fuser -> node count (or -1 failed)
    fused_ops: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "what: likely reason"
    errors: dict[str, str] = field(default_factory=dict)


def _ops(model: Any) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _int_constants(model: Any) -> list[np.ndarray]:
    from onnx import numpy_helper

    out = []
    for t in model.graph.initializer:
        if t.data_type == 7 and len(t.dims) == 1 and 0 < t.dims[0] <= 8:
            out.append(numpy_helper.to_array(t))
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == 7 and len(a.t.dims) == 1 and 0 < a.t.dims[0] <= 8:
                    out.append(numpy_helper.to_array(a.t))
                elif a.name == "value_ints" and 0 < len(a.ints) <= 8:
                    out.append(np.array(a.ints))
    return out


def _named_int_constants(model: Any) -> list[tuple[str, np.ndarray]]:
    from onnx import numpy_helper

    out = []
    for t in model.graph.initializer:
        if t.data_type == 7 and len(t.dims) <= 1 and (not t.dims or t.dims[0] == 1):
            out.append((t.name, numpy_helper.to_array(t)))
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == 7 and len(a.t.dims) <= 1:
                    out.append((n.output[0], numpy_helper.to_array(a.t)))
    return out


def detect_hidden_size(model: Any) -> int:
    """The width of the LayerNorm scales (the most common one), 0 when there is none."""
    inits = {t.name: t for t in model.graph.initializer}
    widths: collections.Counter = collections.Counter()
    for n in model.graph.node:
        if n.op_type in ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"):
            scale = n.input[2] if n.op_type == "SkipLayerNormalization" else n.input[1] if len(n.input) > 1 else ""
            if scale in inits and len(inits[scale].dims) == 1:
                widths[int(inits[scale].dims[0])] += 1
    if not widths:
        # Decomposed LayerNorm (ReduceMean ... Mul(scale) Add(bias)): fall back on the widest
        # square-ish MatMul weight, whose first dim is the hidden size in BERT-class models.
        for t in model.graph.initializer:
            if len(t.dims) == 2 and t.dims[0] == t.dims[1]:
                widths[int(t.dims[0])] += 1
    return widths.most_common(1)[0][0] if widths else 0


def detect_num_heads(model: Any, hidden: int) -> int:
    """Heads from the reshape targets [.., heads, head_dim] or the attention scale 1/sqrt(head_dim)."""
    if hidden <= 0:
        return 0
    votes: collections.Counter = collections.Counter()
    for arr in _int_constants(model):
        vals = [int(v) for v in arr.tolist()]
        for a, b in zip(vals, vals[1:]):
            if a > 0 and b > 0 and a * b == hidden and a < b:
                votes[a] += 1
    # Dynamic-shape exports build the target with Concat(batch, seq, [heads], [head_dim]).
    consts = {}
    for arr_name, arr in _named_int_constants(model):
        if arr.size == 1:
            consts[arr_name] = int(arr.reshape(-1)[0])
    for n in model.graph.node:
        if n.op_type == "Concat":
            vals = [consts.get(i) for i in n.input]
            for a, b in zip(vals, vals[1:]):
                if a and b and a > 0 and b > 0 and a * b == hidden and a < b:
                    votes[a] += 1
    if votes:
        return votes.most_common(1)[0][0]
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.data_type == 1 and len(t.dims) == 0:
            v = float(numpy_helper.to_array(t))
            # scale on scores (1/sqrt(d)), or split over q and k (1/d**0.25 each)
            for head_dim in (v * v, 1.0 / (v * v) if v else 0.0, 1.0 / v**4 if v else 0.0):
                d = int(round(head_dim))
                if d > 1 and abs(head_dim - d) < 1e-3 and hidden % d == 0:
                    votes[hidden // d] += 1
    return votes.most_common(1)[0][0] if votes else 0


def looks_like_bert(model: Any) -> bool:
    ops = _ops(model)
    has_norm = ops["LayerNormalization"] > 0 or ops["ReduceMean"] >= 2
    has_attn = ops["Softmax"] > 0 or any(ops[o] for o in ATTENTION_OPS)
    return has_norm and has_attn and ops["MatMul"] >= 4


def _with_onnxruntime_transformers(model: Any, model_type: str, heads: int, hidden: int) -> Any:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: only the python fusions; ORT's own level stays a separate, explicit choice.
    # onnxruntime.transformers prints shape-inference failures on stdout; with --json,
    # stdout must hold only onnxkit's document.
    with contextlib.redirect_stdout(sys.stderr):
        opt = optimize_model(model, model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=0)
    return opt.model


def _with_onnxscript(model: Any) -> Any:
    import onnx_ir as ir
    from onnxscript.rewriter import ort_fusions

    # onnx_ir logs a full traceback when ONNX shape inference meets com.microsoft ops it
    # cannot type; that is expected here and not the user's concern.
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        irm = ir.serde.deserialize_model(model)
        out, _counts = ort_fusions.optimize_for_ort(irm)
        return ir.serde.serialize_model(out)
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)


def _missing(ops: collections.Counter, model_type: str, report: TransformerReport) -> list[str]:
    out = []
    if model_type not in ("bert", "gpt2", "bart", "t5", "vit", "phi", "swin", "conformer"):
        return out
    if not any(ops[o] for o in ATTENTION_OPS):
        why = "attention subgraph not matched"
        if report.num_heads == 0:
            why += " (head count could not be detected; pass --num-heads)"
        else:
            why += " (mask or scale expressed in a form neither fuser knows, e.g. a decomposed SDPA)"
        out.append(f"Attention: {why}")
    if not any(ops[o] for o in LAYERNORM_OPS):
        out.append("LayerNorm: no LayerNormalization pattern matched (a custom or RMS norm?)")
    elif not any(ops[o] for o in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")):
        out.append("SkipLayerNorm: residual Add not adjacent to the LayerNorm")
    if model_type in ("bert", "vit", "gpt2", "bart", "t5") and not any(ops[o] for o in GELU_OPS):
        if ops["Erf"] or ops["Tanh"]:
            out.append("GELU: an Erf/Tanh GELU remained unfused (shape of the formula differs)")
    return out


def fuse_transformer(model: Any, model_type: str = "auto", num_heads: int = 0, hidden_size: int = 0) -> tuple[Any, TransformerReport]:
    """Fuse transformer subgraphs into ORT's contrib ops; returns the best graph and a report."""
    if model_type not in MODEL_TYPES:
        raise UsageError(f"unknown --transformer {model_type!r}; choose from {', '.join(MODEL_TYPES)}")
    rep = TransformerReport()
    if model_type == "auto":
        if not looks_like_bert(model):
            rep.model_type = "none"
            rep.missing.append("no transformer detected (no LayerNorm + Softmax + MatMul structure); nothing fused")
            return model, rep
        model_type = "bert"
    rep.model_type = model_type
    rep.hidden_size = hidden_size or detect_hidden_size(model)
    rep.num_heads = num_heads or detect_num_heads(model, rep.hidden_size)
    before = len(model.graph.node)
    rep.candidates["input"] = before
    best, best_n, best_name = model, before, "none"
    tries = [("onnxruntime.transformers", lambda: _with_onnxruntime_transformers(model, model_type, rep.num_heads, rep.hidden_size))]
    if model_type in ("bert", "gpt2", "bart", "t5", "vit", "phi"):
        tries.append(("onnxscript.rewriter.ort_fusions", lambda: _with_onnxscript(model)))
    for name, fn in tries:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cand = fn()
        except Exception as exc:  # a fuser that chokes on a graph leaves the other one
            rep.errors[name] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            rep.candidates[name] = -1
            log.debug("transformer fuser %s failed: %s", name, exc)
            continue
        n = len(cand.graph.node)
        rep.candidates[name] = n
        if n < best_n:
            best, best_n, best_name = cand, n, name
    if rep.errors and len(rep.errors) == len(tries):
        raise ConversionError(f"pass transformer ({model_type}) failed in every fuser: "
                              + "; ".join(f"{k}: {v}" for k, v in rep.errors.items()))
    rep.fuser = best_name
    ops = _ops(best)
    rep.fused_ops = {o: ops[o] for o in FUSED_OPS if ops[o]}
    rep.missing.extend(_missing(ops, model_type, rep))
    return best, rep


def split_skip_layernorm(model: Any) -> tuple[Any, bool]:
    """Rewrite com.microsoft SkipLayerNormalization as Add (+ bias Add) + LayerNormalization.

    The two compute the same values; which is faster depends on the ONNX Runtime build
    (measured with ORT 1.32 on AVX2: 1.25 ms fused vs 0.40 ms split at [8,128,384], about
    9% of MiniLM int8). ``optimize --auto`` times both rather than assuming."""
    from onnx import helper

    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    if opset < 17:  # LayerNormalization is a standard op from opset 17
        return model, False
    used = ({name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}) - {""}
    nodes, changed = [], False
    for n in model.graph.node:
        outs = list(n.output) + [""] * (4 - len(n.output))
        if n.op_type != "SkipLayerNormalization" or n.domain != "com.microsoft" or outs[1] in used or outs[2] in used:
            nodes.append(n)
            continue
        ins = list(n.input) + [""] * (5 - len(n.input))
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-12)
        total = outs[3] or f"{n.name}_sum"
        if ins[4]:
            nodes.append(helper.make_node("Add", [ins[0], ins[1]], [f"{n.name}_skip"], name=f"{n.name}_add_skip"))
            nodes.append(helper.make_node("Add", [f"{n.name}_skip", ins[4]], [total], name=f"{n.name}_add_bias"))
        else:
            nodes.append(helper.make_node("Add", [ins[0], ins[1]], [total], name=f"{n.name}_add_skip"))
        ln_inputs = [total, ins[2]] + ([ins[3]] if ins[3] else [])
        nodes.append(helper.make_node("LayerNormalization", ln_inputs, [outs[0]], name=f"{n.name}_ln", axis=-1, epsilon=eps))
        changed = True
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model, changed
