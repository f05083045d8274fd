"""Benchmarking an ONNX file against itself (`bench a.onnx --vs a.onnx`, the pipeline's
bench on an ONNX source): the source side was timed through predict, whose error wrapping and
output conversion cost about a microsecond per call, and the same graph came out 1.1x faster
than itself with a tight interval, enough to pass a `min_speedup = 1.1` gate. The source is now
timed around ONNX Runtime's run alone, as the ONNX side is."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _graph(path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("ArgMax", ["y"], ["cls"], axis=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("cls", TensorProto.INT64, ["N", 1])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _feeds():
    return {"x": np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)}


def test_a_trusted_onnx_source_is_timed_without_predicts_wrapping(tmp_path, monkeypatch):
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.onnx_fw import OnnxSource
    from onnxkit.runtime.bench_source import source_call

    src = OnnxSource(_graph(tmp_path / "a.onnx"), LoadOptions(trust=True))
    expected = src.predict(_feeds())
    monkeypatch.setattr(src, "predict", lambda feeds: pytest.fail("the timed call went through predict"))
    out = source_call(src, _feeds())()
    # What ONNX Runtime's run returns, the ONNX side's timed call: a list in output order.
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(out[0], expected["y"])
    np.testing.assert_array_equal(out[1], expected["cls"])


def test_an_untrusted_onnx_source_keeps_predict_and_its_worker_times():
    from onnxkit.runtime.bench_source import source_call

    class Contained:
        framework = "onnx"

        def timed_call(self, feeds):
            return None

        def predict(self, feeds):
            return {"called": True}

    assert source_call(Contained(), {})() == {"called": True}


def test_the_contained_worker_times_the_run_alone_and_words_errors_as_before(tmp_path):
    from onnxkit.errors import InputError
    from onnxkit.runtime.contained import _timed_run
    from onnxkit.runtime.session import make_session

    sess = make_session(_graph(tmp_path / "a.onnx"))
    out, (wall, cpu) = _timed_run(sess, _feeds(), None)
    assert list(out) == ["y", "cls"] and wall > 0 and cpu >= 0
    np.testing.assert_array_equal(out["y"], sess.run(_feeds())["y"])
    bad = {"x": np.zeros((3, 5), np.float32)}
    with pytest.raises(InputError) as got:
        _timed_run(sess, bad, None)
    with pytest.raises(InputError) as want:
        sess.run(bad)
    assert got.value.message == want.value.message
    assert got.value.message.startswith("ONNX Runtime could not run the model on these inputs: ")


@pytest.mark.slow
def test_the_same_graph_against_itself_is_near_1x(cli, tmp_path):
    a = _graph(tmp_path / "a.onnx")
    before = a.read_bytes()
    r = cli("bench", a, "--vs", a, "--trust", "--threads", "1", "--batch-size", "1", "--iterations", "300", "--json")
    assert r.code == 0, r
    (entry,) = [e for e in r.json["entries"] if not e["is_source"]]
    assert 0.85 < entry["speedup_vs_source"] < 1.08, json.dumps(entry)[:2000]
    assert a.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.onnx"]
