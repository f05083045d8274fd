"""Comparisons that cannot fail are flagged (issue 15, item 7); relative error beside the
absolute one; agreement metrics chosen by an output's shape and dtype, not its name (issue 21)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.foundation.compare import REFERENCE_CONSTANT, Tolerance, compare_once


def _model(path: Path, kind: str) -> Path:
    """x[n,4] -> y: 'zeros' (x * 0), 'uniform' (Softmax of x * 0: 0.25 everywhere), or
    'live' (Softmax of x, which varies)."""
    nodes = []
    inits = [numpy_helper.from_array(np.zeros((1, 4), np.float32), "zero")]
    if kind == "live":
        nodes.append(helper.make_node("Softmax", ["x"], ["y"], axis=1))
    else:
        nodes.append(helper.make_node("Mul", ["x", "zero"], ["z" if kind == "uniform" else "y"]))
        if kind == "uniform":
            nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_all_zero_reference_is_flagged_in_text_and_json(cli, tmp_path):
    m = _model(tmp_path / "zeros.onnx", "zeros")
    r = cli("validate", m, m, "--json")
    assert r.code == 0, r  # a warning, not a verdict: the outputs do agree
    assert r.json["warnings"] == [{"code": REFERENCE_CONSTANT, "output": "y"}]
    assert any("reference output is constant (0 everywhere" in n for n in r.json["notes"])
    text = cli("validate", m, m)
    assert "reference output is constant" in text.stderr + text.stdout


def test_constant_softmax_is_flagged(cli, tmp_path):
    # What a random-init Keras MobileNetV2 gives: 1/classes in every element.
    m = _model(tmp_path / "uniform.onnx", "uniform")
    r = cli("validate", m, m, "--json")
    assert r.code == 0 and r.json["warnings"] == [{"code": REFERENCE_CONSTANT, "output": "y"}], r
    assert any("0.25 everywhere" in n for n in r.json["notes"])


def test_varying_reference_has_no_warning(cli, tmp_path):
    m = _model(tmp_path / "live.onnx", "live")
    r = cli("validate", m, m, "--json")
    assert r.code == 0 and r.json["warnings"] == [], r
    assert r.json["outputs"][0]["rel_error"] == 0.0


def test_tiny_spread_below_one_in_a_million_counts_as_constant():
    ref = {"y": np.full((4, 3), 1e-3, np.float32) + np.float32(1e-12)}
    ref["y"][0, 0] = 1e-3
    (o,) = compare_once(ref, {"y": ref["y"].copy()})
    assert o.warning_codes == [REFERENCE_CONSTANT]
    live = {"y": np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3)}
    (o,) = compare_once(live, {"y": live["y"].copy()})
    assert o.warning_codes == [] and o.warnings == []


def test_relative_error_is_reported_beside_absolute():
    ref = {"y": np.array([[3.0, 4.0]], np.float32)}
    cand = {"y": np.array([[3.0, 4.5]], np.float32)}
    (o,) = compare_once(ref, cand, Tolerance(atol=1.0, rtol=0.0))
    assert o.max_abs == 0.5
    assert abs(o.rel_error - 0.1) < 1e-9  # ||(0, 0.5)|| / ||(3, 4)||
    assert o.cosine is not None and o.cosine < 1.0
    zeros = {"y": np.zeros((2, 2), np.float32)}
    (o,) = compare_once(zeros, {"y": zeros["y"].copy()})
    assert o.rel_error is None  # undefined against an all-zero reference, never a fake 0


def test_top1_agreement_follows_shape_not_name():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((16, 5)).astype(np.float32)
    flipped = scores.copy()
    flipped[0] = -flipped[0]
    (o,) = compare_once({"output_0": scores}, {"output_0": flipped})
    assert o.top1_agreement is not None and o.top1_agreement < 1.0  # a default name does not turn it off
    (o,) = compare_once({"y": scores[:, :1]}, {"y": scores[:, :1]})
    assert o.top1_agreement is None  # one column: nothing to rank
    labels = np.arange(16, dtype=np.int64) % 3
    (o,) = compare_once({"whatever": labels}, {"whatever": labels.copy()})
    assert o.kind == "label" and o.label_agreement == 1.0
