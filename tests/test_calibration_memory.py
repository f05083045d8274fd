"""Static calibration collects one batch at a time, so its memory does not grow with the
number of calibration batches (scripts/bench/calib_memory.py measures it)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxkit.foundation.spec import specs_from_onnx
from onnxkit.operations.quantize.calibration import STREAMED_CALIBRATION, _Batches, _calibration_reader


@pytest.fixture(scope="module")
def small_cnn_onnx(tmp_path_factory):
    """x[batch,3,8,8] -> Conv(8, 3x3) -> Relu -> Flatten -> MatMul(10), random weights."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    g = np.random.default_rng(1)
    inits = [numpy_helper.from_array(g.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(g.standard_normal((288, 10)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("calib") / "cnn.onnx"
    onnx.save(m, str(path))
    return path


def _batches(model_path, n_rows):
    return _Batches(specs_from_onnx(onnx.load(str(model_path))), random_n=n_rows, batch=8)


def test_reader_serves_the_ranges_quantize_static_asks_for(small_cnn_onnx):
    reader = _calibration_reader(_batches(small_cnn_onnx, 20))
    assert len(reader) == 3  # 8 + 8 + 4 rows
    seen = []
    for k in range(len(reader)):
        reader.set_range(k, k + 1)
        got = []
        while (feeds := reader.get_next()) is not None:
            got.append(feeds)
        assert len(got) == 1
        seen.append(next(iter(got[0].values())))
    assert [a.shape[0] for a in seen] == [8, 8, 4]
    reader.set_range(0, 1)  # behind the current position: the stream restarts
    assert np.array_equal(next(iter(reader.get_next().values())), seen[0])
    reader.rewind()  # the unstrided protocol still reads everything
    assert sum(1 for _ in iter(reader.get_next, None)) == 3


def test_strided_calibration_gives_the_same_model_as_collecting_all_at_once(small_cnn_onnx, tmp_path):
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    outs = []
    for extra in ({}, STREAMED_CALIBRATION):
        out = tmp_path / f"q{len(outs)}.onnx"
        quantize_static(str(small_cnn_onnx), str(out), _calibration_reader(_batches(small_cnn_onnx, 40)),
                        calibrate_method=CalibrationMethod.MinMax, extra_options=dict(extra))
        outs.append({i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer})
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:
        assert np.array_equal(outs[0][k], outs[1][k]), k


def test_quantize_static_hands_the_calibrator_one_batch_at_a_time(cli, small_cnn_onnx, tmp_path, monkeypatch):
    from onnxruntime.quantization import calibrate

    per_call: list[int] = []
    original = calibrate.MinMaxCalibrater.collect_data

    def counting(self, reader):
        class Counted:
            def __init__(self):
                self.n = 0

            def get_next(self):
                feeds = reader.get_next()
                self.n += feeds is not None
                return feeds
        c = Counted()
        original(self, c)
        per_call.append(c.n)

    monkeypatch.setattr(calibrate.MinMaxCalibrater, "collect_data", counting)
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32))
    before = data.read_bytes()
    out = tmp_path / "s.onnx"
    r = cli("quantize", small_cnn_onnx, "-o", out, "--mode", "static", "--calib-data", data, "--no-budget", "--json")
    assert r.code == 0, r
    assert per_call and max(per_call) == 1 and sum(per_call) % 5 == 0, per_call  # 40 rows = 5 batches of 8
    assert data.read_bytes() == before
