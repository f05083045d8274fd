"""The benchmark suite's roofline: GEMM work counted from hand-built ONNX graphs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from scripts.bench import profile_ops, roofline

MS = helper.make_opsetid("com.microsoft", 1)


def _model(nodes, inputs, inits=(), opsets=None):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(nodes[-1].output[0], T.FLOAT, None)],
                              list(inits))
    return helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17), MS])


def _f(name, shape):
    return helper.make_tensor_value_info(name, T.FLOAT, shape)


def _w(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def test_matmul_counts_twice_the_multiply_adds_at_the_given_batch():
    m = _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [_f("x", ["b", 16, 64])], [_w("W", (64, 32))])
    for b in (1, 4):
        w = roofline.count_work(m, {"x": (b, 16, 64)})
        assert w.ops() == w.ops("float") == 2 * b * 16 * 64 * 32
        assert w.ops("int8") == 0 and not w.uncounted
        assert w.gemms[0].probe == ("matmul", (b, 16, 64), (64, 32))


def test_gemm_honours_transposes():
    m = _model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="g", transB=1)], [_f("x", ["b", 48])],
               [_w("W", (10, 48)), _w("B", (10,))])
    assert roofline.count_work(m, {"x": (8, 48)}).ops() == 2 * 8 * 48 * 10


def test_conv_counts_per_output_element_with_stride_and_groups():
    m = _model([helper.make_node("Conv", ["x", "W"], ["y"], name="c", strides=[2, 2], pads=[1, 1, 1, 1], group=2)],
               [_f("x", ["b", 8, 32, 32])], [_w("W", (16, 4, 3, 3))])
    w = roofline.count_work(m, {"x": (3, 8, 32, 32)})
    # output 3 x 16 x 16 x 16, each a dot product over 4 channels x 3 x 3
    assert w.ops() == 2 * (3 * 16 * 16 * 16) * (4 * 3 * 3)


def test_qlinearconv_is_int8_work_with_its_weight_at_input_3():
    inits = [_w("W", (16, 8, 1, 1), np.int8), _w("xs", (), np.float32), _w("xz", (), np.uint8),
             _w("ws", (), np.float32), _w("wz", (), np.int8), _w("ys", (), np.float32), _w("yz", (), np.uint8)]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "W", "ws", "wz", "ys", "yz"], ["y"], name="q")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", T.UINT8, ["b", 8, 10, 10])],
                              [helper.make_tensor_value_info("y", T.UINT8, None)], inits)
    w = roofline.count_work(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": (2, 8, 10, 10)})
    assert w.ops("int8") == 2 * (2 * 16 * 10 * 10) * 8 and w.ops("float") == 0


def test_dynamic_quantize_matmul_is_int8():
    node = helper.make_node("DynamicQuantizeMatMul", ["x", "W", "s", "z"], ["y"], name="d", domain="com.microsoft")
    m = _model([node], [_f("x", ["b", 128, 384])], [_w("W", (384, 1536), np.int8), _w("s", (), np.float32),
                                                     _w("z", (), np.int8)])
    w = roofline.count_work(m, {"x": (8, 128, 384)})
    assert w.ops("int8") == 2 * 8 * 128 * 384 * 1536 and w.ops("float") == 0


def test_qdq_fed_matmul_counts_as_int8():
    # QuantizeLinear -> DequantizeLinear on both inputs: ORT runs it as an int8 GEMM.
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["Wq", "s", "wz"], ["Wd"]),
             helper.make_node("MatMul", ["xd", "Wd"], ["y"], name="mm")]
    m = _model(nodes, [_f("x", ["b", 32])], [_w("Wq", (32, 16), np.int8), _w("s", (), np.float32),
                                            _w("z", (), np.uint8), _w("wz", (), np.int8)])
    w = roofline.count_work(m, {"x": (4, 32)})
    assert w.ops("int8") == 2 * 4 * 32 * 16 and w.ops("float") == 0


def test_multi_head_attention_counts_both_activation_products():
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], name="mha", domain="com.microsoft", num_heads=4)
    m = _model([node], [_f("q", ["b", "s", 64]), _f("k", ["b", "s", 64]), _f("v", ["b", "s", 64])])
    w = roofline.count_work(m, {"q": (2, 10, 64), "k": (2, 10, 64), "v": (2, 10, 64)})
    # Q.K^T: 2*B*S*L*D, .V the same with D_v; both float
    assert w.ops("float") == 2 * (2 * 2 * 10 * 10 * 64) and len(w.gemms) == 2
    assert w.gemms[0].probe == ("matmul", (2, 4, 10, 16), (2, 4, 16, 10))


def test_fused_attention_counts_projection_and_products():
    node = helper.make_node("Attention", ["x", "W", "B"], ["y"], name="att", domain="com.microsoft", num_heads=2)
    m = _model([node], [_f("x", ["b", "s", 32])], [_w("W", (32, 96)), _w("B", (96,))])
    w = roofline.count_work(m, {"x": (3, 8, 32)})
    assert w.ops() == 2 * 3 * 8 * 32 * 96 + 2 * (2 * 3 * 8 * 8 * 32)


def test_matmul_nbits_counts_its_k_by_n_weight():
    node = helper.make_node("MatMulNBits", ["x", "Wq", "s"], ["y"], name="n", domain="com.microsoft", K=64, N=32,
                            bits=4, block_size=32)
    m = _model([node], [_f("x", ["b", 64])], [_w("Wq", (32, 2, 16), np.uint8), _w("s", (64,), np.float32)])
    assert roofline.count_work(m, {"x": (5, 64)}).ops("float") == 2 * 5 * 64 * 32


def test_ops_it_does_not_model_are_listed_not_guessed():
    m = _model([helper.make_node("Einsum", ["a", "b"], ["y"], name="e", equation="ij,jk->ik")],
               [_f("a", [4, 5]), _f("b", [5, 6])])
    w = roofline.count_work(m, {"a": (4, 5), "b": (5, 6)})
    assert w.ops() == 0 and w.uncounted == ["e (Einsum): not modelled"]


def test_counting_leaves_no_files_in_the_working_directory(tmp_path, monkeypatch):
    # ONNX Runtime's symbolic inference dumps the model into the working directory when it
    # cannot finish (here: DynamicQuantizeMatMul).
    monkeypatch.chdir(tmp_path)
    node = helper.make_node("DynamicQuantizeMatMul", ["x", "W", "s", "z"], ["y"], name="d", domain="com.microsoft")
    m = _model([node], [_f("x", ["b", 4])], [_w("W", (4, 3), np.int8), _w("s", (), np.float32), _w("z", (), np.int8)])
    assert roofline.count_work(m, {"x": (2, 4)}).ops("int8") == 2 * 2 * 4 * 3
    assert list(tmp_path.iterdir()) == []


def test_bound_divides_each_precision_by_its_own_peak():
    mm = helper.make_node("MatMul", ["x", "W"], ["h"], name="f")
    dq = helper.make_node("DynamicQuantizeMatMul", ["h", "Wq", "s", "z"], ["y"], name="q", domain="com.microsoft")
    m = _model([mm, dq], [_f("x", [10, 20])], [_w("W", (20, 30)), _w("Wq", (30, 40), np.int8),
                                              _w("s", (), np.float32), _w("z", (), np.int8)])
    w = roofline.count_work(m, {"x": (10, 20)})
    peaks = roofline.Peaks()
    pf, pq = w.gemms[0].probe, w.gemms[1].probe
    peaks.rates = {(pf, "float", 1): 1e9, (pq, "float", 1): 2e9, (pq, "int8", 1): 4e9}
    b = roofline.bound(w, peaks, 1, {pf, pq})
    # float work at the best float rate among the model's shapes (2e9), int8 at 4e9
    assert b["bound_ms"] == pytest.approx(1000 * (2 * 10 * 20 * 30 / 2e9 + 2 * 10 * 30 * 40 / 4e9))
    # at each GEMM's own shape: the float MatMul at 1e9
    assert b["shape_bound_ms"] == pytest.approx(1000 * (2 * 10 * 20 * 30 / 1e9 + 2 * 10 * 30 * 40 / 4e9))


def test_probe_models_run_and_time_in_both_precisions():
    for probe in (("matmul", (8, 16), (16, 4)), ("conv", (1, 4, 8, 8), (8, 4, 3, 3), (("pads", (1, 1, 1, 1)),))):
        for dtype in ("float", "int8"):
            assert roofline.time_probe(probe, dtype, 1, min_s=0.0, min_reps=2) > 0
    assert roofline.probe_ops(("conv", (1, 4, 8, 8), (8, 4, 3, 3), (("pads", (1, 1, 1, 1)),))) == 2 * 8 * 8 * 8 * 36


def test_gemm_rates_divide_counted_work_by_kernel_time():
    prof = {"threads": 1, "kernel_ms": 10.0, "by_op": [{"op": "DynamicQuantizeMatMul", "ms": 8.0, "pct": 80.0},
                                                       {"op": "Softmax", "ms": 2.0, "pct": 20.0}]}
    rates = profile_ops.gemm_rates(prof, {"ops_int8": 8e9, "ops_float": 0}, {"int8 1t": 2000.0})
    assert rates["int8"]["gops"] == pytest.approx(1000.0) and rates["int8"]["of_peak"] == pytest.approx(0.5)
    assert "float" not in rates


def test_conv_transpose_counts_per_input_element_and_has_its_own_probe():
    m = _model([helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="up", strides=[2, 2])],
               [_f("x", ["b", 8, 5, 5])], [_w("W", (8, 4, 2, 2))])
    w = roofline.count_work(m, {"x": (2, 8, 5, 5)})
    assert w.ops() == 2 * (2 * 8 * 5 * 5) * (4 * 2 * 2)
    probe = w.gemms[0].probe
    assert probe[0] == "convT" and roofline.probe_ops(probe) == w.ops()
    assert roofline.time_probe(probe, "float", 1, min_s=0.0, min_reps=2) > 0


def test_shapes_by_running_reads_the_shapes_ort_produces():
    m = _model([helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])],
               [_f("x", ["b", 6])], [_w("W", (6, 5))])
    assert roofline.shapes_by_running(m, {"x": (3, 6)}, {"h", "x"}) == {"h": (3, 5), "x": (3, 6)}
