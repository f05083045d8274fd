"""quantize that can do nothing says so (exit 1, nothing written) instead of writing a copy of
the float model; int4 reaches MatMul + Add MLPs; dynamic int8 on a CNN points to static
(issue 15, items 6 and 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.operations.quantize.checks import conv_hint, gemm_to_matmul


def _mlp(path: Path, dims=(64, 256, 256, 10)) -> Path:
    """MatMul + Add (+ Relu) layers: what torch.onnx, tf2onnx and hand-written graphs give."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) * 0.1).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array((rng.standard_normal(b) * 0.1).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}")]
        x = f"a{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", dims[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", dims[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _cnn(path: Path) -> Path:
    rng = np.random.default_rng(0)
    chans = [3, 16, 32, 32]
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((b, a, 3, 3)) * np.sqrt(2 / (9 * a))).astype(np.float32), f"c{i}.w"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"c{i}.b")]
        nodes += [helper.make_node("Conv", [x, f"c{i}.w", f"c{i}.b"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1, name="fc")]
    inits += [numpy_helper.from_array((rng.standard_normal((10, 32)) * 0.1).astype(np.float32), "fc.w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _sklearn_onnx(path: Path, kind: str) -> Path:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    if kind == "forest":
        est = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)).fit(X, X[:, 0] > 0)
        model = to_onnx(est, X[:1], options={id(est.steps[-1][1]): {"zipmap": False}})
    else:
        model = to_onnx(LinearRegression().fit(X, X[:, 0]), X[:1])
    path.write_bytes(model.SerializeToString())
    return path


def test_int4_quantizes_a_matmul_add_mlp(cli, tmp_path):
    src = _mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.int4.onnx"
    r = cli("quantize", src, "-o", out, "--mode", "int4", "--json")
    assert r.code == 0, r
    d = r.json
    assert d["nodes_quantized"] == 3 and d["quantized_ops"] == {"MatMulNBits": 3}
    assert d["size_after"] < 0.3 * d["size_before"]  # was 104%: nothing quantized, Gemm added


def test_gemm_to_matmul_keeps_the_answers(tmp_path):
    from onnxkit.runtime.session import make_session

    src = _cnn(tmp_path / "cnn.onnx")
    model, n = gemm_to_matmul(onnx.load(str(src)))
    assert n == 1 and not any(node.op_type == "Gemm" for node in model.graph.node)
    onnx.save(model, str(tmp_path / "mm.onnx"))
    x = {"x": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    a = make_session(src).run(x)["logits"]
    b = make_session(tmp_path / "mm.onnx").run(x)["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["forest", "linear"])
def test_tabular_model_with_nothing_to_quantize_exits_1_writing_nothing(cli, tmp_path, kind):
    src = _sklearn_onnx(tmp_path / f"{kind}.onnx", kind)
    before = src.read_bytes()
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out)
    assert r.code == 1, r  # was exit 0 (forest, a copy written) and exit 4 (linear: "Failed to find proper ai.onnx domain")
    assert r.stderr.startswith("Error: nothing was quantized") and "ai.onnx.ml" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_auto_mode_says_nothing_was_quantized_not_budget(cli, tmp_path):
    src = _sklearn_onnx(tmp_path / "linear.onnx", "linear")
    r = cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "auto")
    assert r.code == 1, r
    assert "nothing was quantized" in r.stderr and "accuracy budget" not in r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_everything_excluded_is_nothing_quantized(cli, tmp_path):
    src = _mlp(tmp_path / "mlp.onnx", dims=(16, 16, 4))
    out = tmp_path / "q.onnx"
    r = cli("quantize", src, "-o", out, "--exclude-nodes", "*", "--no-budget")
    assert r.code == 1, r
    assert "nothing was quantized" in r.stderr and "excluded" in r.stderr
    assert not out.exists()


def test_dynamic_on_a_cnn_hints_at_static(cli, tmp_path):
    src = _cnn(tmp_path / "cnn.onnx")
    r = cli("quantize", src, "-o", tmp_path / "dyn.onnx", "--json")
    assert r.code == 0, r
    hint = [n for n in r.json["notes"] if n.startswith("convolutional network")]
    assert hint and "--mode static" in hint[0] and "--mode auto" in hint[0]
    mlp = _mlp(tmp_path / "mlp.onnx")
    assert conv_hint(onnx.load(str(mlp)), "dynamic") is None  # not a CNN
    assert conv_hint(onnx.load(str(src)), "static") is None  # already the fast path


def test_pipeline_skips_quantize_with_the_reason(cli, tmp_path):
    src = _sklearn_onnx(tmp_path / "forest.onnx", "forest")
    cfg = tmp_path / "p.toml"
    cfg.write_text("\n".join([
        "[source]", f'path = "{src.as_posix()}"',
        "[optimize]", "enabled = false",
        "[quantize]", 'mode = "dynamic"',
        "[bench]", "enabled = false",
    ]) + "\n")
    r = cli("pipeline", cfg, "--json")
    steps = {s["name"]: s for s in r.json["steps"]}
    assert steps["quantize"]["status"] == "skipped", steps["quantize"]
    assert steps["quantize"]["reason"].startswith("nothing was quantized")
    assert r.code == 0, r
