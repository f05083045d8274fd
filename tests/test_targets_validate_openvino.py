"""`validate --provider openvino [--reference-provider cpu] [--precision P]`: OpenVINO's answers
checked against ONNX Runtime CPU (or the source), at the precision OpenVINO really used."""

from __future__ import annotations

import importlib.util

import pytest

from tests.test_targets import cnn  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino not installed (pip install 'onnxkit[openvino]')")


@pytest.fixture(autouse=True)
def _package_path():
    from onnxkit.runtime.session import available_providers

    if "OpenVINOExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime has its own OpenVINO provider; --provider openvino uses that")


def test_validate_on_openvino_at_f32_agrees_with_ort_cpu(cli, cnn):  # noqa: F811
    r = cli("validate", cnn, cnn, "--provider", "openvino", "--reference-provider", "cpu", "--precision", "f32", "--json")
    assert r.code == 0, r.stderr
    assert r.json["precision"] == "f32"
    assert r.json["candidate"] == "cnn.onnx on OpenVINO (openvino package, CPU) in f32"
    assert r.json["reference"] == "cnn.onnx on CPUExecutionProvider"
    assert r.json["tolerance"]["preset"] == "fp32"
    assert r.json["outputs"][0]["max_abs"] <= 1e-4
    assert "OpenVINO inference precision: f32" in r.json["notes"]


def test_validate_default_precision_is_openvinos_pick_with_the_reason(cli, cnn):  # noqa: F811
    from onnxkit.runtime.targets_openvino import default_precision

    picked = default_precision()
    r = cli("validate", cnn, cnn, "--provider", "openvino", "--json")
    assert r.json["precision"] == picked
    if picked == "f32":
        assert r.code == 0 and r.json["tolerance"]["preset"] == "fp32"
        return
    # this machine (AVX-512 BF16): bf16, said with its reason, held to the fp16 preset
    assert r.code == 0, r.stderr
    note = next(n for n in r.json["notes"] if n.startswith(f"OpenVINO ran in {picked}: "))
    assert "natively" in note and "--precision f32" in note
    assert f"compared with the fp16 tolerance preset because it ran in {picked}" in r.json["notes"]
    assert r.json["tolerance"]["preset"] == "fp16"
    assert r.json["outputs"][0]["max_abs"] > 1e-4  # it really ran in the narrower type


def test_a_tolerance_the_user_gives_is_kept_at_bf16(cli, cnn):  # noqa: F811
    r = cli("validate", cnn, cnn, "--provider", "openvino", "--precision", "bf16", "--tol", "1e-5", "--json")
    assert r.json["precision"] == "bf16"
    assert r.json["tolerance"]["atol"] == 1e-5
    assert not any("fp16 tolerance preset" in n for n in r.json["notes"])
    assert r.code == 1  # bf16 moves the logits by 1e-2: a 1e-5 limit fails, as asked


def test_validate_against_the_source_framework(cli, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    pt2 = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 6),),
                                                  dynamic_shapes=({0: torch.export.Dim("batch")},)), str(pt2))
    onnx_path = tmp_path / "mlp.onnx"
    torch.onnx.export(net, (torch.randn(2, 6),), str(onnx_path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    r = cli("validate", pt2, onnx_path, "--provider", "openvino", "--precision", "f32", "--json")
    assert r.code == 0, r.stderr
    assert r.json["precision"] == "f32" and r.json["reference"].startswith("torch ")


def test_unknown_precision_is_exit_2_and_writes_nothing(cli, cnn, tmp_path):  # noqa: F811
    junit = tmp_path / "j.xml"
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("validate", cnn, cnn, "--provider", "openvino", "--precision", "int3", "--junit", junit)
    assert r.code == 2
    assert r.stderr.startswith("Error: unknown --precision 'int3'; choose from f32, bf16, f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_localize_on_openvino_is_refused_before_any_work(cli, cnn, tmp_path):  # noqa: F811
    report = tmp_path / "r.md"
    r = cli("validate", cnn, cnn, "--provider", "openvino", "--localize", "--report", report)
    assert r.code == 2 and "--localize" in r.stderr and "openvino" in r.stderr
    assert not report.exists()


def test_precision_on_onnx_runtime_is_ignored_with_a_note(cli, cnn):  # noqa: F811
    r = cli("validate", cnn, cnn, "--precision", "bf16", "--json")
    assert r.code == 0, r.stderr
    assert r.json["precision"] is None
    assert any(n.startswith("--precision bf16 ignored: ONNX Runtime runs the graph's own types") for n in r.json["notes"])


def test_a_model_openvino_cannot_read_is_exit_4(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5, name="bin0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    path = tmp_path / "bin.onnx"
    onnx.save(model, str(path))
    r = cli("validate", path, path, "--provider", "openvino", "--reference-provider", "cpu")
    assert r.code == 4, r.stderr
    assert r.stderr.startswith("Error: ") and "Binarizer" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.onnx"]


@pytest.mark.slow
def test_a_hugging_face_folder_against_its_export_on_openvino(cli, tmp_path):
    """The folder's PyTorch model is the reference; OpenVINO runs the export, at f32 and at its default."""
    pytest.importorskip("transformers")
    from tests.test_hf_folders import tiny_bert
    from onnxkit.runtime.targets_openvino import default_precision

    src = tiny_bert(tmp_path / "src", head="BertForTokenClassification")
    out = tmp_path / "out"
    assert cli("export", src, "-o", out, "--no-validate").code == 0
    r = cli("validate", src, out, "--provider", "openvino", "--precision", "f32", "--json")
    assert r.code == 0, r.stderr
    assert r.json["precision"] == "f32" and r.json["tolerance"]["preset"] == "fp32"
    assert "OpenVINO inference precision: f32" in r.json["notes"]
    picked = default_precision()
    r = cli("validate", src, out, "--provider", "openvino", "--json")
    assert r.json["precision"] == picked
    if picked != "f32":
        assert r.json["tolerance"]["preset"] == "fp16"
        assert any(n.startswith(f"OpenVINO ran in {picked}: ") for n in r.json["notes"])
    r = cli("validate", src, out, "--provider", "openvino", "--precision", "f4")
    assert r.code == 2 and "unknown --precision 'f4'" in r.stderr


def test_a_reference_on_openvino_runs_in_f32_unless_told(cli, cnn):  # noqa: F811
    r = cli("validate", cnn, cnn, "--reference-provider", "openvino", "--json")
    assert r.code == 0, r.stderr
    assert r.json["reference"] == "cnn.onnx on OpenVINO (openvino package, CPU)"
    assert r.json["precision"] is None  # the candidate ran on ONNX Runtime
    assert "the reference ran on OpenVINO in f32" in r.json["notes"]
    assert r.json["outputs"][0]["max_abs"] <= 1e-4
    r = cli("validate", cnn, cnn, "--provider", "openvino", "--reference-provider", "openvino", "--json")
    assert r.code == 0, r.stderr
    assert [n for n in r.json["notes"] if n.startswith("the reference ran")] == ["the reference ran on OpenVINO in f32"]
