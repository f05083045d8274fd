"""A graph output declared [N, 5] on a model that produces [N, 3] passed validate silently.
The verdict stays the comparison's (the arrays are what is compared), and the result now says
which output's annotation is wrong, in a note and a machine-readable warning."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(path, declared):
    w = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_validate_warns_about_a_wrong_declared_output_shape(cli, tmp_path):
    bad = _model(tmp_path / "bad.onnx", ["N", 5])
    good = _model(tmp_path / "good.onnx", ["N", 3])
    before = _snapshot(tmp_path)
    for ref, cand in ((good, bad), (bad, good)):
        r = cli("validate", ref, cand, "--json")
        assert r.code == 0, r  # a correct model is not failed for its annotation
        assert r.json["warnings"] == [{"code": "declared_shape_mismatch", "output": "y"}]
        (note,) = [n for n in r.json["notes"] if "declares shape" in n]
        assert "bad.onnx declares shape [N, 5]" in note and ", 3]" in note, note
    r = cli("validate", good, bad)
    assert r.code == 0 and "bad.onnx declares shape [N, 5]" in r.stderr, r
    assert _snapshot(tmp_path) == before


def test_a_right_or_symbolic_annotation_says_nothing(cli, tmp_path):
    good = _model(tmp_path / "good.onnx", ["N", 3])
    loose = _model(tmp_path / "loose.onnx", ["N", "classes"])
    r = cli("validate", good, loose, "--json")
    assert r.code == 0, r
    assert r.json["warnings"] == [] and not [n for n in r.json["notes"] if "declares shape" in n]


def test_a_wrong_rank_is_named_too():
    from onnxkit.operations.validate_shapes import ShapeWatch

    model = helper.make_model(helper.make_graph(
        [], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 1])]))
    watch = ShapeWatch(lambda feeds: {"y": np.zeros((2, 3), np.float32)}, model, "m.onnx")
    watch({})
    ((name, message),) = watch.mismatches()
    assert name == "y" and "m.onnx declares shape [N, 3, 1] but the model produces [2, 3]" in message


def test_optimize_and_quantize_say_so_too(cli, tmp_path):
    bad = _model(tmp_path / "bad.onnx", ["N", 5])
    before = bad.read_bytes()
    r = cli("optimize", bad, "-o", tmp_path / "o.onnx", "--json")
    assert r.code == 0, r
    assert any("bad.onnx declares shape [N, 5]" in n for n in r.json["notes"]), r.json["notes"]
    r = cli("quantize", bad, "-o", tmp_path / "q.onnx", "--json")
    assert r.code == 0, r
    assert any("the input model declares shape [N, 5]" in n for n in r.json["notes"]), r.json["notes"]
    assert bad.read_bytes() == before
    good = _model(tmp_path / "good.onnx", ["N", 3])
    r = cli("quantize", good, "-o", tmp_path / "q2.onnx", "--json")
    assert r.code == 0 and not [n for n in r.json["notes"] if "declares shape" in n], r
