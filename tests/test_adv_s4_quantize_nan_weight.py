"""A float model with a NaN weight: every int8/int4 mode refuses it naming the weight (was
exit 4 "quantize_dynamic failed: scale issue" or NaN scales), and fp16 says the float outputs
are NaN everywhere (was exit 2 "--metric cosine needs a float output" for a float output)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _nan_weight_mlp(path):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 32)).astype(np.float32)
    w1[0, 0] = np.nan
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")],
        "nan_weight", [x], [y],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("mode", ["dynamic", "static", "int4", "auto"])
def test_int_modes_name_the_nan_weight(cli, tmp_path, mode):
    src = _nan_weight_mlp(tmp_path / "m.onnx")
    before = src.read_bytes()
    extra = ["--calib-random", "8"] if mode in ("static", "auto") else []
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", mode, *extra)
    assert r.code == 2, r
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: weight 'w1' of node 'mm1' holds 1 non-finite value(s) (NaN)"), r.stderr
    assert "scale issue" not in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and src.read_bytes() == before


def test_fp16_says_the_float_outputs_are_nan(cli, tmp_path):
    src = _nan_weight_mlp(tmp_path / "m.onnx")
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "fp16")
    assert r.code == 2, r
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: the float model's output 'y' is NaN or Inf everywhere"), r.stderr
    assert "needs a float output" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_truncated_weight_is_a_load_error_not_a_crash(cli, tmp_path):
    # The weight scan must leave a malformed tensor to the loader (was exit 70: a reshape error).
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    w.raw_data = w.raw_data[:40]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "t", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "dynamic")
    assert r.code == 2, r
    assert r.stderr.startswith("Error: cannot load") and "raw_data size" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
