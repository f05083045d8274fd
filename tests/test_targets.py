"""`onnxkit targets`: each deployment target against ONNX Runtime CPU, on models built here
(a CNN, a block of com.microsoft fused ops, a QDQ int8 model, a tree ensemble), exit codes,
one JSON document, and targets that are absent here reported as such."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cnn(tmp_path) -> Path:
    """Conv + Relu + MaxPool + flatten + Gemm, dynamic batch."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((8 * 4 * 4, 5)).astype(np.float32) * 0.1, "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["c"], ["r"], name="relu0"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool0"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat0"),
        helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc0"),
    ]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], [w, fc])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "cnn.onnx")


@pytest.fixture
def fused(tmp_path) -> Path:
    """The com.microsoft ops `optimize --transformer` writes (SkipLayerNormalization, FastGelu)."""
    rng = np.random.default_rng(1)
    h = 8
    inits = [numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), n) for n in ("g", "b", "bias")]
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "skip", "g", "b"], ["sln"], domain="com.microsoft",
                         name="sln0", epsilon=1e-5),
        helper.make_node("FastGelu", ["sln", "bias"], ["y"], domain="com.microsoft", name="fastgelu0"),
    ]
    graph = helper.make_graph(
        nodes, "fused", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, h]) for n in ("x", "skip")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, h])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return _save(model, tmp_path / "fused.onnx")


@pytest.fixture
def qdq(tmp_path) -> Path:
    """int8 QDQ Conv: Quantize/Dequantize around the activations and int8 weights."""
    rng = np.random.default_rng(2)
    wq = numpy_helper.from_array(rng.integers(-127, 127, (4, 3, 3, 3), dtype=np.int8), "wq")
    scalars = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in (
        ("xs", 0.02, np.float32), ("xz", 0, np.int8), ("ws", 0.01, np.float32), ("wz", 0, np.int8),
        ("ys", 0.05, np.float32), ("yz", 0, np.int8))]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1], name="conv_q"),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"], name="q_y"),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"], name="dq_y"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [wq, *scalars])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "qdq.onnx")


@pytest.fixture
def trees(tmp_path) -> Path:
    """A scikit-learn random forest as ai.onnx.ml TreeEnsembleClassifier (labels + probabilities)."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    clf = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    model = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path = tmp_path / "forest.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _has_web() -> bool:
    from onnxkit.runtime import targets_web

    return targets_web.availability() is None


def _only(doc: dict, name: str) -> dict:
    return next(t for t in doc["targets"] if t["target"] == name)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# ---------------------------------------------------------------- always runnable here

def test_cpu_and_mobile_agree_on_a_cnn_and_json_is_one_document(cli, cnn):
    before = _snapshot(cnn.parent)
    r = cli("targets", cnn, "--target", "mobile", "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)  # exactly one document: the ORT converter's chatter stays out
    assert doc["verdict"] == "PASSED" and doc["exit_code"] == 0
    mobile = _only(doc, "mobile")
    assert mobile["status"] == "passed" and mobile["max_abs_diff"] <= 1e-4
    assert mobile["details"]["ort_bytes"] > 0
    # measured: the ORT format's fixed "all" optimizations turn Conv+Relu into com.microsoft FusedConv
    assert any("FusedConv" in line or "Conv" in line for line in mobile["details"]["required_operators"])
    assert mobile["details"]["partitions"]["nnapi"]["supported_nodes"] >= 1
    assert [t["target"] for t in doc["targets"]] == ["cpu", "mobile"]
    assert _snapshot(cnn.parent) == before  # nothing written next to the model


def test_mobile_reports_fused_ops_outside_nnapi_and_coreml(cli, fused):
    r = cli("targets", fused, "-t", "mobile", "--json")
    assert r.code == 0, r.stderr
    parts = _only(r.json, "mobile")["details"]["partitions"]
    for ep in ("nnapi", "coreml"):
        assert "com.microsoft:SkipLayerNormalization" in parts[ep]["unsupported_ops"]
        assert "com.microsoft:FastGelu" in parts[ep]["unsupported_ops"]
        assert parts[ep]["supported_nodes"] == 0
    assert "nnapi" in r.stderr and "FastGelu" in r.stderr  # the table names them too


@pytest.mark.slow
def test_qdq_int8_and_trees_on_mobile(cli, qdq, trees):
    for model in (qdq, trees):
        r = cli("targets", model, "-t", "mobile", "--json")
        assert r.code == 0, (model.name, r.stderr)
        assert _only(r.json, "mobile")["status"] == "passed"


def test_gpu_targets_are_unavailable_here_with_exit_3(cli, cnn):
    from onnxkit.runtime.session import available_providers

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this machine has CUDA")
    r = cli("targets", cnn, "-t", "cuda,tensorrt", "--json")
    assert r.code == 3, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "UNAVAILABLE"
    cuda = _only(doc, "cuda")
    assert cuda["status"] == "unavailable" and "onnxruntime-gpu" in cuda["reason"]
    assert _only(doc, "tensorrt")["status"] == "unavailable"
    assert _only(doc, "cpu")["status"] == "passed"


@pytest.mark.slow
def test_default_list_does_not_fail_for_targets_absent_here(cli, cnn, monkeypatch):
    from onnxkit.runtime import targets_openvino, targets_web

    monkeypatch.setattr(targets_openvino, "availability", lambda: "the openvino package is not installed")
    monkeypatch.setattr(targets_web, "availability", lambda: "onnxruntime-web is not set up")
    r = cli("targets", cnn, "--json", "--trust")
    assert r.code == 0, r.stderr
    assert _only(r.json, "openvino")["status"] == "unavailable"
    assert _only(r.json, "openvino")["reason"] == "the openvino package is not installed"


def test_named_target_absent_is_exit_3_with_the_reason(cli, cnn, monkeypatch):
    from onnxkit.runtime import targets_openvino

    monkeypatch.setattr(targets_openvino, "availability", lambda: "the openvino package is not installed (pip install 'onnxkit[openvino]')")
    r = cli("targets", cnn, "-t", "openvino", "--json")
    assert r.code == 3
    assert "onnxkit[openvino]" in _only(r.json, "openvino")["reason"] and r.json["verdict"] == "UNAVAILABLE"


def test_web_without_setup_names_the_setup_command(cli, cnn, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXKIT_CACHE", str(tmp_path / "empty-cache"))
    r = cli("targets", cnn, "-t", "web", "--json")
    assert r.code == 3
    assert "onnxkit targets --setup web" in _only(r.json, "web")["reason"]
    assert not (tmp_path / "empty-cache").exists()  # looking does not create it


@pytest.mark.parametrize("args, message", [
    (["-t", "gpu"], "unknown target gpu"),
    (["--precision", "int8"], "unknown --precision 'int8'"),
    (["--tol", "x=abc"], "is not a number"),
    (["--setup", "mobile"], "only 'web' needs a setup step"),
    (["--provider-option", "nokey"], "malformed --provider-option"),
])
def test_bad_usage_is_exit_2_and_writes_nothing(cli, cnn, args, message):
    before = _snapshot(cnn.parent)
    r = cli("targets", cnn, *args)
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("Error: ") and message in r.stderr and "Traceback" not in r.stderr
    assert _snapshot(cnn.parent) == before


def test_missing_model_and_not_onnx_are_exit_2(cli, tmp_path):
    r = cli("targets", tmp_path / "nope.onnx")
    assert r.code == 2 and "not found" in r.stderr
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x80\x04\x95 pickle bytes")
    r = cli("targets", bogus, "-t", "mobile")
    assert r.code == 2 and r.stderr.startswith("Error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.onnx"]


def test_a_target_that_cannot_run_an_op_fails_with_exit_1_and_names_it(cli, tmp_path):
    """A node whose domain the ORT format build has no kernel for: ORT CPU (the reference)
    fails first, so nothing is compared and the verdict is FAILED, naming the op."""
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.microsoft", name="mystery0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
                  tmp_path / "mystery.onnx")
    r = cli("targets", model, "-t", "mobile", "--json")
    assert r.code == 1, r.stderr
    cpu = _only(r.json, "cpu")
    assert cpu["status"] == "failed" and "NoSuchOp" in cpu["reason"]
    assert _only(r.json, "mobile")["status"] == "skipped"


# ---------------------------------------------------------------- openvino

@pytest.mark.skipif(not _has_openvino(), reason="openvino not installed (pip install 'onnxkit[openvino]')")
def test_openvino_f32_agrees_on_a_cnn_and_reports_its_precision(cli, cnn):
    r = cli("targets", cnn, "-t", "openvino", "--precision", "f32", "--json")
    assert r.code == 0, r.stderr
    ov = _only(r.json, "openvino")
    assert ov["precision"] == "f32" and ov["max_abs_diff"] <= 1e-4
    assert ov["details"]["openvino"]


@pytest.mark.skipif(not _has_openvino(), reason="openvino not installed")
def test_openvino_default_precision_is_what_openvino_picks(cli, cnn):
    from onnxkit.runtime.targets_openvino import default_precision

    picked = default_precision()
    r = cli("targets", cnn, "-t", "openvino", "--json")
    ov = _only(r.json, "openvino")
    assert ov["precision"] == picked
    if picked != "f32":  # e.g. bf16 on a CPU with AVX-512 BF16 or AMX
        assert any("--precision f32" in n for n in ov["notes"])
        assert ov["max_abs_diff"] > 1e-4  # a real change of answers, reported
        # held to a half-precision tolerance unless the user sets one; a user's fp32 limit fails it
        strict = cli("targets", cnn, "-t", "openvino", "--preset-tol", "fp32", "--json")
        assert strict.code == 1 and _only(strict.json, "openvino")["status"] == "disagrees"


@pytest.mark.slow
@pytest.mark.skipif(not _has_openvino(), reason="openvino not installed")
def test_openvino_on_fused_qdq_and_trees(cli, fused, qdq, trees):
    r = cli("targets", fused, "-t", "openvino", "--precision", "f32", "--json")
    assert r.code == 0 and _only(r.json, "openvino")["max_abs_diff"] <= 1e-4, r.stderr
    # measured: at f32 OpenVINO rounds one element of 256 to the next int8 step (0.05 here)
    r = cli("targets", qdq, "-t", "openvino", "--precision", "f32", "--json")
    ov = _only(r.json, "openvino")
    assert r.code == 0 and ov["status"] == "passed", r.stderr
    assert any("one quantized graph on two runtimes" in n for n in ov["notes"])
    strict = cli("targets", qdq, "-t", "openvino", "--precision", "f32", "--preset-tol", "fp32", "--json")
    ov = _only(strict.json, "openvino")
    if ov["status"] == "disagrees":
        assert strict.code == 1 and ov["max_abs_diff"] == pytest.approx(0.05, rel=1e-3)
    r = cli("targets", trees, "-t", "openvino", "--json")
    ov = _only(r.json, "openvino")
    # measured: OpenVINO's ONNX reader has no ai.onnx.ml operators
    assert r.code == 1 and ov["status"] == "failed" and ov["stage"] == "convert", r.stderr
    assert "TreeEnsembleClassifier" in ov["reason"]


# ---------------------------------------------------------------- web (onnxruntime-web, wasm)

@pytest.mark.slow
@pytest.mark.skipif(not _has_web(), reason="onnxruntime-web not set up: onnxkit targets --setup web")
def test_web_runs_cnn_fused_and_qdq(cli, cnn, fused, qdq):
    for model in (cnn, fused, qdq):
        r = cli("targets", model, "-t", "web", "--json")
        assert r.code == 0, (model.name, r.stderr)
        web = _only(r.json, "web")
        assert web["status"] == "passed" and "wasm" in web["details"]["runtime"]


@pytest.mark.slow
@pytest.mark.skipif(not _has_web(), reason="onnxruntime-web not set up: onnxkit targets --setup web")
def test_web_on_trees(cli, trees):
    r = cli("targets", trees, "-t", "web", "--json")
    assert r.code == 0, r.stderr  # measured: onnxruntime-web's wasm build has the ai.onnx.ml trees
    assert _only(r.json, "web")["status"] == "passed"


def test_web_script_ships_as_package_data():
    import tomllib

    from onnxkit.runtime.targets_web import SCRIPT

    assert SCRIPT.is_file()
    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["onnxkit"]
    rel = SCRIPT.relative_to(Path(__file__).parents[1] / "onnxkit").as_posix()
    import fnmatch

    assert any(fnmatch.fnmatch(rel, p) for p in patterns)


def test_quiet_prints_one_line_with_each_target(cli, cnn):
    r = cli("targets", cnn, "-t", "mobile", "-q")
    assert r.code == 0, r.stderr
    assert r.stdout.strip().splitlines() == [r.stdout.strip()]
    assert r.stdout.startswith("PASSED targets: cpu passed, mobile passed ")


def test_a_target_that_hangs_in_its_contained_child_fails_alone(cli, cnn, monkeypatch):
    """The worker of an untrusted model is stopped at the time limit: that target fails
    (exit 1, the reason says so); the reference still ran. With --trust there is no child."""
    from onnxkit.operations import targets as op

    real = op._execute

    def slow_limit(run, model_path, feeds, precision, options, *, trust, target):
        if target == "mobile":
            monkeypatch.setattr(op, "TARGET_TIMEOUT_S", 0.001)
        return real(run, model_path, feeds, precision, options, trust=trust, target=target)

    monkeypatch.setattr(op, "_execute", slow_limit)
    r = cli("targets", cnn, "-t", "mobile", "--json")
    assert r.code == 1, r.stderr
    mobile = _only(r.json, "mobile")
    assert mobile["status"] == "failed" and "was stopped" in mobile["reason"]
    assert _only(r.json, "cpu")["status"] == "passed"


def test_data_file_and_a_per_output_tolerance(cli, cnn, tmp_path):
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32))
    r = cli("targets", cnn, "-t", "mobile", "--data", data, "--json", "--trust")
    assert r.code == 0, r.stderr
    assert r.json["inputs"] == f"data file {data}"
    # a limit no float computation meets: the mobile (.ort) run fuses Conv+Relu, so it must
    # disagree somewhere unless it is bit-identical; either way the limit reached the comparison
    r = cli("targets", cnn, "-t", "mobile", "--data", data, "--tol", "logits=0:0", "--json", "--trust")
    out = _only(r.json, "mobile")["outputs"][0]
    assert out["atol"] == 0 and out["rtol"] == 0
    assert (r.code == 1) == (out["max_abs"] > 0)


def test_data_that_does_not_fit_is_exit_2(cli, cnn, tmp_path):
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((2, 4), dtype=np.float32))
    r = cli("targets", cnn, "-t", "mobile", "--data", data)
    assert r.code == 2 and r.stderr.startswith("Error: ")


@pytest.mark.slow
def test_external_data_model_runs_on_mobile_and_web(cli, tmp_path):
    """Weights in a separate file: the ORT converter and the wasm build (which cannot open
    files) both get them; nothing is written next to the model."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm0")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(model, str(folder / "ext.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    before = _snapshot(folder)
    wanted = "mobile,web" if _has_web() else "mobile"
    r = cli("targets", folder / "ext.onnx", "-t", wanted, "--json")
    assert r.code == 0, r.stderr
    for name in wanted.split(","):
        assert _only(r.json, name)["status"] == "passed"
    assert _snapshot(folder) == before


def test_a_target_with_other_outputs_fails_at_compare(cli, cnn, monkeypatch):
    """Outputs that cannot be paired with the reference's are that target's failure, not exit 2."""
    from onnxkit.operations import targets as op

    real = op._execute

    def extra_output(run, model_path, feeds, precision, options, *, trust, target):
        got = real(run, model_path, feeds, precision, options, trust=trust, target=target)
        if target == "mobile":
            got["outputs"] = [{**o, "extra": np.zeros(3, np.float32)} for o in got["outputs"]]
        return got

    monkeypatch.setattr(op, "_execute", extra_output)
    r = cli("targets", cnn, "-t", "mobile", "--json", "--trust")
    assert r.code == 1, r.stderr
    mobile = _only(r.json, "mobile")
    assert mobile["status"] == "failed" and mobile["stage"] == "compare" and "output count differs" in mobile["reason"]
