"""A float model whose output is constant on the measurement inputs (every ReLU dead): the
quantize budget reads "cosine 1" whatever the weights became. The verdict stays, but the
result says the measure proves little (validate warned; quantize said nothing)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _relu_mlp(path, bias: float):
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Add", ["h", "b"], ["z"], name="add"),
         helper.make_node("Relu", ["z"], ["y"], name="relu")],
        "relu_mlp", [x], [y],
        [numpy_helper.from_array(rng.standard_normal((8, 32)).astype(np.float32), "w"),
         numpy_helper.from_array(np.full(32, bias, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("bias", "constant"), [(-100.0, True), (0.0, False)])
def test_quantize_says_when_the_float_output_is_constant(cli, tmp_path, bias, constant):
    src = _relu_mlp(tmp_path / "m.onnx", bias)
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "dynamic", "--json")
    assert r.code == 0, r
    assert r.json["error"]["constant_outputs"] == (["y"] if constant else [])
    said = [n for n in r.json["notes"] if "is constant on the" in n]
    assert bool(said) == constant, r.json["notes"]
    if constant:
        assert "proves little" in said[0] and "--data" in said[0]
