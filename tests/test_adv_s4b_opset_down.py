"""`optimize --opset 11` on an opset-21 file failed with onnx's C++ assertion text ("BaseConverter.h:66:
adapter_lookup: Assertion `false` failed: No Adapter From Version $13 for MatMul"). It is now one
line saying the conversion down is not possible and for which op, still exit 4 (a conversion that
failed inside the optimizer, README), with nothing written."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _opset21(path):
    w = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Softmax", ["y"], ["p"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def test_down_conversion_that_onnx_cannot_do_names_the_op(cli, tmp_path):
    src = _opset21(tmp_path / "m.onnx")
    before = src.read_bytes()
    r = cli("optimize", src, "-o", tmp_path / "o.onnx", "--opset", "11")
    assert r.code == 4, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot convert opset 21 down to 11"), r.stderr
    assert "MatMul below its opset-13 form" in lines[0] and "--opset 13 or higher" in lines[0]
    assert "Assertion" not in r.stderr and ".h:" not in r.stderr
    assert src.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_the_opset_the_hint_names_converts(cli, tmp_path):
    src = _opset21(tmp_path / "m.onnx")
    r = cli("optimize", src, "-o", tmp_path / "o.onnx", "--opset", "13", "--json")
    assert r.code == 0, r
    assert r.json["opset_after"] == 13


def test_other_converter_failures_lose_the_cxx_location():
    from onnxkit.operations.optimize_opset import opset_failure

    msg, hint = opset_failure(RuntimeError("/x/y/Convert.h:12: f: Assertion `false` failed: something odd"), 17, 9)
    assert msg == "opset conversion from 17 to 9 (onnx.version_converter) failed: something odd" and hint is None
