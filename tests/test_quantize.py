"""onnxkit quantize: dynamic, static (random and file calibration), int4, exclusions, and the
accuracy budget, checked independently of the code under test."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory):
    """A TorchScript export: node names like /fc1/Gemm record the source module."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("fc1", torch.nn.Linear(64, 128))
    net.add_module("act", torch.nn.ReLU())
    net.add_module("fc2", torch.nn.Linear(128, 16))
    net.eval()
    path = tmp_path_factory.mktemp("q") / "mlp.onnx"
    torch.onnx.export(net, (torch.randn(2, 64),), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    return path


@pytest.fixture(scope="session")
def small_cnn_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10)).eval()
    path = tmp_path_factory.mktemp("q") / "cnn.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    return path


def _matmul_chain(path, weights, *, mask=None):
    """x -> [Mul(mask)] -> MatMul(w0) -> Relu -> MatMul(w1) ... built with onnx.helper."""
    nodes, inits = [], []
    cur = "x"
    if mask is not None:
        inits.append(numpy_helper.from_array(mask.astype(np.float32), "mask"))
        nodes.append(helper.make_node("Mul", ["x", "mask"], ["xm"], name="premask"))
        cur = "xm"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        cur = f"h{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"relu{i}"))
            cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights[0].shape[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights[-1].shape[1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _float_nodes(path, op):
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == op]


def test_dynamic_quantization_shrinks_mlp(cli, mlp_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", mlp_onnx, "-o", out, "--mode", "dynamic", "--json")
    assert r.code == 0, r
    doc = r.json
    assert out.stat().st_size < 0.5 * mlp_onnx.stat().st_size
    assert doc["size_after"] == out.stat().st_size
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _ops(out)
    assert doc["nodes_quantized"] == 2
    assert doc["per_channel"] is True
    assert doc["budget_met"] is True and doc["error"]["cosine"] >= 0.99


def test_static_qdq_with_random_calibration_warns(cli, small_cnn_onnx, tmp_path):
    out = tmp_path / "s.onnx"
    r = cli("quantize", small_cnn_onnx, "-o", out, "--mode", "static", "--calib-random", "16", "--json")
    assert r.code == 0, r
    assert "RANDOM samples" in r.stderr and "poor proxy" in r.stderr
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)
    assert r.json["format"] == "qdq"
    assert r.json["quantized_ops"].get("Conv") == 1


def test_static_qdq_with_npz_calibration(cli, small_cnn_onnx, tmp_path):
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((20, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "s.onnx"
    r = cli("quantize", small_cnn_onnx, "-o", out, "--mode", "static", "--calib-data", data, "--json")
    assert r.code == 0, r
    assert "poor proxy" not in r.stderr
    assert r.json["calibration"].startswith("calib.npz")
    assert r.json["eval_data"] == "calib.npz (calibration data)"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(out)


def test_static_without_calibration_is_usage_error(cli, small_cnn_onnx, tmp_path):
    r = cli("quantize", small_cnn_onnx, "-o", tmp_path / "s.onnx", "--mode", "static")
    assert r.code == 2, r
    assert "static quantization needs calibration data" in r.stderr


def test_int4_weight_only_matmul(cli, tmp_path):
    rng = np.random.default_rng(0)
    src = _matmul_chain(tmp_path / "mm.onnx", [rng.standard_normal((128, 128)) * 0.1, rng.standard_normal((128, 32)) * 0.1])
    out = tmp_path / "q4.onnx"
    r = cli("quantize", src, "-o", out, "--mode", "int4", "--block-size", "32", "--json")
    assert r.code == 0, r
    assert "MatMulNBits" in _ops(out)
    assert r.json["quantized_ops"] == {"MatMulNBits": 2}


def test_exclude_by_op_type(cli, mlp_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    r = cli("quantize", mlp_onnx, "-o", out, "--exclude-ops", "Gemm", "--json")
    # every weighted node of this MLP is a Gemm: excluding them all leaves nothing to quantize,
    # which is a failure naming the exclusion, not a float copy written as "quantized"
    assert r.code == 1, r
    assert "nothing was quantized: all 2 quantizable node(s) are excluded" in r.json["error"]
    assert not out.exists()


@pytest.mark.parametrize("pattern", ["/fc1/Gemm", "/fc1/*", "fc1"])  # node name, glob, source layer
def test_exclude_by_node_glob_or_layer(cli, mlp_onnx, tmp_path, pattern):
    out = tmp_path / "q.onnx"
    r = cli("quantize", mlp_onnx, "-o", out, "--exclude-nodes", pattern, "--json")
    assert r.code == 0, r
    assert [x["node"] for x in r.json["excluded"]] == ["/fc1/Gemm"]
    assert r.json["nodes_quantized"] == 1
    m = onnx.load(str(out))
    integer = [n.name for n in m.graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 1 and integer[0].startswith("/fc2/")
    # dynamic quantization turns Gemm into MatMul + Add; fc1's stays float
    assert any(n.op_type in ("Gemm", "MatMul") and n.name.startswith("/fc1/") for n in m.graph.node)


def test_layer_name_from_dynamo_metadata(tmp_path):
    from onnxkit.operations.quantize import select_nodes

    node = helper.make_node("MatMul", ["a", "b"], ["c"], name="node_linear_7")
    p = node.metadata_props.add()
    p.key, p.value = "pkg.torch.onnx.name_scopes", "['', 'm', 'm.encoder', 'm.encoder.layer.0', 'm.encoder.layer.0.output.dense', 'linear_7']"
    g = helper.make_graph([node], "g", [], [])
    assert select_nodes(helper.make_model(g), ["encoder.layer.0.output.dense"]) == {"encoder.layer.0.output.dense": ["node_linear_7"]}


@pytest.mark.parametrize("flag, value, message", [
    ("--exclude-nodes", "encoder.layer.9", "pattern 'encoder.layer.9' matches no node"),
    ("--exclude-ops", "LSTM", "--exclude-ops 'LSTM' matches no node"),
])
def test_pattern_matching_nothing_is_usage_error(cli, mlp_onnx, tmp_path, flag, value, message):
    out = tmp_path / "q.onnx"
    r = cli("quantize", mlp_onnx, "-o", out, flag, value)
    assert r.code == 2, r
    assert message in r.stderr
    assert not out.exists()


def _independent_cosine(float_path, quant_path, seed=7):
    """Mean row cosine of the outputs, computed here without onnxkit's comparator."""
    from onnxkit.runtime.session import make_session

    x = np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32)
    a = make_session(str(float_path)).run({"x": x})["y"].astype(np.float64)
    b = make_session(str(quant_path)).run({"x": x})["y"].astype(np.float64)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)  # an all-zero row scores 0
    return float(np.mean((a * b).sum(1) / den))


@pytest.fixture(scope="session")
def outlier_chain(tmp_path_factory):
    """mm0's weights hold one huge row that the (masked) input never uses: each column's int8
    scale is set by it, so every useful weight of mm0 rounds to zero. mm1 quantizes fine."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((64, 64))
    w0[0, :] = 2000.0
    mask = np.ones(64)
    mask[0] = 0.0
    w1 = rng.standard_normal((64, 32))
    return _matmul_chain(tmp_path_factory.mktemp("b") / "outlier.onnx", [w0, w1], mask=mask)


def test_budget_loop_excludes_the_sensitive_node(cli, outlier_chain, tmp_path):
    plain = tmp_path / "plain.onnx"
    r0 = cli("quantize", outlier_chain, "-o", plain, "--no-budget", "--json")
    assert r0.code == 0, r0
    assert _independent_cosine(outlier_chain, plain) < 0.99  # plain quantization misses the budget

    out = tmp_path / "budget.onnx"
    r = cli("quantize", outlier_chain, "-o", out, "--max-error", "0.01", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["error_first"]["error"] > 0.01
    assert doc["budget_met"] is True
    assert [x["node"] for x in doc["excluded"]] == ["mm0"]
    assert "accuracy budget" in doc["excluded"][0]["reason"]
    assert _independent_cosine(outlier_chain, out) >= 0.99
    assert _float_nodes(out, "MatMul") == ["mm0"]  # mm1 still quantized
    assert "MatMulInteger" in _ops(out)


def test_unmeetable_budget_exits_1_and_writes_the_file(cli, outlier_chain, tmp_path):
    out = tmp_path / "q.onnx"
    # mm0 excluded up front and a budget no int8 model meets: the loop runs out of candidates.
    r = cli("quantize", outlier_chain, "-o", out, "--max-error", "0", "--metric", "maxabs", "--json")
    assert r.code == 1, r
    assert r.json["budget_met"] is False
    assert out.exists()
    assert any("budget missed" in n for n in r.json["notes"])


def test_fp16_mode_keeps_float32_io(cli, mlp_onnx, tmp_path):
    out = tmp_path / "h.onnx"
    r = cli("quantize", mlp_onnx, "-o", out, "--mode", "fp16", "--json")
    assert r.code == 0, r
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(t.data_type == TensorProto.FLOAT16 for t in m.graph.initializer if len(t.dims) == 2)
    assert r.json["error"]["cosine"] > 0.999


def test_exclude_by_pytorch_module_name_on_a_dynamo_export(cli, tmp_path):
    """torch.export records module scopes in node metadata; pre-processing drops them, so the
    pattern must be resolved on the user's model and mapped onto the prepared one."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("fc1", torch.nn.Linear(32, 32))
    net.add_module("act", torch.nn.ReLU())
    net.add_module("fc2", torch.nn.Linear(32, 8))
    src = tmp_path / "dyn.onnx"
    torch.onnx.export(net.eval(), (torch.randn(2, 32),), str(src), dynamo=True, input_names=["x"], output_names=["y"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--exclude-nodes", "fc1", "--json")
    assert r.code == 0, r
    assert r.json["nodes_quantized"] == 1
    assert r.json["excluded"] and all(x["reason"] == "--exclude-nodes fc1" for x in r.json["excluded"])
    integer = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 1


def test_json_stdout_stays_one_document_with_entropy_calibration(cli, small_cnn_onnx, tmp_path):
    # ORT's entropy calibrator prints progress; it must not land on stdout.
    r = cli("quantize", small_cnn_onnx, "-o", tmp_path / "e.onnx", "--mode", "static", "--calib-random", "8",
            "--calib-method", "entropy", "--format", "qoperator", "--json")
    assert r.code == 0, r
    assert r.json["format"] == "qoperator"
    assert "QLinearConv" in _ops(tmp_path / "e.onnx")


def test_quantized_model_declares_only_the_domains_it_uses(tmp_path):
    import onnx
    from onnx import helper

    from onnxkit.operations.quantize import prune_unused_opsets

    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1),
                       helper.make_opsetid("org.pytorch.aten", 1)],
    )
    m.graph.node.append(helper.make_node("Gelu", ["y"], ["z"], domain="com.microsoft"))
    prune_unused_opsets(m)
    assert {(i.domain, i.version) for i in m.opset_import} == {("", 17), ("com.microsoft", 1)}


def test_budget_loop_skips_nodes_the_quantizer_left_in_float(cli, tmp_path):
    """ORT never turns an Attention carrying qkv_hidden_sizes into QAttention; the budget loop
    must not spend rounds "excluding" it. The same Attention without the attribute is quantized."""
    from onnxkit.operations.quantize import left_in_float

    rng = np.random.default_rng(5)
    inits = []
    for name, shape in (("w_sized", (8, 24)), ("b_sized", (24,)), ("w_plain", (8, 24)), ("b_plain", (24,)), ("w_mm", (8, 8))):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
    nodes = [
        helper.make_node("Attention", ["x", "w_sized", "b_sized"], ["a1"], name="attn_sized", domain="com.microsoft",
                         num_heads=2, qkv_hidden_sizes=[8, 8, 8]),
        helper.make_node("Attention", ["a1", "w_plain", "b_plain"], ["a2"], name="attn_plain", domain="com.microsoft", num_heads=2),
        helper.make_node("MatMul", ["a2", "w_mm"], ["y"], name="mm"),
    ]
    g = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    src, out = tmp_path / "attn.onnx", tmp_path / "q.onnx"
    onnx.save(m, str(src))
    # --no-fuse: by default onnxkit unpacks such an Attention so that it is quantized
    r = cli("quantize", src, "-o", out, "--no-budget", "--no-fuse", "--json")
    assert r.code == 0, r
    q = onnx.load(str(out))
    assert {"QAttention", "Attention"} <= {n.op_type for n in q.graph.node}
    assert left_in_float(onnx.load(str(src)), q) == {"attn_sized"}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A real (randomly initialised) BERT from transformers, exported with torch.export, and
    the PyTorch module itself: the graph shape of every HF encoder, small enough to test."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    bert = transformers.BertModel(cfg).eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    enc = Encoder(bert).eval()
    ids = torch.randint(0, 120, (2, 16))
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=64)}
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    torch.onnx.export(enc, (ids, torch.ones_like(ids)), str(path), dynamo=True, input_names=["input_ids", "attention_mask"],
                      output_names=["hidden"], dynamic_shapes={"input_ids": dims, "attention_mask": dims},
                      external_data=False, verbose=False)
    return path, enc


def _bert_feeds(seed=11):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 120, (4, 24)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 15:] = 0  # one padded sentence
    return {"input_ids": ids, "attention_mask": mask}


def _sentence_cosines(hidden_a, hidden_b, mask):
    """Mean-pooled sentence embeddings, as sentence-transformers pools them; cosine per sentence."""
    m = mask[..., None].astype(np.float64)
    a = (hidden_a * m).sum(1) / m.sum(1)
    b = (hidden_b * m).sum(1) / m.sum(1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_dynamic_quantization_fuses_a_transformer_and_quantizes_its_attention_projections(cli, tiny_bert, tmp_path):
    torch = pytest.importorskip("torch")
    from onnxkit.runtime.session import make_session

    src, enc = tiny_bert
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--json")
    assert r.code == 0, r
    notes = " ".join(r.json["notes"])
    assert "transformer fusion before quantizing" in notes and "unpacked to Q, K, V MatMuls + MultiHeadAttention" in notes
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MultiHeadAttention") == 2
    weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    # every projection (Q/K/V, output, both FFN) is int8: no float MatMul with a constant weight is left
    assert not [n.name for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    assert ops.count("MatMulInteger") == 2 * 6  # Q, K, V, output and the two FFN MatMuls per layer
    assert "Split" not in ops
    # the padding mask reaches the attention as a key padding mask, not a float bias
    assert "key padding mask" in notes
    assert all(n.input[4] for n in model.graph.node if n.op_type == "MultiHeadAttention")
    feeds = _bert_feeds()
    with torch.no_grad():
        ref = enc(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy().astype(np.float64)
    got = make_session(str(out)).run(feeds)["hidden"].astype(np.float64)
    assert _sentence_cosines(ref, got, feeds["attention_mask"]).min() >= 0.99


def test_no_fuse_quantizes_the_graph_as_exported(cli, tiny_bert, tmp_path):
    src, _ = tiny_bert
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--no-fuse", "--json")
    assert r.code == 0, r
    assert not any("fusion" in n for n in r.json["notes"])
    ops = _ops(out)
    assert "Softmax" in ops and "MultiHeadAttention" not in ops


def test_default_budget_is_looser_on_random_inputs_and_says_so(cli, tiny_bert, tmp_path):
    src, _ = tiny_bert
    r = cli("quantize", src, "-o", tmp_path / "r.onnx", "--json")
    assert r.code == 0, r
    assert r.json["max_error"] == pytest.approx(0.02)
    assert any("random inputs" in n and "--data" in n for n in r.json["notes"])
    data = tmp_path / "real.npz"
    np.savez(data, **_bert_feeds(seed=3))
    r = cli("quantize", src, "-o", tmp_path / "d.onnx", "--data", data, "--json")
    assert r.code == 0, r
    assert r.json["max_error"] == pytest.approx(0.01)
    assert not any("random inputs" in n for n in r.json["notes"])
    # an explicit budget is never loosened
    r = cli("quantize", src, "-o", tmp_path / "e.onnx", "--max-error", "0.005", "--json")
    assert r.json["max_error"] == pytest.approx(0.005)


def test_exclusions_skip_transformer_fusion_and_say_so(cli, tiny_bert, tmp_path):
    """Patterns and op types name the graph the user has; fusion would rename or absorb them."""
    src, _ = tiny_bert
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--exclude-ops", "Gather", "--json")
    assert r.code == 0, r
    assert any("transformer fusion before quantizing skipped" in n for n in r.json["notes"])
    assert "MultiHeadAttention" not in _ops(tmp_path / "q.onnx")


@pytest.mark.parametrize("fault,message", [
    ("values", "the fused float graph differs from the input"),
    ("dangling", "the fused graph does not run"),
])
def test_a_fusion_that_changes_answers_is_not_used(cli, tiny_bert, tmp_path, monkeypatch, fault, message):
    """A fuser bug must not pass for quantization error: the fused float graph is checked first."""
    from onnxkit.passes import transformer

    real = transformer.prepare_for_quantization

    def broken(model, mode="dynamic"):
        fused, notes = real(model, mode)
        mha = next(n for n in fused.graph.node if n.op_type == "MultiHeadAttention")
        if fault == "values":
            mha.input[2] = mha.input[0]  # attends over the queries instead of the values
        else:
            mha.input[2] = "nowhere"  # a tensor nothing produces: ONNX Runtime refuses the graph
        return fused, notes

    monkeypatch.setattr(transformer, "prepare_for_quantization", broken)
    src, _ = tiny_bert
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--json")
    assert r.code == 0, r
    assert any(n.startswith("transformer fusion before quantizing not used: " + message) for n in r.json["notes"]), r.json["notes"]
    assert "MultiHeadAttention" not in _ops(out)


def test_a_fused_graph_that_does_not_run_is_not_chosen(tiny_bert, monkeypatch):
    """The fuser with fewer nodes wins only if ONNX Runtime can run its graph."""
    from onnxkit.passes import transformer

    real = transformer._with_onnxscript

    def dangling(model):
        out = real(model)
        out.graph.node[-1].input[0] = "nowhere"
        return out

    monkeypatch.setattr(transformer, "_with_onnxscript", dangling)
    model = onnx.load(str(tiny_bert[0]))
    fused, rep = transformer.fuse_transformer(model, "bert")
    assert rep.fuser != "onnxscript.rewriter.ort_fusions"
    assert "does not run in ONNX Runtime" in rep.errors["onnxscript.rewriter.ort_fusions"]
    assert "nowhere" not in {i for n in fused.graph.node for i in n.input}
