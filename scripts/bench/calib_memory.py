#!/usr/bin/env python3
"""Peak memory of static calibration against the number of calibration batches.

    python scripts/bench/calib_memory.py [--batches 8,64] [--methods minmax,entropy]

Runs ONNX Runtime's quantize_static, each configuration in its own process, with onnxkit's
calibration reader on two models built here with random weights: a residual-style CNN
(3x64x64 inputs, batches of 8) and one MiniLM-size encoder layer (activations 8 x 64 x 384,
FFN 1536). "before": the plain reader, as onnxkit called the calibrator until now (ORT keeps
each batch's outputs until the reader runs dry); "after": onnxkit's reader with
STREAMED_CALIBRATION (collected and merged one batch at a time). Prints the peak RSS
(VmHWM) of each process and its growth over the process's RSS before calibrating.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROWS = 8  # rows per calibration batch, as onnxkit's reader batches a dynamic batch axis


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def build_cnn(path: Path) -> None:
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    g = np.random.default_rng(0)
    nodes, inits = [], []

    def conv(x, cin, cout, stride, name, relu=True):
        inits.append(numpy_helper.from_array((g.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_c"], name=name, strides=[stride, stride],
                                      pads=[1, 1, 1, 1]))
        if not relu:
            return f"{name}_c"
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    h = conv("image", 3, 32, 2, "stem")
    for i, (cin, cout, s) in enumerate([(32, 32, 1), (32, 64, 2), (64, 128, 2)]):
        y = conv(conv(h, cin, cout, s, f"b{i}a"), cout, cout, 1, f"b{i}b", relu=False)
        short = h if (cin, s) == (cout, 1) else conv(h, cin, cout, s, f"b{i}s", relu=False)
        nodes += [helper.make_node("Add", [y, short], [f"b{i}sum"]), helper.make_node("Relu", [f"b{i}sum"], [f"b{i}out"])]
        h = f"b{i}out"
    inits += [numpy_helper.from_array((g.standard_normal((128, 10)) * 0.1).astype(np.float32), "head_w"),
              numpy_helper.from_array(np.array([0, 1], np.int64), "flat")]
    nodes += [helper.make_node("GlobalAveragePool", [h], ["gap"]), helper.make_node("Flatten", ["gap"], ["f"]),
              helper.make_node("MatMul", ["f", "head_w"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", T.FLOAT, ["batch", 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", T.FLOAT, ["batch", 10])], inits)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_encoder(path: Path, seq: int = 64, hidden: int = 384, ffn: int = 1536) -> None:
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    g = np.random.default_rng(0)
    nodes, inits = [], []

    def mm(x, k, n, name):
        inits.append(numpy_helper.from_array((g.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("MatMul", [x, f"{name}_w"], [name], name=name))
        return name

    q, k, v = mm("x", hidden, hidden, "q"), mm("x", hidden, hidden, "k"), mm("x", hidden, hidden, "v")
    nodes += [helper.make_node("Add", [q, k], ["qk"]), helper.make_node("Add", ["qk", v], ["qkv"])]
    o = mm("qkv", hidden, hidden, "o")
    nodes.append(helper.make_node("Add", [o, "x"], ["res1"]))
    nodes.append(helper.make_node("Relu", [mm("res1", hidden, ffn, "up")], ["act"]))
    nodes.append(helper.make_node("Add", [mm("act", ffn, hidden, "down"), "res1"], ["y"]))
    graph = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", seq, hidden])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["batch", seq, hidden])], inits)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _save(model, path: Path) -> None:
    import onnx

    model.ir_version = 8
    onnx.save(model, str(path))


def child(model: str, method: str, batches: int, streamed: bool, work: str) -> dict:
    """One calibration in this process; returns its peak RSS and the RSS before calibrating."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize_static

    from onnxkit.foundation.spec import specs_from_onnx
    from onnxkit.operations.quantize.calibration import STREAMED_CALIBRATION, _Batches, _calibration_reader

    path = Path(work) / f"{model}.onnx"
    import onnx

    specs = specs_from_onnx(onnx.load(str(path)))
    data = _Batches(specs, random_n=batches * ROWS, batch=ROWS)
    if streamed:
        reader, extra = _calibration_reader(data), dict(STREAMED_CALIBRATION)
    else:
        class Plain(CalibrationDataReader):  # the reader onnxkit passed before: no len, no set_range
            def __init__(self) -> None:
                self.it = iter(data)

            def get_next(self):
                return next(self.it, None)

        reader, extra = Plain(), {}
    base = _rss_kib("VmRSS:")
    out = Path(work) / f"{model}_{method}_{batches}_{int(streamed)}.onnx"
    quantize_static(str(path), str(out), reader, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method],
                    extra_options={"MatMulConstBOnly": True, **extra})
    return {"base_mb": base / 1024, "peak_mb": _rss_kib("VmHWM:") / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="8,64")
    ap.add_argument("--methods", default="minmax,entropy")
    ap.add_argument("--models", default="cnn,encoder")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        model, method, n, streamed, work = args.child
        print(json.dumps(child(model, method, int(n), streamed == "1", work)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="onnxkit-calibmem-"))
    build_cnn(work / "cnn.onnx")
    build_encoder(work / "encoder.onnx")
    batches = [int(b) for b in args.batches.split(",")]
    print(f"peak RSS of quantize_static (MB; growth over the process before calibrating in brackets), "
          f"{ROWS} rows per batch")
    print(f"{'model':8} {'method':8} " + " ".join(f"{f'{n} batches ' + w:>22}" for n in batches for w in ("before", "after")))
    for model in args.models.split(","):
        for method in args.methods.split(","):
            cells = []
            for n in batches:
                for streamed in (False, True):
                    proc = subprocess.run([sys.executable, __file__, "--child", model, method, str(n), str(int(streamed)), str(work)],
                                          capture_output=True, text=True, cwd=REPO)
                    if proc.returncode:
                        cells.append("failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:40])
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    cells.append(f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r['base_mb']:.0f})")
            print(f"{model:8} {method:8} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
