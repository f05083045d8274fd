"""Models over the protobuf limit, scaled down: a ~25 MB model with external data goes
through the large-model path (threshold lowered) of optimize, quantize and validate.
The full-size check with peak memory is scripts/bench_large_model.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import uses_external_data

import onnxkit.foundation.onnx_io as onnx_io

THRESHOLD = 1_000_000  # bytes: the test model is ~25x over it


@pytest.fixture(autouse=True)
def _large_threshold(monkeypatch):
    monkeypatch.setattr(onnx_io, "EXTERNAL_DATA_THRESHOLD", THRESHOLD)


@pytest.fixture(scope="module")
def big_onnx(tmp_path_factory) -> Path:
    """x[batch, 256] -> MatMul(Transpose(W1t)) + b -> Relu -> MatMul W2 -> y[batch, 64].
    W1 is stored transposed behind a Transpose node, so constant folding has work to do."""
    rng = np.random.default_rng(0)
    w1t = (rng.standard_normal((8192, 256)) * 0.05).astype(np.float32)  # 8 MB
    b1 = (rng.standard_normal(8192) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((8192, 512)) * 0.02).astype(np.float32)  # 16 MB
    nodes = [
        helper.make_node("Transpose", ["w1t"], ["w1"], perm=[1, 0], name="t"),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes, "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])],
        [numpy_helper.from_array(w1t, "w1t"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("large")
    path = folder / "big.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="big.onnx.data", size_threshold=1024)
    return path


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _x(batch: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((batch, 256)).astype(np.float32)


def _assert_external(path: Path) -> None:
    data = path.parent / (path.name + ".data")
    assert data.exists() and data.stat().st_size > 20_000_000
    m = onnx.load(str(path), load_external_data=False)
    big = [t for t in m.graph.initializer if np.prod(t.dims) * 4 > 1024]
    assert big and all(uses_external_data(t) for t in big)
    assert path.stat().st_size < 100_000  # the graph alone


def test_optimize_large_model_by_path(cli, big_onnx, tmp_path):
    out = tmp_path / "opt.onnx"
    r = cli("optimize", big_onnx, "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    names = [p["name"] for p in doc["passes"]]
    assert "ort_basic (in place of constant_folding)" in names
    assert any("replaced by ONNX Runtime's basic level" in n for n in doc["notes"])
    assert doc["ops_before"]["Transpose"] == 1 and "Transpose" not in doc["ops_after"]  # folded
    assert doc["validation"]["passed"] is True
    _assert_external(out)
    x = _x()
    np.testing.assert_allclose(_ort_run(out, x), _ort_run(big_onnx, x), rtol=1e-4, atol=1e-5)
    # no scratch copies of the weights are left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.onnx", "opt.onnx.data"]

    r = cli("validate", big_onnx, out, "--json")
    assert r.code == 0, r
    assert r.json["passed"] is True


def test_quantize_dynamic_large_model_by_path(cli, big_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", big_onnx, "-o", out, "--mode", "dynamic", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["nodes_quantized"] == 2  # the two MatMuls with a constant weight
    # ORT's basic level fused MatMul + Add into a Gemm; both became int8 weight by weight
    assert doc["ops_after"] == {"com.microsoft.DynamicQuantizeMatMul": 2, "Relu": 1}
    assert any("quantized weight by weight from disk" in n for n in doc["notes"])
    assert any("ONNX Runtime basic optimization by path" in n for n in doc["notes"])
    assert doc["budget_met"] is True
    m = onnx.load(str(out), load_external_data=False)
    assert any(uses_external_data(t) for t in m.graph.initializer)
    assert (out.parent / "q.onnx.data").stat().st_size < 12_000_000  # int8: about a quarter of 24 MB
    x = _x(8)
    ref, got = _ort_run(big_onnx, x), _ort_run(out, x)
    cos = float(np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos > 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.data"]


def test_fp16_on_large_model_is_refused_before_work(cli, big_onnx, tmp_path):
    r = cli("optimize", big_onnx, "-o", tmp_path / "o.onnx", "--fp16")
    assert r.code == 2, r
    assert "--fp16 is not supported on models over 2 GB" in r.stderr
    assert not any(tmp_path.iterdir())


def test_save_streaming_moves_inline_tensors_and_aligns(tmp_path):
    from onnxkit.passes.large import ALIGN, save_streaming

    w = np.arange(5000, dtype=np.float32).reshape(50, 100)
    small = np.arange(4, dtype=np.int64)
    g = helper.make_graph([helper.make_node("Gather", ["w", "i"], ["y"])], "g",
                          [helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 100])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(small, "unused"),
                           numpy_helper.from_array(np.ones((300, 1000), np.float32), "big")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    dest = save_streaming(m, tmp_path, tmp_path / "s.onnx")
    back = onnx.load(str(dest), load_external_data=False)
    w_t = next(t for t in back.graph.initializer if t.name == "w")
    assert uses_external_data(w_t)
    big_t = next(t for t in back.graph.initializer if t.name == "big")
    offset = int({e.key: e.value for e in big_t.external_data}["offset"])
    assert offset > 0 and offset % ALIGN == 0  # mappable by ONNX Runtime
    assert not uses_external_data(next(t for t in back.graph.initializer if t.name == "unused"))
    full = onnx.load(str(dest))
    np.testing.assert_array_equal(numpy_helper.to_array(full.graph.initializer[0]), w)
    # a second save from the external file copies the bytes through unchanged
    dest2 = save_streaming(back, tmp_path, tmp_path / "s2.onnx")
    np.testing.assert_array_equal(numpy_helper.to_array(onnx.load(str(dest2)).graph.initializer[0]), w)


def _mixed_model(folder: Path) -> Path:
    """ids -> Gather(table) ; x -> MatMul(w1) -> Relu -> MatMul(w2) ; sum of both. External data."""
    rng = np.random.default_rng(4)
    # rows three orders of magnitude apart, as in real embedding tables: per-row scales matter
    table = (rng.standard_normal((50, 32)) * np.logspace(-2, 1, 50)[:, None]).astype(np.float32)
    w1 = (rng.standard_normal((64, 96)) * 0.1).astype(np.float32)
    w1[:, 5] = 0.0  # an all-zero column must not divide by zero
    w2 = (rng.standard_normal((96, 32)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="mm2"),
        helper.make_node("Add", ["m", "emb"], ["y"], name="sum"),
    ]
    g = helper.make_graph(nodes, "mixed",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]),
                           helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
                          [numpy_helper.from_array(a, n) for a, n in ((table, "table"), (w1, "w1"), (w2, "w2"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = folder / "mixed.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mixed.onnx.data", size_threshold=0)
    return path


def test_streaming_quantizer_matches_onnxruntime_quantize_dynamic(tmp_path):
    """The weight-by-weight quantizer used for models over 2 GB gives ORT's per-channel int8
    MatMul results, quantizes embedding tables, and honours exclusions."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from onnxkit.operations.quantize.stream import quantize_dynamic_streaming

    src = _mixed_model(tmp_path)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((16, 64)).astype(np.float32), "ids": rng.integers(0, 50, 16).astype(np.int64)}

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0].astype(np.float64)

    def stream(name, exclude=()):
        graph = onnx.load(str(src), load_external_data=False)
        res = quantize_dynamic_streaming(graph, tmp_path, tmp_path / name, exclude=set(exclude))
        return res, tmp_path / name

    res, full = stream("s.onnx")
    assert res.quantized == {"embed": "Gather (int8 rows) + Mul(row scale)", "mm1": "DynamicQuantizeMatMul", "mm2": "DynamicQuantizeMatMul"}
    out = onnx.load(str(full), load_external_data=False)
    assert not {"table", "w1", "w2"} & {t.name for t in out.graph.initializer}  # no float copy left behind
    assert all(uses_external_data(t) for t in out.graph.initializer if t.name.endswith("_int8"))
    ref = run(src)
    cos = float((ref * run(full)).sum() / (np.linalg.norm(ref) * np.linalg.norm(run(full))))
    assert cos > 0.999

    # MatMuls: ORT's own per-channel quantization of the same weights, run by the same kernels
    ort_mm = tmp_path / "ort.onnx"
    quantize_dynamic(str(src), str(ort_mm), per_channel=True, weight_type=QuantType.QInt8, reduce_range=False,
                     op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    _, ours_mm = stream("mm.onnx", exclude={"embed"})
    np.testing.assert_allclose(run(ours_mm), run(ort_mm), rtol=1e-5, atol=1e-5)

    # the table: every gathered value within half a step of its row's int8 scale
    res, ours_emb = stream("emb.onnx", exclude={"mm1", "mm2"})
    assert set(res.quantized) == {"embed"}
    table = numpy_helper.to_array(next(t for t in onnx.load(str(src)).graph.initializer if t.name == "table"))
    half_step = np.abs(table).max(axis=1) / 127 / 2
    assert (np.abs(run(ours_emb) - ref) <= half_step[feeds["ids"], None] + 1e-6).all()
    ops = [n.op_type for n in onnx.load(str(ours_emb), load_external_data=False).graph.node]
    assert ops.count("MatMul") == 2 and ops.count("Gather") == 2 and "Cast" in ops


def test_streaming_quantizer_handles_gemm_with_transposed_weight(tmp_path):
    """torch's TorchScript export writes Linear as Gemm(transB=1) with the weight [out, in]."""
    import onnxruntime as ort

    from onnxkit.operations.quantize.stream import quantize_dynamic_streaming

    rng = np.random.default_rng(9)
    w = (rng.standard_normal((24, 40)) * 0.2).astype(np.float32)  # [out, in]
    b = rng.standard_normal(24).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], "gemm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 40])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "gemm.onnx"
    onnx.save_model(m, str(src), save_as_external_data=True, location="gemm.onnx.data", size_threshold=0)
    # reduce_range: 7-bit weights, so AVX2 CPUs without VNNI do not saturate (as quantize defaults there)
    res = quantize_dynamic_streaming(onnx.load(str(src), load_external_data=False), tmp_path, tmp_path / "q.onnx",
                                     reduce_range=True)
    assert res.quantized == {"fc": "DynamicQuantizeMatMul"}
    q = onnx.load(str(tmp_path / "q.onnx"))
    node = q.graph.node[0]
    assert node.op_type == "DynamicQuantizeMatMul" and node.input[4] == "b"
    wq = numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == node.input[1]))
    scale = numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == node.input[2]))
    assert wq.shape == (40, 24) and wq.dtype == np.int8
    np.testing.assert_allclose(wq.astype(np.float32) * scale, w.T, atol=float(scale.max()) / 2 + 1e-7)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    ref = x @ w.T + b
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got))) > 0.999
