"""Roofline bounds: how fast a model could run if every GEMM ran at this machine's measured peak.

The work is counted from the ONNX file: every MatMul/Gemm/Conv and their int8, fused and
contrib forms, attention's activation products (Q.K^T and .V) included, with shapes inferred
at the benchmark's batch. The peak is measured in the same run, by timing one-op ONNX models
at the model's own GEMM shapes in ONNX Runtime, in fp32 and in int8 (u8 activations x s8
weights, the kernel ORT's quantizers produce), with 1 thread and with all threads.

bound = sum(work) / peak (int8 work at the int8 peak, float work at the fp32 peak);
efficiency = bound / measured latency. Everything else the model does (softmax, norms,
quantizing activations, memory traffic) is outside the bound, so efficiency is the share of
the time spent doing GEMM work at full speed.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Op types whose GEMM runs on integer kernels in ONNX Runtime.
INT8_OPS = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat", "QGemm"}
MATMUL_OPS = {"MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul",
              "MatMulIntegerToFloat", "MatMulNBits"}
GEMM_OPS = {"Gemm", "FusedGemm", "QGemm"}
# Conv-like op -> index of its weight input.
CONV_WEIGHT = {"Conv": 1, "FusedConv": 1, "NhwcConv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
ATTENTION_OPS = {"Attention", "QAttention", "MultiHeadAttention"}
# Ops that do GEMM work this module does not count; listed so a report can say so.
UNCOUNTED = {"Einsum", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention", "SparseAttention",
             "DecoderMaskedMultiHeadAttention", "LongformerAttention", "QOrderedAttention", "GemmFastGelu"}


@dataclass
class Gemm:
    """One GEMM-like product of a node: ``ops`` = 2 x multiply-adds; ``probe`` describes a
    one-op model of the same shape, for measuring the rate at that shape."""

    node: str
    op_type: str
    dtype: str          # "int8" or "float"
    ops: int
    probe: tuple


@dataclass
class Work:
    gemms: list[Gemm] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)   # "node (op type): why"

    def ops(self, dtype: str | None = None) -> int:
        return sum(g.ops for g in self.gemms if dtype is None or g.dtype == dtype)

    def by_op_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.gemms:
            out[g.op_type] = out.get(g.op_type, 0) + g.ops
        return out


# ---------------------------------------------------------------- shapes

def _fixed_model(model: Any, input_shapes: dict[str, tuple[int, ...]]) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        shape = input_shapes.get(inp.name)
        if shape is None:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ValueError(f"input {inp.name} has rank {len(dims)}, got shape {shape}")
        for d, v in zip(dims, shape):
            d.ClearField("dim_param")
            d.dim_value = int(v)
    return m


def infer_shapes(model: Any, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Every tensor's concrete shape at these input shapes (where it can be inferred).
    ONNX Runtime's symbolic inference knows the contrib ops (Attention, FusedConv, ...);
    ONNX's own is the fallback."""
    import onnx

    import contextlib
    import tempfile

    m = _fixed_model(model, input_shapes)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        # When it cannot finish it saves the model, with external data, into the working
        # directory: a scratch one keeps those files out of the user's folder.
        with tempfile.TemporaryDirectory(prefix="onnxkit-shapes-") as scratch, contextlib.chdir(scratch):
            inferred = SymbolicShapeInference.infer_shapes(m, auto_merge=True, guess_output_rank=False)
    except Exception:  # an op it cannot infer stops it: ONNX's inference still gives most shapes
        inferred = onnx.shape_inference.infer_shapes(m)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if all(isinstance(d, int) and d > 0 for d in dims):
            shapes[vi.name] = tuple(dims)
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def shapes_by_running(model: Any, input_shapes: dict[str, tuple[int, ...]], names: set[str]) -> dict[str, tuple[int, ...]]:
    """The shapes of ``names`` from one ONNX Runtime run on zeros: for graphs whose ops no
    shape inference knows (an ORT-level graph with FusedConv, say). Only those tensors are
    added as outputs, so memory stays that of one inference."""
    import onnx
    from onnx import helper

    from onnxkit.runtime.session import ort

    m = _fixed_model(model, input_shapes)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - have))
    sess = ort().InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in m.graph.input:
        if i.name in input_shapes:
            dtype = helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            feeds[i.name] = np.zeros(input_shapes[i.name], dtype=dtype)
    outs = sess.run(None, feeds)
    return {o.name: tuple(np.shape(v)) for o, v in zip(sess.get_outputs(), outs) if o.name in names}


# ---------------------------------------------------------------- counting

def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _prod(xs: Any) -> int:
    return int(math.prod(int(x) for x in xs))


def _qdq_fed(node: Any, producers: dict[str, Any], inputs: list[int]) -> bool:
    """A float MatMul/Conv whose data and weight both come from DequantizeLinear: ORT fuses
    the QDQ pattern into its int8 kernel."""
    ins = list(node.input)
    return all(i < len(ins) and ins[i] and getattr(producers.get(ins[i]), "op_type", "") == "DequantizeLinear"
               for i in inputs)


def _matmul_like(node: Any, S: dict, dtype: str) -> list[Gemm]:
    op = node.op_type
    a = S.get(node.input[0])
    y = S.get(node.output[0])
    if op == "MatMulNBits":
        k, n = int(_attr(node, "K")), int(_attr(node, "N"))
        if a is None:
            return []
        m = _prod(a[:-1])
        return [Gemm(node.name, op, "int8" if _attr(node, "accuracy_level", 0) == 4 else "float", 2 * m * k * n,
                     ("matmul", (m, k), (k, n)))]
    b_idx = 3 if op == "QLinearMatMul" else 1
    b = S.get(node.input[b_idx]) if len(node.input) > b_idx else None
    if a is None or b is None:
        return []
    trans_a, trans_b = bool(_attr(node, "transA", 0)), bool(_attr(node, "transB", 0))
    a2 = a if len(a) >= 2 else (1, *a)
    b2 = b if len(b) >= 2 else (*b, 1)
    if trans_a:
        a2 = (*a2[:-2], a2[-1], a2[-2])
    if trans_b:
        b2 = (*b2[:-2], b2[-1], b2[-2])
    m, k, n = a2[-2], a2[-1], b2[-1]
    batch = np.broadcast_shapes(tuple(a2[:-2]), tuple(b2[:-2])) if (len(a2) > 2 or len(b2) > 2) else ()
    if y is not None and _prod(y) != _prod(batch) * m * n:
        return []  # a layout this counter does not model (e.g. transBatch): not guessed
    return [Gemm(node.name, op, dtype, 2 * _prod(batch) * m * k * n,
                 ("matmul", (*batch, m, k) if batch else (m, k), (k, n) if not batch or len(b) == 2 else (*batch, k, n)))]


def _gemm(node: Any, S: dict, dtype: str) -> list[Gemm]:
    a, b = S.get(node.input[0]), S.get(node.input[1])
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return []
    m, k = (a[1], a[0]) if _attr(node, "transA", 0) else a
    n = b[0] if _attr(node, "transB", 0) else b[1]
    return [Gemm(node.name, node.op_type, dtype, 2 * m * k * n, ("matmul", (m, k), (k, n)))]


def _conv(node: Any, S: dict, dtype: str) -> list[Gemm]:
    w_idx = CONV_WEIGHT[node.op_type]
    x, w, y = S.get(node.input[0]), S.get(node.input[w_idx]), S.get(node.output[0])
    if x is None or w is None or y is None:
        return []
    # Each output element is one dot product over the weight's (in-channels/group x kernel).
    # ConvTranspose scatters instead: each input element meets a slice of the kernel.
    macs = _prod(x) * _prod(w[1:]) if node.op_type == "ConvTranspose" else _prod(y) * _prod(w[1:])
    attrs = {k: _attr(node, k) for k in ("strides", "pads", "dilations", "group", "auto_pad") if _attr(node, k) is not None}
    attrs = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in attrs.items()}  # hashable: probes are dict keys
    kind = "convT" if node.op_type == "ConvTranspose" else "conv"
    return [Gemm(node.name, node.op_type, dtype, 2 * macs, (kind, tuple(x), tuple(w), tuple(sorted(attrs.items(), key=str))))]


def _products(node: Any, b: int, s: int, kv: int, dqk: int, dv: int, heads: int) -> list[Gemm]:
    """Attention's two activation products, always in float in ORT's CPU kernels."""
    hq, hv = max(1, dqk // heads), max(1, dv // heads)
    return [Gemm(node.name + " Q.K^T", node.op_type, "float", 2 * b * s * kv * dqk,
                 ("matmul", (b, heads, s, hq), (b, heads, hq, kv))),
            Gemm(node.name + " .V", node.op_type, "float", 2 * b * s * kv * dv,
                 ("matmul", (b, heads, s, kv), (b, heads, kv, hv)))]


def _attention(node: Any, S: dict) -> list[Gemm]:
    heads = int(_attr(node, "num_heads", 1))
    op = node.op_type
    x = S.get(node.input[0])
    if op in ("Attention", "QAttention"):
        w = S.get(node.input[1])
        if x is None or w is None or len(x) != 3:
            return []
        bsz, s, hin = x
        sizes = _attr(node, "qkv_hidden_sizes")
        hq, hk, hv = (list(sizes) if sizes else [w[-1] // 3] * 3)
        proj = Gemm(node.name + " QKV", op, "int8" if op == "QAttention" else "float", 2 * bsz * s * hin * w[-1],
                    ("matmul", (bsz, s, hin), (hin, w[-1])))
        return [proj, *_products(node, bsz, s, s, hq, hv, heads)]
    # MultiHeadAttention: query [B,S,D] or packed QKV [B,S,N,3,H]; key [B,L,D], [B,N,L,H] or packed KV [B,L,N,2,H]
    y = S.get(node.output[0])
    if x is None or y is None:
        return []
    bsz, s = x[0], x[1]
    dqk = x[2] if len(x) == 3 else x[2] * x[4]
    key = S.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if key is None:
        kv = s
    elif len(key) == 4:
        kv = key[2]
    else:
        kv = key[1]
    return _products(node, bsz, s, kv, dqk, y[-1], heads)


def _onnx_attention(node: Any, S: dict) -> list[Gemm]:
    """ai.onnx Attention (opset 23): Q/K/V as [B,S,D] (with q_num_heads) or [B,N,S,H]."""
    q, k, y = S.get(node.input[0]), S.get(node.input[1]), S.get(node.output[0])
    if q is None or k is None or y is None:
        return []
    heads = int(_attr(node, "q_num_heads", 0) or (q[1] if len(q) == 4 else 1))
    bsz = q[0]
    s, dqk = (q[2], q[1] * q[3]) if len(q) == 4 else (q[1], q[2])
    kv = k[2] if len(k) == 4 else k[1]
    dv = y[1] * y[3] if len(y) == 4 else y[2]
    return _products(node, bsz, s, kv, dqk, dv, heads)


def count_work(model: Any, input_shapes: dict[str, tuple[int, ...]]) -> Work:
    """The GEMM work of ``model`` (a ModelProto or a path) at these input shapes."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    S = infer_shapes(model, input_shapes)
    gemm_ops = MATMUL_OPS | GEMM_OPS | set(CONV_WEIGHT) | ATTENTION_OPS
    missing = {t for n in model.graph.node if n.op_type in gemm_ops
               for t in [*n.input, *n.output] if t and t not in S}
    if missing:
        try:
            S.update(shapes_by_running(model, input_shapes, missing))
        except Exception:  # noqa: BLE001 - those nodes are then listed as not counted
            pass
    producers = {o: n for n in model.graph.node for o in n.output}
    work = Work()
    for node in model.graph.node:
        op = node.op_type
        if op == "Attention" and node.domain in ("", "ai.onnx"):
            got = _onnx_attention(node, S)
        elif op in ATTENTION_OPS:
            got = _attention(node, S)
        elif op in MATMUL_OPS or op in GEMM_OPS or op in CONV_WEIGHT:
            int8 = op in INT8_OPS or (op in ("MatMul", "Gemm", "Conv") and _qdq_fed(node, producers, [0, 1]))
            dtype = "int8" if int8 else "float"
            got = (_conv if op in CONV_WEIGHT else _gemm if op in GEMM_OPS else _matmul_like)(node, S, dtype)
        else:
            if op in UNCOUNTED:
                work.uncounted.append(f"{node.name} ({op}): not modelled")
            continue
        if not got:
            work.uncounted.append(f"{node.name} ({op}): shapes not inferred")
        work.gemms.extend(got)
    return work


# ---------------------------------------------------------------- measuring the peak

def _probe_model(probe: tuple, dtype: str) -> tuple[Any, dict[str, np.ndarray]]:
    """A one-op ONNX model for ``probe`` in ``dtype``, and its feeds."""
    from onnx import TensorProto, helper, numpy_helper

    g = np.random.default_rng(0)
    kind = probe[0]
    if kind == "matmul":
        a_shape, b_shape = probe[1], probe[2]
        y_shape = (*np.broadcast_shapes(a_shape[:-2], b_shape[:-2]), a_shape[-2], b_shape[-1])
        # A weight (2-D B) is a constant as in the real model; an activation product is fed.
        b_const = len(b_shape) == 2
        if dtype == "int8":
            a = g.integers(0, 255, a_shape, dtype=np.uint8)
            b = g.integers(-127, 127, b_shape, dtype=np.int8)
            node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
            ytype, atype, btype = TensorProto.INT32, TensorProto.UINT8, TensorProto.INT8
        else:
            a = g.standard_normal(a_shape, dtype=np.float32)
            b = g.standard_normal(b_shape, dtype=np.float32)
            node = helper.make_node("MatMul", ["A", "B"], ["Y"])
            ytype = atype = btype = TensorProto.FLOAT
        inputs = [helper.make_tensor_value_info("A", atype, a_shape)]
        inits = [numpy_helper.from_array(b, "B")] if b_const else []
        if not b_const:
            inputs.append(helper.make_tensor_value_info("B", btype, b_shape))
        graph = helper.make_graph([node], "probe", inputs, [helper.make_tensor_value_info("Y", ytype, y_shape)], inits)
        feeds = {"A": a} if b_const else {"A": a, "B": b}
    else:
        x_shape, w_shape, attrs = probe[1], probe[2], dict(probe[3])
        if dtype == "int8" and kind == "convT":
            raise ValueError("no int8 ConvTranspose kernel to time")
        if dtype == "int8":
            x = g.integers(0, 255, x_shape, dtype=np.uint8)
            w = g.integers(-127, 127, w_shape, dtype=np.int8)
            inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
                     numpy_helper.from_array(np.array(128, np.uint8), "xz"),
                     numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
                     numpy_helper.from_array(np.array(0, np.int8), "wz"),
                     numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
                     numpy_helper.from_array(np.array(128, np.uint8), "yz")]
            node = helper.make_node("QLinearConv", ["X", "xs", "xz", "W", "ws", "wz", "ys", "yz"], ["Y"], **attrs)
            xtype = ytype = TensorProto.UINT8
        else:
            x = g.standard_normal(x_shape, dtype=np.float32)
            w = g.standard_normal(w_shape, dtype=np.float32)
            inits = [numpy_helper.from_array(w, "W")]
            node = helper.make_node("ConvTranspose" if kind == "convT" else "Conv", ["X", "W"], ["Y"], **attrs)
            xtype = ytype = TensorProto.FLOAT
        graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("X", xtype, x_shape)],
                                  [helper.make_tensor_value_info("Y", ytype, None)], inits)
        feeds = {"X": x}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, feeds


def time_probe(probe: tuple, dtype: str, threads: int, *, min_s: float = 0.15, min_reps: int = 7) -> float:
    """Median seconds of one call of the one-op model, with ``threads`` intra-op threads."""
    from onnxkit.runtime.session import ort

    rt = ort()
    model, feeds = _probe_model(probe, dtype)
    so = rt.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    sess = rt.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(2):
        sess.run(None, feeds)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - started < min_s:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def probe_ops(probe: tuple) -> int:
    if probe[0] == "matmul":
        a, b = probe[1], probe[2]
        batch = np.broadcast_shapes(a[:-2], b[:-2])
        return 2 * _prod(batch) * a[-2] * a[-1] * b[-1]
    if probe[0] == "convT":
        return 2 * _prod(probe[1]) * _prod(probe[2][1:])
    model, feeds = _probe_model(probe, "float")
    from onnxkit.runtime.session import ort

    y = ort().InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return 2 * _prod(y.shape) * _prod(probe[2][1:])


def all_threads() -> int:
    from onnxkit.foundation.hostfacts import host_facts

    h = host_facts()
    return int(h.usable_cores or h.logical_cores or os.cpu_count() or 1)


class Peaks:
    """Rates (operations per second) measured at probe shapes, cached per (probe, dtype, threads)."""

    def __init__(self) -> None:
        self.rates: dict[tuple, float] = {}

    def rate(self, probe: tuple, dtype: str, threads: int) -> float:
        key = (probe, dtype, threads)
        if key not in self.rates:
            self.rates[key] = probe_ops(probe) / time_probe(probe, dtype, threads)
        return self.rates[key]

    def measure(self, works: list[Work], threads_list: list[int]) -> None:
        """Time every distinct shape of these works in fp32, and the weight GEMMs in int8 too."""
        probes: dict[tuple, set[str]] = {}
        for w in works:
            for g in w.gemms:
                want = probes.setdefault(g.probe, set())
                want.add("float")
                if g.probe[0] == "conv" or (g.probe[0] == "matmul" and len(g.probe[2]) == 2):  # a weight GEMM: int8 is possible
                    want.add("int8")
        for t in threads_list:
            for p, dtypes in probes.items():
                for d in sorted(dtypes):
                    try:
                        self.rate(p, d, t)
                    except Exception as exc:  # noqa: BLE001 - a shape ORT cannot time leaves its GEMMs without a rate
                        print(f"  roofline: no {d} rate for {_probe_text(p)}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)

    def peak(self, dtype: str, threads: int, probes: set[tuple] | None = None) -> float | None:
        rates = [r for (p, d, t), r in self.rates.items() if d == dtype and t == threads and (probes is None or p in probes)]
        return max(rates) if rates else None


def bound(work: Work, peaks: Peaks, threads: int, probes: set[tuple]) -> dict[str, Any]:
    """The roofline bound of ``work`` at ``threads``: at the peak over the model's shapes
    (``bound_ms``), and with each GEMM at the rate measured at its own shape (``shape_bound_ms``)."""
    in_attention = sum(g.ops for g in work.gemms if g.op_type in ATTENTION_OPS and g.dtype == "float")
    out: dict[str, Any] = {"ops_float": work.ops("float"), "ops_int8": work.ops("int8"), "ops_float_in_attention": in_attention,
                           "uncounted": work.uncounted[:10]}
    total_s, shape_s = 0.0, 0.0
    for dtype in ("float", "int8"):
        ops = work.ops(dtype)
        if not ops:
            continue
        pk = peaks.peak(dtype, threads, probes)
        if pk is None:
            return out | {"bound_ms": None}
        total_s += ops / pk
    for g in work.gemms:
        r = peaks.rates.get((g.probe, g.dtype, threads))
        shape_s = math.nan if r is None else shape_s + g.ops / r
    return out | {"bound_ms": 1000 * total_s, "shape_bound_ms": 1000 * shape_s if not math.isnan(shape_s) else None}


# ---------------------------------------------------------------- the suite's rows

def _input_shapes(feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(np.asarray(v).shape) for k, v in feeds.items()}


def annotate(variants: list[tuple[str, str]], feeds_by_batch: dict[int, dict[str, np.ndarray]], rows: list[dict],
             threads: int) -> dict[str, Any]:
    """Add ``row["roofline"]`` (work, bound, efficiency) to each timed row of one model, and
    return the model's measured limits. ``variants``: (name, .onnx path); the source row gets
    the bound of the first variant (the plain export: the same float work)."""
    import onnx

    run_threads = threads or all_threads()
    threads_list = sorted({1, all_threads()})
    from memory_roof import read_bandwidth, weight_bytes

    works: dict[tuple[str, int], Work] = {}
    weights: dict[str, int] = {}
    for name, path in variants:
        try:
            model = onnx.load(path)
        except Exception as exc:  # noqa: BLE001 - a variant ORT can run but onnx cannot load is reported
            print(f"  roofline: {name} not counted ({type(exc).__name__})", flush=True)
            continue
        weights[name] = weight_bytes(model)
        for b, feeds in feeds_by_batch.items():
            try:
                works[(name, b)] = count_work(model, _input_shapes(feeds))
            except Exception as exc:  # noqa: BLE001 - shape inference failing is reported, not fatal
                print(f"  roofline: {name} at batch {b} not counted ({type(exc).__name__}: {str(exc)[:120]})", flush=True)
    peaks = Peaks()
    t0 = time.perf_counter()
    peaks.measure(list(works.values()), threads_list)
    probes = {g.probe for w in works.values() for g in w.gemms}
    bandwidth = read_bandwidth()
    first = variants[0][0] if variants else None
    for r in rows:
        name = first if r["source"] else r["variant"]
        w = works.get((name, r["batch"]))
        if w is None:
            continue
        rf = bound(w, peaks, run_threads, probes)
        if name in weights:
            rf["weights_mb"] = weights[name] / 1e6
            rf["memory_ms"] = 1000 * weights[name] / bandwidth
        if rf.get("bound_ms"):
            rf["efficiency"] = rf["bound_ms"] / (r.get("work_ms") or r["p50_ms"])
        if rf.get("shape_bound_ms"):
            rf["shape_efficiency"] = rf["shape_bound_ms"] / (r.get("work_ms") or r["p50_ms"])
        r["roofline"] = rf
    limits = {"threads": run_threads, "measure_s": time.perf_counter() - t0, "read_gbps": bandwidth / 1e9,
              "peak_gops": {f"{d} {t}t": (peaks.peak(d, t, probes) or 0) / 1e9 for d in ("float", "int8") for t in threads_list},
              "probes": [{"probe": _probe_text(p), "dtype": d, "threads": t, "gops": r / 1e9}
                         for (p, d, t), r in sorted(peaks.rates.items(), key=lambda kv: (kv[0][2], kv[0][1], -kv[1]))]}
    return limits


def _probe_text(p: tuple) -> str:
    if p[0] == "matmul":
        return f"MatMul {list(p[1])} x {list(p[2])}"
    attrs = ", ".join(f"{k}={v}" for k, v in p[3] if k in ("strides", "group") and v not in ((1, 1), 1))
    op = "ConvTranspose" if p[0] == "convT" else "Conv"
    return f"{op} x{list(p[1])} w{list(p[2])}" + (f" ({attrs})" if attrs else "")
