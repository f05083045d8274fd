"""NaN both sides share (a Log of a negative, a masked position) is no mismatch, but it must
not hide the rest of its row from the cosine: a row is judged on its finite pairs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.foundation.compare import compare_once, make_tolerance


def _rows_with_shared_nan(flipped: int):
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((400, 16)).astype(np.float32)
    cand = ref.copy()
    ref[:flipped, 0] = cand[:flipped, 0] = np.nan
    cand[:flipped, 1:] = -cand[:flipped, 1:]  # the rest of those rows is plainly wrong
    return ref, cand


def test_wrong_rows_carrying_a_shared_nan_fail_the_cosine_floor():
    ref, cand = _rows_with_shared_nan(2)
    (o,) = compare_once({"y": ref}, {"y": cand}, make_tolerance(preset="int8"))
    assert not o.passed, o
    assert o.cosine_min is not None and o.cosine_min < -0.99
    assert any("cosine" in p and "below 0.99" in p for p in o.problems), o.problems
    assert o.nan_mismatch == 0  # the NaN pairs themselves agree


def test_rows_that_only_share_nan_still_pass():
    ref, _ = _rows_with_shared_nan(2)
    (o,) = compare_once({"y": ref}, {"y": ref.copy()}, make_tolerance(preset="int8"))
    assert o.passed and o.cosine == 1.0, o


def _log_mlp(path):
    """y = Log(x @ W1 @ W2): NaN wherever the product is negative, about half the elements,
    so every 4-wide row carries a NaN."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("MatMul", ["h", "w2"], ["z"], name="mm2"),
         helper.make_node("Log", ["z"], ["y"], name="log")],
        "log_mlp", [x], [y],
        [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_quantize_measures_a_model_whose_float_outputs_carry_nan(cli, tmp_path):
    # Was exit 2 "--metric cosine needs a float output": every row held a NaN, so no row had a cosine.
    src = _log_mlp(tmp_path / "log.onnx")
    before = src.read_bytes()
    out = tmp_path / "log.int8.onnx"
    r = cli("quantize", src, "-o", out, "--mode", "dynamic", "--json")
    assert r.code == 0, r
    assert "needs a float output" not in r.stderr
    assert r.json["error"]["cosine"] is not None and r.json["error"]["cosine"] > 0.98
    assert out.exists() and src.read_bytes() == before
