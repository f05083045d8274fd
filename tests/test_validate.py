"""onnxkit validate: verdicts, numbers a user can check with numpy, CI reports, saved
references, localization, and the refusals a user reads."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.runtime.session import make_session


def _mlp(path: Path, *, perturb: str | None = None, two_outputs: bool = False, batch_dim=None) -> Path:
    """x[?,4] -> fc1 (Gemm) -> Tanh -> fc2 (Gemm) -> y[?,3]; optionally a second output z.

    ``perturb`` names an initializer whose element [1, 0] moves by 1e-2 (one weight)."""
    rng = np.random.default_rng(7)
    inits = {
        "fc1.weight": rng.standard_normal((6, 4)).astype(np.float32),
        "fc1.bias": rng.standard_normal(6).astype(np.float32) * 0.1,
        "fc2.weight": rng.standard_normal((3, 6)).astype(np.float32),
        "fc2.bias": rng.standard_normal(3).astype(np.float32) * 0.1,
        "head.weight": rng.standard_normal((2, 4)).astype(np.float32),
    }
    if perturb:
        inits[perturb][1, 0] += np.float32(1e-2)
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"], transB=1, name="/fc1/Gemm"),
        helper.make_node("Tanh", ["/fc1/Gemm_output_0"], ["/act/Tanh_output_0"], name="/act/Tanh"),
        helper.make_node("Gemm", ["/act/Tanh_output_0", "fc2.weight", "fc2.bias"], ["y"], transB=1, name="/fc2/Gemm"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 3])]
    if two_outputs:
        nodes.append(helper.make_node("MatMul", ["x", "head.weight_t"], ["z"], name="/head/MatMul"))
        inits["head.weight_t"] = np.ascontiguousarray(inits.pop("head.weight").T)
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch_dim, 2]))
    else:
        inits.pop("head.weight")
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 4])], outputs,
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxkit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("validate")
    return {
        "good": _mlp(d / "good.onnx"),
        "copy": _mlp(d / "copy.onnx"),
        "bad": _mlp(d / "bad.onnx", perturb="fc2.weight"),
        "two": _mlp(d / "two.onnx", two_outputs=True),
        "two_bad": _mlp(d / "two_bad.onnx", two_outputs=True, perturb="fc2.weight"),
        "dir": d,
    }


def _data(path: Path, rows: int, seed: int = 3, cols: int = 4) -> Path:
    x = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    np.savez(path, x=x)
    return path


def test_identical_models_pass(cli, models):
    r = cli("validate", models["good"], models["copy"], "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["verdict"] == "PASSED"
    assert doc["samples"] == 9  # random inputs at batch sizes 1 and 8
    (y,) = doc["outputs"]
    assert y["name"] == "y" and y["passed"] and y["max_abs"] == 0 and y["cand_shape"] == [9, 3]


def test_one_perturbed_weight_fails_and_localize_names_its_node(cli, models):
    r = cli("validate", models["good"], models["bad"], "--localize", "--json")
    assert r.code == 1, r
    doc = r.json
    assert doc["verdict"] == "FAILED"
    assert "out of tolerance" in doc["outputs"][0]["problems"][0]
    loc = doc["localization"]
    assert loc["found"] is True
    assert loc["node"] == "/fc2/Gemm" and loc["op_type"] == "Gemm"
    assert loc["source_layer"] == "fc2"
    inputs = {t["name"]: t for t in loc["inputs"]}
    assert inputs["fc2.weight"]["passed"] is False and inputs["fc2.weight"]["max_abs"] == pytest.approx(1e-2, rel=1e-3)
    assert inputs["/act/Tanh_output_0"]["passed"] is True and inputs["/act/Tanh_output_0"]["max_abs"] == 0
    assert "fc2.weight differ" in loc["message"]
    # The human table says it too.
    r2 = cli("validate", models["good"], models["bad"], "--localize")
    assert r2.code == 1 and "/fc2/Gemm (Gemm)" in r2.stdout and "FAILED" in r2.stdout


def test_localize_walks_in_chunks_and_stops_at_the_first_divergence(models):
    from onnxkit.foundation.compare import Tolerance
    from onnxkit.operations.localize import localize

    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    bad1 = models["dir"] / "bad_fc1.onnx"
    _mlp(bad1, perturb="fc1.weight")
    loc = localize(models["good"], bad1, {"x": x}, Tolerance(), chunk=1)
    assert loc.found and loc.node == "/fc1/Gemm" and loc.checked_tensors == 1 and loc.shared_tensors == 3
    none = localize(models["good"], models["copy"], {"x": x}, Tolerance(), chunk=2)
    assert not none.found and none.checked_tensors == 3 and "none of the 3" in none.message


def test_reported_maxima_agree_with_numpy(cli, models, tmp_path):
    data = _data(tmp_path / "d.npz", 20)
    r = cli("validate", models["good"], models["bad"], "--data", data, "--json")
    assert r.code == 1, r
    got = r.json["outputs"][0]
    x = np.load(data)["x"]
    ref = make_session(models["good"]).run({"x": x})["y"].astype(np.float64)
    cand = make_session(models["bad"]).run({"x": x})["y"].astype(np.float64)
    d = np.abs(cand - ref)
    assert got["max_abs"] == pytest.approx(d.max(), rel=1e-9)
    assert got["max_rel"] == pytest.approx((d / np.abs(ref)).max(), rel=1e-9)
    assert got["mean_abs"] == pytest.approx(d.mean(), rel=1e-9)
    assert got["p99_abs"] == pytest.approx(np.percentile(d, 99), rel=1e-5)
    atol, rtol = r.json["tolerance"]["atol"], r.json["tolerance"]["rtol"]
    assert got["out_of_tol"] == int((~np.isclose(cand, ref, atol=atol, rtol=rtol)).sum())
    worst = np.unravel_index(np.argmax(d - (atol + rtol * np.abs(ref))), d.shape)
    assert got["worst_index"] == [int(i) for i in worst]
    assert got["worst_ref"] == pytest.approx(ref[worst]) and got["worst_cand"] == pytest.approx(cand[worst])
    assert r.json["samples"] == 20


def test_streamed_data_gives_the_metrics_of_one_batch(cli, models, tmp_path):
    data = _data(tmp_path / "d.npz", 37)
    small = cli("validate", models["good"], models["bad"], "--data", data, "--batch-sizes", "5", "--json")
    whole = cli("validate", models["good"], models["bad"], "--data", data, "--batch-sizes", "64", "--json")
    assert small.json["batches"] == 8 and whole.json["batches"] == 1
    a, b = small.json["outputs"][0], whole.json["outputs"][0]
    for key in ("max_abs", "max_rel", "out_of_tol", "worst_index", "worst_ref", "worst_cand", "cand_shape", "elements"):
        assert a[key] == b[key], key
    for key in ("mean_abs", "p99_abs", "cosine"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key


def test_junit_and_markdown_reports(cli, models, tmp_path):
    junit, md = tmp_path / "v.xml", tmp_path / "v.md"
    r = cli("validate", models["two"], models["two_bad"], "--junit", junit, "--report", md)
    assert r.code == 1, r
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"output y", "output z"}
    failure = cases["output y"].find("failure")
    assert failure is not None and "out of tolerance" in failure.get("message")
    assert "max abs" in failure.text
    assert cases["output z"].find("failure") is None
    text = md.read_text()
    assert "FAILED" in text and "| y |" in text and "| z |" in text
    ok = cli("validate", models["two"], models["two"], "--junit", junit)
    assert ok.code == 0 and ET.parse(junit).getroot().find("testsuite").get("failures") == "0"


def test_save_then_load_outputs_without_source(cli, models, tmp_path):
    ref = tmp_path / "ref.npz"
    r = cli("validate", models["good"], models["good"], "--save-outputs", ref)
    assert r.code == 0, r
    with np.load(ref, allow_pickle=False) as z:
        assert {"input/0", "output/0", "input/0@1", "output/0@1", "meta"} <= set(z.files)  # members by position
        meta = json.loads(str(z["meta"]))
        assert meta["format"] == "onnxkit-references" and [b["rows"] for b in meta["batches"]] == [1, 8]
    ok = cli("validate", models["copy"], "--load-outputs", ref, "--json")
    assert ok.code == 0, ok
    assert ok.json["samples"] == 9 and "saved outputs ref.npz" in ok.json["reference"]
    bad = cli("validate", models["bad"], "--load-outputs", ref, "--json")
    assert bad.code == 1, bad
    assert bad.json["outputs"][0]["out_of_tol"] > 0


def test_load_outputs_refuses_a_pickle_and_a_foreign_npz(cli, models, tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.ones((2, 4), np.float32))
    r = cli("validate", models["good"], "--load-outputs", foreign)
    assert r.code == 2 and "not written by onnxkit validate --save-outputs" in r.stderr
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": "onnxkit-references"}], dtype=object))
    r = cli("validate", models["good"], "--load-outputs", pickled)
    assert r.code == 5 and "unpickle" in r.stderr


@pytest.mark.parametrize(
    ("tol", "message"),
    [
        ("abc", "tolerance 'abc' is not a number"),
        ("-1e-3", "tolerance '-1e-3' must be finite and non-negative"),
        ("nan", "tolerance 'nan' must be finite and non-negative"),
        ("y=", "malformed --tol 'y='"),
    ],
)
def test_bad_tolerances_exit_2(cli, models, tol, message):
    r = cli("validate", models["good"], models["copy"], "--tol", tol)
    assert r.code == 2, r
    assert message in r.stderr


def test_data_that_does_not_fit_exits_2_naming_both_sides(cli, models, tmp_path):
    data = _data(tmp_path / "wide.npz", 5, cols=3)
    r = cli("validate", models["good"], models["copy"], "--data", data)
    assert r.code == 2, r
    assert "expected x: float32[?,4], got float32[5,3]" in r.stderr


def test_empty_data_exits_2(cli, models, tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 4), np.float32))
    r = cli("validate", models["good"], models["copy"], "--data", empty)
    assert r.code == 2 and "holds no rows" in r.stderr, r


def test_output_count_mismatch_exits_2_listing_both_sides(cli, models):
    r = cli("validate", models["two"], models["good"])
    assert r.code == 2, r
    assert "output count differs: reference has 2 (y, z), candidate has 1 (y)" in r.stderr


def test_usage_errors(cli, models, tmp_path):
    r = cli("validate", models["good"])
    assert r.code == 2 and "missing MODEL.onnx" in r.stderr
    r = cli("validate", models["good"], models["copy"], "--batch-sizes", "1,x")
    assert r.code == 2 and "malformed --batch-sizes" in r.stderr
    r = cli("validate", models["good"], models["copy"], "--load-outputs", tmp_path / "nope.npz")
    assert r.code == 2 and "either SOURCE or --load-outputs" in r.stderr


def test_edge_cases_and_per_output_tolerance(cli, models):
    r = cli("validate", models["good"], models["copy"], "--edge-cases", "--json")
    assert r.code == 0, r
    assert any("edge case: large" in s for s in r.json["input_sets"])
    # A loose per-output tolerance lets the perturbed model through, for that output only.
    r = cli("validate", models["good"], models["bad"], "--tol", "y=1e-1", "--json")
    assert r.code == 0, r
    assert r.json["outputs"][0]["atol"] == 1e-1
    typo = cli("validate", models["good"], models["copy"], "--tol", "logits=1e-1", "--json")
    assert typo.code == 0 and any("no output matches 'logits'" in n for n in typo.json["notes"])


def test_torch_source_export_passes_and_perturbed_export_is_localized(cli, tmp_path):
    pytest.importorskip("torch")
    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc1 = torch.nn.Linear(4, 8)\n"
        "        self.fc2 = torch.nn.Linear(8, 3)\n"
        "    def forward(self, x):\n"
        "        return self.fc2(torch.relu(self.fc1(x)))\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return Net().eval()\n",
    )
    src = f"{factory}:build"
    good = tmp_path / "net.onnx"
    exp = cli("export", src, "-o", good, "-i", "x:[batch,4]:float32", "--random-weights", "--no-validate", "--exporter", "torchscript")
    assert exp.code == 0, exp
    r = cli("validate", src, good, "-i", "x:[batch,4]:float32", "--json")
    assert r.code == 0, r
    assert r.json["outputs"][0]["max_abs"] < 1e-5
    m = onnx.load(str(good))
    init = next(t for t in m.graph.initializer if t.name.endswith("fc2.weight"))
    w = numpy_helper.to_array(init).copy()
    w[1, 0] += np.float32(1e-2)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "net_bad.onnx"
    onnx.save(m, str(bad))
    r = cli("validate", src, bad, "-i", "x:[batch,4]:float32", "--localize", "--json")
    assert r.code == 1, r
    loc = r.json["localization"]
    assert loc["found"], loc
    # Re-exported with the candidate's own exporter, so node names line up.
    assert loc["node"] == "/fc2/Gemm" and loc["op_type"] == "Gemm"
    assert "fc2" in (loc["source_layer"] or "") and any(t["name"] == init.name and t["passed"] is False for t in loc["inputs"])


def test_untrusted_runaway_model_is_one_clean_error(cli, tmp_path):
    from tests.conftest import make_runaway_onnx

    path = make_runaway_onnx(tmp_path / "runaway.onnx")
    r = cli("validate", path, path)
    assert r.code == 2, r
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_untrusted_candidate_and_reference_run_contained_unless_trusted(cli, models, monkeypatch):
    from onnxkit.runtime.contained import ContainedSession

    calls = []
    real = ContainedSession.__init__
    monkeypatch.setattr(ContainedSession, "__init__", lambda self, m, **k: (calls.append(m), real(self, m, **k))[1])
    assert cli("validate", models["good"], models["copy"]).code == 0
    assert sorted(str(c) for c in calls) == sorted([str(models["copy"]), str(models["good"])])
    calls.clear()
    assert cli("validate", models["good"], models["copy"], "--trust").code == 0
    assert calls == []
