"""Integer and bool outputs in the quantize budget: an int4 model whose bool output agreed
with the float model on 87.5% of its values was PASSED, because the budget read only the
cosine of float outputs. A class id or mask now counts as ``--metric label`` counts it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _masked(path, threshold: float = 0.0, *, width: int = 64):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((width, width)).astype(np.float32)
    w2 = rng.standard_normal((width, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
             helper.make_node("Greater", ["y", "t"], ["mask"], name="gt"),
             helper.make_node("ArgMax", ["y"], ["cls"], axis=1, keepdims=0, name="am")]
    graph = helper.make_graph(
        nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 8]),
         helper.make_tensor_value_info("cls", TensorProto.INT64, ["N"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(np.array(threshold, np.float32), "t")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _batches(n: int = 64):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((n, 64)).astype(np.float32)}]


@pytest.mark.parametrize("metric", ["cosine", "maxabs"])
def test_a_bool_output_that_disagrees_sets_the_error(tmp_path, metric):
    from onnxkit.operations.quantize.budget import measure_error

    ref = onnx.load(_masked(tmp_path / "ref.onnx", 0.0))
    # Same float output, a mask threshold moved: only the bool output differs.
    cand = onnx.load(_masked(tmp_path / "cand.onnx", 40.0))
    m = measure_error(ref, cand, _batches(), metric)
    mask = next(o for o in m.outputs if o["name"] == "mask")
    assert mask["agreement"] < 0.95
    assert m.error == pytest.approx(1.0 - mask["agreement"] if metric == "cosine" else 1.0)
    assert "'mask'" in m.worst and "% of its values" in m.worst


def test_outputs_that_all_agree_leave_the_cosine_error_alone(tmp_path):
    from onnxkit.operations.quantize.budget import measure_error

    ref = onnx.load(_masked(tmp_path / "ref.onnx", 0.0))
    m = measure_error(ref, ref, _batches(), "cosine")
    assert m.error == pytest.approx(0.0, abs=1e-9) and m.worst is None


def test_int4_budget_fails_on_a_mask_that_flips(cli, tmp_path):
    src = _masked(tmp_path / "m.onnx")
    before = src.read_bytes()
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--mode", "int4", "--json")
    assert r.code == 1, r
    doc = r.json
    assert doc["budget_met"] is False
    note = next(n for n in doc["notes"] if n.startswith("accuracy budget missed"))
    assert "'mask'" in note and "% differ" in note, note
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "q.onnx"]  # written anyway, as documented


def test_dynamic_int8_with_label_outputs_still_passes(cli, tmp_path):
    src = _masked(tmp_path / "m.onnx")
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "dynamic", "--json")
    assert r.code == 0, r
    assert r.json["budget_met"] is True
