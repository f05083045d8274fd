"""onnxkit optimize: passes, presets, fp16, opset conversion, validation against the input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxkit import passes as P


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory):
    """A small Conv+BatchNorm+Relu+Linear net, exported without constant folding so the
    BatchNormalization node is still there for the optimizer to fuse."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8 * 6 * 6, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

    net = Net()
    with torch.no_grad():  # non-trivial BN statistics, so folding them is a real change
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    net.eval()
    path = tmp_path_factory.mktemp("opt") / "cnn.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, do_constant_folding=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                      opset_version=17)
    return path


def test_default_preset_fuses_batchnorm_and_validates(cli, cnn_onnx, tmp_path):
    out = tmp_path / "opt.onnx"
    r = cli("optimize", cnn_onnx, "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["ops_before"]["BatchNormalization"] == 1
    assert "BatchNormalization" not in doc["ops_after"]
    assert doc["nodes_after"] < doc["nodes_before"]
    assert doc["validation"]["passed"] is True
    assert doc["validated"] is True
    assert [p["name"] for p in doc["passes"]] == P.PRESETS["default"]
    assert sum(doc["ops_after"].values()) == doc["nodes_after"] == len(onnx.load(str(out)).graph.node)


def test_list_passes_names_onnxoptimizer_and_ort_passes(cli):
    r = cli("optimize", "--list-passes", "--json")
    assert r.code == 0, r
    names = {p["name"] for p in r.json["passes"]}
    assert {"fuse_bn_into_conv", "eliminate_identity", "constant_folding", "shape_inference", "ort_extended"} <= names
    assert r.json["presets"]["default"] == P.PRESETS["default"]


def test_unknown_pass_is_usage_error(cli, cnn_onnx, tmp_path):
    r = cli("optimize", cnn_onnx, "-o", tmp_path / "o.onnx", "--passes", "fuse_bn_into_conv,fuse_bn_into_cnov")
    assert r.code == 2, r
    assert "unknown pass 'fuse_bn_into_cnov'" in r.stderr
    assert "did you mean fuse_bn_into_conv" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_explicit_passes_run_in_order(cli, cnn_onnx, tmp_path):
    r = cli("optimize", cnn_onnx, "-o", tmp_path / "o.onnx", "--passes", "fuse_bn_into_conv,eliminate_identity", "--json")
    assert r.code == 0, r
    assert [p["name"] for p in r.json["passes"]] == ["fuse_bn_into_conv", "eliminate_identity"]
    assert r.json["passes"][0]["changed"] is True


def test_fp16_keeps_float32_io(cli, cnn_onnx, tmp_path):
    out = tmp_path / "fp16.onnx"
    r = cli("optimize", cnn_onnx, "-o", out, "--fp16", "--json")
    assert r.code == 0, r
    m = onnx.load(str(out))
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in m.graph.output] == [onnx.TensorProto.FLOAT]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    assert r.json["validation"]["tolerance"]["preset"] == "fp16"
    assert r.json["validation"]["passed"] is True


def test_opset_conversion(cli, cnn_onnx, tmp_path):
    out = tmp_path / "o19.onnx"
    r = cli("optimize", cnn_onnx, "-o", out, "--opset", "19", "--json")
    assert r.code == 0, r
    assert r.json["opset_before"] == 17 and r.json["opset_after"] == 19
    assert {i.domain: i.version for i in onnx.load(str(out)).opset_import}[""] == 19


def test_opset_conversion_failure_is_exit_4_naming_the_pass(cli, cnn_onnx, tmp_path):
    r = cli("optimize", cnn_onnx, "-o", tmp_path / "o.onnx", "--opset", "13")  # Relu-14 has no down adapter
    assert r.code == 4, r
    assert "cannot convert opset 17 down to 13" in r.stderr and "below its opset-" in r.stderr


def test_output_equal_to_input_is_refused(cli, cnn_onnx):
    r = cli("optimize", cnn_onnx, "-o", cnn_onnx)
    assert r.code == 2, r
    assert "would overwrite the input" in r.stderr


def test_failing_pass_is_conversion_error(cli, cnn_onnx, tmp_path, monkeypatch):
    def boom(model):
        raise RuntimeError("kaboom inside the library")

    P.list_passes()
    monkeypatch.setitem(P._REGISTRY, "boom", P.Pass("boom", "test", "always fails", boom))
    r = cli("optimize", cnn_onnx, "-o", tmp_path / "o.onnx", "--passes", "boom")
    assert r.code == 4, r
    assert "pass boom (test) failed: kaboom inside the library" in r.stderr
    assert "Traceback" not in r.stderr


def test_out_of_tolerance_result_exits_1_but_is_written(cli, cnn_onnx, tmp_path, monkeypatch):
    from onnx import numpy_helper

    def perturb(model):
        t = next(t for t in model.graph.initializer if t.name.endswith("fc.weight") or "fc" in t.name)
        arr = numpy_helper.to_array(t) + np.float32(0.05)
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return model, True

    P.list_passes()
    monkeypatch.setitem(P._REGISTRY, "perturb", P.Pass("perturb", "test", "changes a weight", perturb))
    out = tmp_path / "bad.onnx"
    r = cli("optimize", cnn_onnx, "-o", out, "--passes", "perturb", "--json")
    assert r.code == 1, r
    assert r.json["validation"]["passed"] is False
    assert out.exists()
    assert any("written anyway" in n for n in r.json["notes"])


def test_transformer_auto_on_a_non_transformer_fuses_nothing(cli, cnn_onnx, tmp_path):
    r = cli("optimize", cnn_onnx, "-o", tmp_path / "o.onnx", "--transformer", "auto", "--json")
    assert r.code == 0, r
    assert r.json["transformer"]["model_type"] == "none"
    assert any("no transformer detected" in n for n in r.json["notes"])


def test_ort_level_all_warns_that_the_file_is_tied_to_the_runtime(cli, cnn_onnx, tmp_path):
    r = cli("optimize", cnn_onnx, "-o", tmp_path / "o.onnx", "--level", "all", "--json")
    assert r.code == 0, r
    assert r.json["passes"][-1]["name"] == "ort_all"
    assert any("only with the CPU execution provider" in n for n in r.json["notes"])
    assert r.json["validation"]["passed"] is True


def test_fp16_accepts_minus_inf_constants_it_did_not_create():
    """Attention masks hold -inf on purpose; only overflow made by the conversion is refused."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit.passes.fp16 import to_fp16

    def model(weight: float) -> onnx.ModelProto:
        g = helper.make_graph(
            [helper.make_node("Mul", ["x", "w"], ["h"]),
             helper.make_node("Max", ["h", "neg"], ["y"])],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            [numpy_helper.from_array(np.array([weight, 1.0], np.float32), "w"),
             numpy_helper.from_array(np.array([-np.inf], np.float32), "neg")],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    to_fp16(model(2.0))  # the -inf constant was there before: fine
    # A weight beyond float16's range is clamped by the converter, not turned into inf.
    out = to_fp16(model(1e6))
    w = next(numpy_helper.to_array(t) for t in out.graph.initializer if t.name == "w")
    assert w.dtype == np.float16 and np.isfinite(w).all() and w[0] == np.float16(65504)


@pytest.mark.parametrize("with_bias", [True, False])
def test_split_skip_layernorm_computes_the_same(tmp_path, with_bias):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit.passes import apply_pass
    from onnxkit.runtime.session import make_session

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), n) for n in ("gamma", "beta", "bias")]
    ins = ["x", "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
    g = helper.make_graph(
        [helper.make_node("SkipLayerNormalization", ins, ["y", "", "", "sum"], domain="com.microsoft", epsilon=1e-5, name="sln"),
         helper.make_node("Mul", ["y", "sum"], ["m"]),
         # An omitted optional input ("") elsewhere must not count as a use of "" outputs.
         helper.make_node("Clip", ["m", "", ""], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 8]), helper.make_tensor_value_info("skip", TensorProto.FLOAT, ["b", 3, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", 3, 8])],
        inits if with_bias else inits[:2],
    )
    fused = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    fused.ir_version = 8
    split, record = apply_pass("split_skip_layernorm", onnx.load_from_string(fused.SerializeToString()))
    assert record.changed
    assert [n.op_type for n in split.graph.node] == (["Add", "Add"] if with_bias else ["Add"]) + ["LayerNormalization", "Mul", "Clip"]
    feeds = {"x": rng.standard_normal((2, 3, 8)).astype(np.float32), "skip": rng.standard_normal((2, 3, 8)).astype(np.float32)}
    a = make_session(fused).run(feeds)["z"]
    b = make_session(split).run(feeds)["z"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _attention_model(*, sized: bool, with_bias_input: bool, mask_index: bool = False, packed_name: str | None = None,
                     opset: int = 17, layers: int = 1):
    """One com.microsoft Attention whose packed weight is a Concat of Q, K, V initializers,
    as onnxscript's fuser writes it; optional additive attention bias (input 5)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    d, heads = 8, 2
    inits = [numpy_helper.from_array(rng.standard_normal((d, d)).astype(np.float32), n) for n in ("wq", "wk", "wv")]
    inits.append(numpy_helper.from_array(rng.standard_normal(3 * d).astype(np.float32), "bqkv"))
    inits.append(numpy_helper.from_array(rng.standard_normal((d, 4)).astype(np.float32), "wout"))
    attrs = {"num_heads": heads} | ({"qkv_hidden_sizes": [d, d, d]} if sized else {})
    weight = packed_name or "wqkv"
    if packed_name:  # one packed initializer, named as onnxruntime.transformers names it
        packed = np.concatenate([numpy_helper.to_array(t) for t in inits[:3]], axis=1)
        inits = [numpy_helper.from_array(packed, packed_name)] + inits[3:]
        nodes = []
    else:
        nodes = [helper.make_node("Concat", ["wq", "wk", "wv"], ["wqkv"], axis=1, name="pack")]
    x = "x"
    for i in range(layers):  # every layer shares the packed weight (ALBERT-style)
        ins = [x, weight, "bqkv", "mask" if mask_index else "", "", "attn_bias" if with_bias_input else ""]
        name = "attn" if i == 0 else f"attn{i}"
        nodes.append(helper.make_node("Attention", ins, [f"ctx{i}"], name=name, domain="com.microsoft", **attrs))
        x = f"ctx{i}"
    nodes.append(helper.make_node("MatMul", [x, "wout"], ["y"], name="proj"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 5, d])]
    if with_bias_input:
        inputs.append(helper.make_tensor_value_info("attn_bias", TensorProto.FLOAT, ["b", 1, 5, 5]))
    if mask_index:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, ["b", 5]))
    g = helper.make_graph(nodes, "attn", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 5, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    feeds = {"x": rng.standard_normal((3, 5, d)).astype(np.float32)}
    if with_bias_input:
        bias = np.zeros((3, 1, 5, 5), np.float32)
        bias[1, :, :, 3:] = -1e4  # sample 1 masks its last two keys
        feeds["attn_bias"] = bias
    if mask_index:
        feeds["mask"] = np.ones((3, 5), np.int32)
    return m, feeds


@pytest.mark.parametrize("sized,with_bias_input", [(True, True), (True, False), (False, True)])
def test_unpack_attention_computes_the_same(sized, with_bias_input):
    import numpy as np
    import onnx

    from onnxkit.passes import apply_pass
    from onnxkit.runtime.session import make_session

    fused, feeds = _attention_model(sized=sized, with_bias_input=with_bias_input)
    unpacked, record = apply_pass("unpack_attention", onnx.load_from_string(fused.SerializeToString()))
    assert record.changed
    ops = [n.op_type for n in unpacked.graph.node]
    assert ops == ["MatMul", "MatMul", "MatMul", "MultiHeadAttention", "MatMul"]  # the packing Concat is gone, and no Split
    assert {t.name for t in unpacked.graph.initializer}.isdisjoint({"wq", "wk", "wv"})
    onnx.checker.check_model(unpacked)
    a = make_session(fused).run(feeds)["y"]
    b = make_session(unpacked).run(feeds)["y"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["quantizable as is", "mask index"])
def test_unpack_attention_leaves_other_attention_alone(kind):
    import onnx

    from onnxkit.passes.transformer import unpack_attention

    # ORT already quantizes an Attention without qkv_hidden_sizes or bias input (QAttention);
    # a mask index has no MultiHeadAttention equivalent of the same meaning.
    if kind == "quantizable as is":
        model, _ = _attention_model(sized=False, with_bias_input=False)
    else:
        model, _ = _attention_model(sized=True, with_bias_input=False, mask_index=True)
    before = model.SerializeToString()
    out, count = unpack_attention(onnx.load_from_string(before))
    assert count == 0
    assert out.SerializeToString() == before


def _fused_conv_model():
    """FusedConv(relu) with a residual Z, FusedConv(clip), then FusedGemm(relu): ORT's own ops."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in
             (("w1", (4, 4, 3, 3)), ("b1", (4,)), ("w2", (4, 4, 1, 1)), ("b2", (4,)), ("wg", (5, 64)), ("bg", (5,)))]
    inits.append(numpy_helper.from_array(np.array([1, 64], np.int64), "flat"))
    nodes = [
        helper.make_node("FusedConv", ["x", "w1", "b1", "x"], ["c1"], domain="com.microsoft", name="fc1",
                         activation="Relu", pads=[1, 1, 1, 1]),
        helper.make_node("FusedConv", ["c1", "w2", "b2"], ["c2"], domain="com.microsoft", name="fc2",
                         activation="Clip", activation_params=[0.0, 6.0]),
        helper.make_node("Reshape", ["c2", "flat"], ["f"], name="flatten"),
        helper.make_node("FusedGemm", ["f", "wg", "bg"], ["y"], domain="com.microsoft", name="fg",
                         activation="Relu", transB=1),
    ]
    g = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def test_unfuse_runtime_ops_computes_the_same():
    import numpy as np
    import onnx

    from onnxkit.passes import apply_pass
    from onnxkit.runtime.session import make_session

    fused = _fused_conv_model()
    plain, record = apply_pass("unfuse_runtime_ops", onnx.load_from_string(fused.SerializeToString()))
    assert record.changed
    assert [n.op_type for n in plain.graph.node] == ["Conv", "Add", "Relu", "Conv", "Clip", "Reshape", "Gemm", "Relu"]
    assert all(n.domain in ("", "ai.onnx") for n in plain.graph.node)
    onnx.checker.check_model(plain)
    x = {"x": np.random.default_rng(0).standard_normal((1, 4, 4, 4)).astype(np.float32)}
    # level basic: ORT must not fuse the split graph back before we compare
    np.testing.assert_allclose(make_session(plain, level="basic").run(x)["y"], make_session(fused).run(x)["y"], rtol=1e-5, atol=1e-5)


def test_static_quantization_reaches_convolutions_ort_had_fused(cli, tmp_path):
    import onnx

    src = tmp_path / "fused.onnx"
    onnx.save(_fused_conv_model(), str(src))
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--mode", "static", "--calib-random", "8", "--no-budget", "--json")
    assert r.code == 0, r
    assert any("FusedConv/FusedGemm" in n and "split back" in n for n in r.json["notes"])
    q = onnx.load(str(out))
    ops = [n.op_type for n in q.graph.node]
    assert "FusedConv" not in ops and "FusedGemm" not in ops
    # every Conv and the Gemm now read dequantized (int8) weights
    weighted = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm")]
    produced_by = {o: n.op_type for n in q.graph.node for o in n.output}
    assert len(weighted) == 3 and all(produced_by.get(n.input[1]) == "DequantizeLinear" for n in weighted)



def _unpack_and_compare(fused, feeds, **kw):
    import numpy as np
    import onnx

    from onnxkit.passes.transformer import unpack_attention
    from onnxkit.runtime.session import make_session

    unpacked, count = unpack_attention(onnx.load_from_string(fused.SerializeToString()), **kw)
    onnx.checker.check_model(unpacked)  # also: initializer names unique
    np.testing.assert_allclose(make_session(unpacked).run(feeds)["y"], make_session(fused).run(feeds)["y"], rtol=1e-5, atol=1e-5)
    return unpacked, count


def test_unpack_attention_reads_an_existing_packed_weight_and_shares_one_copy():
    # onnxruntime.transformers names its packed weight <node>_qkv_weight: it is sliced into
    # Q, K and V, and the packed copy goes (no weight is held twice)
    fused, feeds = _attention_model(sized=True, with_bias_input=True, packed_name="attn_qkv_weight")
    unpacked, count = _unpack_and_compare(fused, feeds)
    assert count == 1
    names = [t.name for t in unpacked.graph.initializer]
    assert "attn_qkv_weight" not in names and len(names) == len(set(names))
    assert sorted(tuple(t.dims) for t in unpacked.graph.initializer if len(t.dims) == 2) == [(8, 4), (8, 8), (8, 8), (8, 8)]
    # three layers reading one Concat-packed weight: one set of slices, not three
    fused, feeds = _attention_model(sized=True, with_bias_input=False, layers=3)
    unpacked, count = _unpack_and_compare(fused, feeds)
    assert count == 3
    assert sum(1 for t in unpacked.graph.initializer if tuple(t.dims) == (8, 8)) == 3


def test_unpack_attention_every_form_for_int4_and_nothing_below_opset_13():
    fused, feeds = _attention_model(sized=False, with_bias_input=False)
    _, count = _unpack_and_compare(fused, feeds, every_form=True)  # int4 cannot quantize QAttention
    assert count == 1
    fused, feeds = _attention_model(sized=True, with_bias_input=True, opset=12)  # Split takes sizes as input from 13
    _, count = _unpack_and_compare(fused, feeds)
    assert count == 0
