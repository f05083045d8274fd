"""A narrow output (a regressor's [N, 1]) under a loose preset: int8's atol 0.5 / rtol 0.5
element-wise let any scale error up to x1.5 pass, so a regressor 40% off was PASSED. The
preset's bound on ||cand - ref|| / ||ref|| now holds for narrow outputs too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _regressor(path, scale: float):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((6, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 1)).astype(np.float32) * scale
    bias = np.array([5.0 * scale], np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
         helper.make_node("Add", ["z", "b"], ["y"], name="add")],
        "regressor", [x], [y],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("preset", ["int8", "int4"])
def test_regressor_40_percent_off_fails_the_loose_presets(cli, tmp_path, preset):
    ref = _regressor(tmp_path / "ref.onnx", 1.0)
    cand = _regressor(tmp_path / "cand.onnx", 1.4)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    r = cli("validate", ref, cand, "--preset-tol", preset, "--json")
    assert r.code == 1, r
    (out,) = r.json["outputs"]
    assert not out["passed"] and out["out_of_tol"] == 0  # element-wise alone still passes it
    assert any("relative error" in p and "0.4" in p for p in out["problems"]), out["problems"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_regressor_with_int8_sized_error_still_passes(cli, tmp_path):
    ref = _regressor(tmp_path / "ref.onnx", 1.0)
    cand = _regressor(tmp_path / "cand.onnx", 1.03)
    r = cli("validate", ref, cand, "--preset-tol", "int8", "--json")
    assert r.code == 0, r
    assert r.json["outputs"][0]["rel_error"] < 0.05


def test_quantize_budget_sees_a_regressor_off_by_40_percent(tmp_path):
    # The budget's cosine of a [N, 1] output was the sign of each prediction: 1.0 (error 0) here.
    from onnxkit.operations.quantize.budget import measure_error

    ref = onnx.load(_regressor(tmp_path / "ref.onnx", 1.0))
    cand = onnx.load(_regressor(tmp_path / "cand.onnx", 1.4))
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((16, 6)).astype(np.float32)} for _ in range(2)]
    m = measure_error(ref, cand, batches, "cosine")
    assert m.cosine is not None and m.cosine < 0.95, m
    assert m.error > 0.02  # over the default budgets (0.01 on data, 0.02 on random inputs)
    assert m.outputs[0]["rel_error"] > 0.35
    same = measure_error(ref, ref, batches, "cosine")
    assert same.error == 0.0 and same.cosine == 1.0
