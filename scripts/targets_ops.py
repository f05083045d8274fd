"""Which op families each deployment target lacks, as measured: builds one small ONNX model per
op family (random weights, built with onnx.helper), runs `onnxkit targets` on each and prints
the Markdown table the README's Targets section quotes.

Usage: python scripts/targets_ops.py [--targets openvino,mobile,web] [--keep DIR] [--only conv,if]
Every target that is not available here is reported as such in its column. Nothing is fetched."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)
MS = "com.microsoft"


def _w(name: str, shape, dtype=np.float32, scale: float = 0.3):
    if np.dtype(dtype).kind in "iu":
        return numpy_helper.from_array(RNG.integers(-100, 100, shape).astype(dtype), name)
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(dtype), name)


def _c(name: str, value, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17, extra=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "family", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8 if opset <= 18 else 9
    return model


# ---------------------------------------------------------------- one builder per family

def conv():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["p", "s", "bb", "m", "v"], ["n"]),
             helper.make_node("GlobalAveragePool", ["n"], ["y"])]
    inits = [_w("w", (4, 3, 3, 3)), _w("b", (4,)), _c("s", np.ones(4), np.float32), _w("bb", (4,)),
             _w("m", (4,)), _c("v", np.ones(4), np.float32)]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 3, 8, 8])], [_vi("y", T.FLOAT, [1, 4, 1, 1])], inits)


def matmul_gemm():
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("MatMul", ["g", "w2"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 8])], [_vi("y", T.FLOAT, [2, 4])], [_w("w", (8, 6)), _w("b", (6,)), _w("w2", (6, 4))])


def layernorm():
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 4, 8])], [_vi("y", T.FLOAT, [1, 4, 8])], [_w("g", (8,)), _w("b", (8,))])


def ms_attention():
    nodes = [helper.make_node("Attention", ["x", "w", "b"], ["y"], domain=MS, num_heads=2)]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 4, 8])], [_vi("y", T.FLOAT, [1, 4, 8])], [_w("w", (8, 24)), _w("b", (24,))],
                  extra=[(MS, 1)])


def ms_multihead():
    nodes = [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain=MS, num_heads=2)]
    ins = [_vi(n, T.FLOAT, [1, 4, 8]) for n in ("q", "k", "v")]
    return _model(nodes, ins, [_vi("y", T.FLOAT, [1, 4, 8])], extra=[(MS, 1)])


def ms_layernorm_gelu():
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "g", "b"], ["s"], domain=MS, epsilon=1e-5),
             helper.make_node("BiasGelu", ["s", "bias"], ["h"], domain=MS),
             helper.make_node("FastGelu", ["h", "bias"], ["y"], domain=MS)]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 4, 8]), _vi("skip", T.FLOAT, [1, 4, 8])], [_vi("y", T.FLOAT, [1, 4, 8])],
                  [_w("g", (8,)), _w("b", (8,)), _w("bias", (8,))], extra=[(MS, 1)])


def ms_fusedconv_gemm():
    nodes = [helper.make_node("FusedConv", ["x", "w", "b"], ["c"], domain=MS, activation="Relu", pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("FusedGemm", ["f", "w2", "b2"], ["y"], domain=MS, activation="Relu")]
    inits = [_w("w", (2, 3, 3, 3)), _w("b", (2,)), _w("w2", (2 * 4 * 4, 5)), _w("b2", (5,))]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 3, 4, 4])], [_vi("y", T.FLOAT, [1, 5])], inits, extra=[(MS, 1)])


def control_if():
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [], [_vi("t", T.FLOAT, [2, 3])],
                               [_c("two", 2.0, np.float32)])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "one"], ["e"])], "else", [], [_vi("e", T.FLOAT, [2, 3])],
                               [_c("one", 1.0, np.float32)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 3])], [_vi("y", T.FLOAT, [2, 3])], [_c("zero", 0.0, np.float32)])


def control_loop():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Mul", ["v_in", "half"], ["m"]),
         helper.make_node("Add", ["m", "x"], ["v_out"])],
        "body", [_vi("i", T.INT64, []), _vi("cond_in", T.BOOL, []), _vi("v_in", T.FLOAT, [2, 3])],
        [_vi("cond_out", T.BOOL, []), _vi("v_out", T.FLOAT, [2, 3])], [_c("half", 0.5, np.float32)])
    nodes = [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 3])], [_vi("y", T.FLOAT, [2, 3])],
                  [_c("trip", 4, np.int64), _c("cond", True, np.bool_)])


def strings():
    # integers in, booleans out: the strings live inside the graph (Cast to string is exact for integers)
    nodes = [helper.make_node("Cast", ["x"], ["s"], to=T.STRING),
             helper.make_node("StringConcat", ["s", "suffix"], ["c"]),
             helper.make_node("RegexFullMatch", ["c"], ["y"], pattern="[0-4]_x")]
    return _model(nodes, [_vi("x", T.INT64, [2, 3])], [_vi("y", T.BOOL, [2, 3])],
                  [helper.make_tensor("suffix", T.STRING, [], [b"_x"])], opset=20)


def sequences():
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0),
             helper.make_node("SequenceAt", ["seq", "idx"], ["first"]),
             helper.make_node("ConcatFromSequence", ["seq"], ["cat"], axis=0),
             helper.make_node("ReduceSum", ["cat", "ax"], ["y0"], keepdims=1),
             helper.make_node("Add", ["first", "y0"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [3, 4])], [_vi("y", T.FLOAT, [1, 4])],
                  [_c("idx", 0, np.int64), _c("ax", [0], np.int64)])


def qdq_int8():
    scalars = [_c("xs", 0.02, np.float32), _c("xz", 0, np.int8), _c("ws", 0.01, np.float32), _c("wz", 0, np.int8),
               _c("ys", 0.05, np.float32), _c("yz", 0, np.int8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 3, 8, 8])], [_vi("y", T.FLOAT, [1, 4, 8, 8])],
                  [_w("wq", (4, 3, 3, 3), np.int8), *scalars])


def qlinear():
    scalars = [_c("xs", 0.02, np.float32), _c("xz", 128, np.uint8), _c("ws", 0.01, np.float32), _c("wz", 0, np.int8),
               _c("ys", 0.05, np.float32), _c("yz", 128, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["cq"], pads=[1, 1, 1, 1]),
             helper.make_node("QLinearMatMul", ["cq", "ys", "yz", "mq", "ws", "wz", "ys", "yz"], ["mq_out"]),
             helper.make_node("DequantizeLinear", ["mq_out", "ys", "yz"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 3, 8, 8])], [_vi("y", T.FLOAT, [1, 4, 8, 8])],
                  [_w("wq", (4, 3, 3, 3), np.int8), _w("mq", (8, 8), np.int8), *scalars])


def dynamic_int8():
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
             helper.make_node("Mul", ["xs", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 8])], [_vi("y", T.FLOAT, [2, 4])],
                  [_w("wq", (8, 4), np.uint8), _c("wz", 128, np.uint8), _c("ws", 0.01, np.float32)])


def ml_trees():
    attrs = dict(n_targets=1, nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                 nodes_values=[0.0, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_truenodeids=[1, 0, 0],
                 nodes_falsenodeids=[2, 0, 0], target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0],
                 target_weights=[-1.0, 1.0])
    nodes = [helper.make_node("TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", **attrs)]
    return _model(nodes, [_vi("x", T.FLOAT, [3, 2])], [_vi("y", T.FLOAT, [3, 1])], extra=[("ai.onnx.ml", 3)])


def rnn():
    nodes = [helper.make_node("LSTM", ["x", "w", "r", "b"], ["yall", "y"], hidden_size=6)]
    inits = [_w("w", (1, 24, 4)), _w("r", (1, 24, 6)), _w("b", (1, 48))]
    return _model(nodes, [_vi("x", T.FLOAT, [5, 2, 4])], [_vi("yall", T.FLOAT, [5, 1, 2, 6]), _vi("y", T.FLOAT, [1, 2, 6])], inits)


def resize_pad():
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="linear"),
             helper.make_node("Pad", ["r", "pads"], ["y"], mode="reflect")]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 2, 4, 4])], [_vi("y", T.FLOAT, [1, 2, 10, 10])],
                  [_c("scales", [1, 1, 2, 2], np.float32), _c("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)])


def shape_ops():
    nodes = [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Gather", ["sh", "one"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["r"]), helper.make_node("Cast", ["r"], ["rf"], to=T.FLOAT),
             helper.make_node("Expand", ["rf", "sh"], ["e"]), helper.make_node("Greater", ["x", "e"], ["g"]),
             helper.make_node("Where", ["g", "x", "e"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [3, 5])], [_vi("y", T.FLOAT, [3, 5])],
                  [_c("zero", 0, np.int64), _c("one", 1, np.int64)])


def gather_scatter_topk():
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1),
             helper.make_node("GatherElements", ["x", "i"], ["g"], axis=-1),
             helper.make_node("ScatterND", ["x", "idx", "upd"], ["s"]),
             helper.make_node("Einsum", ["x", "w"], ["e"], equation="ij,jk->ik")]
    return _model(nodes, [_vi("x", T.FLOAT, [3, 5])],
                  [_vi("v", T.FLOAT, [3, 2]), _vi("g", T.FLOAT, [3, 2]), _vi("s", T.FLOAT, [3, 5]), _vi("e", T.FLOAT, [3, 4])],
                  [_c("k", [2], np.int64), _c("idx", [[0], [2]], np.int64), _w("upd", (2, 5)), _w("w", (5, 4))])


def dft():
    nodes = [helper.make_node("DFT", ["x", "", "axis"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 8, 1])], [_vi("y", T.FLOAT, [1, 8, 2])], [_c("axis", 1, np.int64)], opset=20)


def float16():
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=T.FLOAT16), helper.make_node("MatMul", ["h", "w"], ["m"]),
             helper.make_node("Cast", ["m"], ["y"], to=T.FLOAT)]
    return _model(nodes, [_vi("x", T.FLOAT, [2, 8])], [_vi("y", T.FLOAT, [2, 4])], [_w("w", (8, 4), np.float16)])


def nms():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3]]], dtype=np.float32)
    nodes = [helper.make_node("Sigmoid", ["x"], ["scores"]),
             helper.make_node("NonMaxSuppression", ["boxes", "scores", "maxk", "iou"], ["y"])]
    return _model(nodes, [_vi("x", T.FLOAT, [1, 1, 3])], [_vi("y", T.INT64, [None, 3])],
                  [numpy_helper.from_array(boxes, "boxes"), _c("maxk", [3], np.int64), _c("iou", [0.5], np.float32)])


FAMILIES: dict[str, tuple[str, Callable[[], onnx.ModelProto]]] = {
    "conv": ("Conv, Relu, MaxPool, BatchNormalization, GlobalAveragePool", conv),
    "matmul": ("Gemm, MatMul", matmul_gemm),
    "layernorm": ("LayerNormalization (opset 17)", layernorm),
    "attention": ("com.microsoft Attention", ms_attention),
    "mha": ("com.microsoft MultiHeadAttention", ms_multihead),
    "skipln": ("com.microsoft SkipLayerNormalization, BiasGelu, FastGelu", ms_layernorm_gelu),
    "fusedconv": ("com.microsoft FusedConv, FusedGemm (ORT level extended)", ms_fusedconv_gemm),
    "if": ("control flow: If", control_if),
    "loop": ("control flow: Loop", control_loop),
    "strings": ("string ops: Cast to string, StringConcat, RegexFullMatch (opset 20)", strings),
    "sequences": ("sequence ops: SplitToSequence, SequenceAt, ConcatFromSequence", sequences),
    "qdq": ("QDQ int8 (QuantizeLinear/DequantizeLinear around Conv)", qdq_int8),
    "qlinear": ("QOperator: QLinearConv, QLinearMatMul", qlinear),
    "dynamic": ("dynamic int8: DynamicQuantizeLinear, MatMulInteger", dynamic_int8),
    "trees": ("ai.onnx.ml TreeEnsembleRegressor", ml_trees),
    "rnn": ("LSTM", rnn),
    "resize": ("Resize (linear), Pad (reflect)", resize_pad),
    "shape": ("Shape, Range, Expand, Where", shape_ops),
    "gather": ("TopK, GatherElements, ScatterND, Einsum", gather_scatter_topk),
    "dft": ("DFT (opset 20)", dft),
    "fp16": ("float16 MatMul (Cast in and out)", float16),
    "nms": ("NonMaxSuppression", nms),
}


# ---------------------------------------------------------------- running and the table

def _targets(path: Path, targets: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "onnxkit", "targets", str(path), "--target", targets, "--precision", "f32",
                           "--json"], capture_output=True, text=True, env=env, timeout=1200)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1], "exit_code": proc.returncode}


def _short(text: str | None, limit: int = 90) -> str:
    text = (text or "").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(t: dict) -> str:
    if t["status"] == "passed":
        return f"runs ({t['max_abs_diff']:.1g})" if t.get("max_abs_diff") else "runs (0)"
    if t["status"] == "disagrees":
        return f"**disagrees**: {_short(t.get('reason'))}"
    if t["status"] == "unavailable":
        return f"not here: {_short(t.get('reason'), 40)}"
    ops = sorted({u["op"] for u in t.get("unsupported") or []})
    what = f"no {', '.join(ops)}" if ops else _short(t.get("reason"))
    return f"**fails** ({t.get('stage') or 'run'}): {what}"


def _partition(mobile: dict | None, ep: str) -> str:
    info = ((mobile or {}).get("details") or {}).get("partitions", {}).get(ep)
    if not info:
        return "-"
    if "error" in info:
        return f"check failed: {_short(info['error'], 40)}"
    if info["supported_nodes"] == info["nodes"]:
        return "takes all"
    missing = [op.split(":", 1)[-1] for op in info["unsupported_ops"]]
    return f"{info['supported_nodes']}/{info['nodes']} nodes; not {', '.join(missing)}" if missing else \
        f"{info['supported_nodes']}/{info['nodes']} nodes"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="openvino,mobile,web")
    ap.add_argument("--keep", type=Path, help="write the models here (default: a temporary folder)")
    ap.add_argument("--only", help="comma-separated family keys: " + ", ".join(FAMILIES))
    args = ap.parse_args()
    keys = [k.strip() for k in args.only.split(",")] if args.only else list(FAMILIES)
    unknown = [k for k in keys if k not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {', '.join(unknown)}")
    names = [t.strip() for t in args.targets.split(",") if t.strip() and t.strip() != "cpu"]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="onnxkit-targets-ops-"))
    folder.mkdir(parents=True, exist_ok=True)
    head = ["op family", *(["mobile (.ort, CPU)", "NNAPI partition", "CoreML partition"] if n == "mobile" else [n]
                           for n in names)]
    columns = [c for group in head[1:] for c in group]
    print("| op family (reference: ONNX Runtime CPU) | " + " | ".join(columns) + " |")
    print("|" + "---|" * (len(columns) + 1))
    for key in keys:
        label, build = FAMILIES[key]
        path = folder / f"{key}.onnx"
        model = build()
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(path))
        doc = _targets(path, ",".join(["cpu", *names]))
        if "targets" not in doc:
            print(f"| {label} | onnxkit: {_short(doc.get('error'))} (exit {doc.get('exit_code')}) |" + " |" * (len(columns) - 1))
            continue
        by = {t["target"]: t for t in doc["targets"]}
        cpu = by.get("cpu", {})
        cells = []
        for n in names:
            t = by.get(n)
            if cpu.get("status") == "failed":
                cells += ["(ORT CPU cannot run it: " + _short(cpu.get("reason"), 60) + ")"] + (["-", "-"] if n == "mobile" else [])
                continue
            cells.append(_cell(t) if t else "-")
            if n == "mobile":
                cells += [_partition(t, "nnapi"), _partition(t, "coreml")]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
