"""An output that is NaN/Inf everywhere on both sides compared no value: it fails instead of
passing with max abs diff 0. Matching NaN at some positions among finite values still passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxkit.foundation.compare import compare_once, make_tolerance


def _unary(path: Path, op: str, *, negate: bool) -> Path:
    """x[n,4] -> op(-|x|) (NaN everywhere for Log/Sqrt) or op(x) (NaN where x < 0)."""
    nodes = []
    src = "x"
    if negate:
        nodes += [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["na"])]
        src = "na"
    nodes.append(helper.make_node(op, [src], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_all_nan_on_both_sides_fails_with_the_reason(cli, tmp_path):
    ref = _unary(tmp_path / "log.onnx", "Log", negate=True)
    cand = _unary(tmp_path / "sqrt.onnx", "Sqrt", negate=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("validate", ref, cand, "--json")
    assert r.code == 1, r
    [out] = r.json["outputs"]
    assert out["problems"] == ["no finite values to compare: both sides are NaN/Inf everywhere"]
    q = cli("validate", ref, cand, "-q")
    assert q.code == 1 and q.stdout.startswith("FAILED"), q
    for preset in ("fp16", "int8"):
        assert cli("validate", ref, cand, "--preset-tol", preset).code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_nan_at_the_same_places_among_finite_values_still_passes(cli, tmp_path):
    m = _unary(tmp_path / "log.onnx", "Log", negate=False)
    r = cli("validate", m, m, "--json")
    assert r.code == 0, r


def test_inf_everywhere_on_both_sides_fails_too():
    inf = np.full((3, 2), np.inf, np.float32)
    [res] = compare_once({"y": inf}, {"y": inf.copy()}, make_tolerance())
    assert not res.passed and "no finite values" in res.problems[0]
    half = np.array([[np.nan, 1.0]], np.float32)
    [res] = compare_once({"y": half}, {"y": half.copy()}, make_tolerance())
    assert res.passed, res.problems
