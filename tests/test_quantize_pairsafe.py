"""Pair-safe int8 MatMul weights: wider than reduce_range's 7 bits, still exact where x86
int8 kernels add two u8 x s8 products in a saturating 16-bit lane (AVX2 without VNNI)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.operations.quantize.pairsafe import PAIR_LIMIT, pair_safe, pair_sums, widen_matmul_weights, widened_weights


def _worst_lane(q: np.ndarray) -> int:
    """The largest |a0 q0 + a1 q1| over u8 activations: each activation at 255 with the sign
    of its weight (what vpmaddubsw sums before saturating)."""
    return int((255 * pair_sums(q)).max())


def _mlp(path, w1: np.ndarray, w2: np.ndarray):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w1.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", w2.shape[1]])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _weights(path):
    m = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


@pytest.mark.parametrize("k", [7, 64])
def test_hostile_weights_stay_within_the_lane(tmp_path, cli, k):
    """Neighbours both at the channel's maximum (the case where 8 bits each would overflow)
    and an odd K: the bound holds, and no scale is coarser than reduce_range's."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((k, 16)).astype(np.float32)
    w1[0:2, :] = 3.0                       # a pair of two equal maxima per column
    w1[2:4, 3] = [-2.9, 2.9]               # opposite signs count by magnitude too
    w1[:, 5] = 0.0                         # an all-zero column
    w2 = rng.standard_normal((16, 3)).astype(np.float32)
    out = tmp_path / "q.onnx"
    r = cli("quantize", _mlp(tmp_path / "m.onnx", w1, w2), "-o", out, "--no-budget", "--json")
    assert r.code == 0, r
    w = _weights(out)
    q1 = w["w1_quantized"]
    assert _worst_lane(q1) <= 32767 and pair_safe(q1)
    assert np.all(q1[:, 5] == 0)
    # column 0: pair (3, 3) -> reduce_range's 64 is as wide as it can be; never coarser
    assert np.abs(q1[:, 0].astype(int)).max() >= 64
    assert np.all(np.isfinite(w["w1_scale"])) and np.all(w["w1_scale"] > 0)


def test_widened_weights_are_more_precise_than_7_bits(tmp_path, cli):
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((96, 48)).astype(np.float32)
    w2 = rng.standard_normal((48, 8)).astype(np.float32)
    model = _mlp(tmp_path / "m.onnx", w1, w2)
    errs = {}
    for flag in ("--reduce-range", None):
        out = tmp_path / f"q{flag}.onnx"
        args = ["quantize", model, "-o", out, "--no-budget", "--json"] + ([flag] if flag else [])
        r = cli(*args)
        assert r.code == 0, r
        w = _weights(out)
        errs[flag] = float(np.abs(w["w1_quantized"] * w["w1_scale"][None, :] - w1).mean())
        assert pair_safe(w["w1_quantized"]) and pair_safe(w["w2_quantized"])
    # --reduce-range asked for by flag is taken literally: 7 bits, the reference.
    seven = np.abs(np.clip(np.rint(w1 / (np.abs(w1).max(0) / 64)), -64, 64) * (np.abs(w1).max(0) / 64) - w1).mean()
    assert errs["--reduce-range"] == pytest.approx(seven, rel=0.05)
    assert errs[None] < 0.8 * errs["--reduce-range"]


def test_vnni_target_keeps_full_range_and_is_not_rewritten(tmp_path, cli):
    rng = np.random.default_rng(3)
    model = _mlp(tmp_path / "m.onnx", rng.standard_normal((32, 16)).astype(np.float32),
                 rng.standard_normal((16, 4)).astype(np.float32))
    out = tmp_path / "q.onnx"
    r = cli("quantize", model, "-o", out, "--target-cpu", "avx512-vnni", "--no-budget", "--json")
    assert r.code == 0, r
    assert np.abs(_weights(out)["w1_quantized"].astype(int)).max() == 127
    assert not any("MatMul weight(s) use up to 8 bits" in n for n in r.json["notes"])


def test_a_weight_with_another_reader_is_left_alone():
    """Only weights read by MatMulInteger alone are rewritten: a Conv's K order is unknown."""
    w = np.array([[1.0, -2.0], [0.5, 0.25], [2.0, 1.0]], np.float32)
    base = helper.make_model(helper.make_graph([], "b", [], [], [numpy_helper.from_array(w, "w")]))
    q = np.clip(np.rint(w / (np.abs(w).max(0) / 64)), -64, 64).astype(np.int8)
    scale = (np.abs(w).max(0) / 64).astype(np.float32)
    nodes = [helper.make_node("MatMulInteger", ["a", "w_quantized", "", "w_zero_point"], ["y"]),
             helper.make_node("ConvInteger", ["a", "w_quantized"], ["z"])]
    qmodel = helper.make_model(helper.make_graph(nodes, "q", [], [], [
        numpy_helper.from_array(q, "w_quantized"), numpy_helper.from_array(scale, "w_scale"),
        numpy_helper.from_array(np.zeros(2, np.int8), "w_zero_point")]))
    assert widen_matmul_weights(base, qmodel) == 0
    del qmodel.graph.node[1]
    assert widen_matmul_weights(base, qmodel) == 1
    assert widened_weights(qmodel) == 1
    got = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    assert pair_safe(got["w_quantized"]) and int(pair_sums(got["w_quantized"]).max()) <= PAIR_LIMIT
    np.testing.assert_allclose(got["w_quantized"] * got["w_scale"], w, atol=float(got["w_scale"].max()))
