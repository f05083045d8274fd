"""`run --provider openvino`: the OpenVINO runtime package behind `run`, its precision reported."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.test_targets import cnn  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino not installed (pip install 'onnxkit[openvino]')")


def _ort_has_openvino_ep() -> bool:
    from onnxkit.runtime.session import available_providers

    return "OpenVINOExecutionProvider" in available_providers()


@pytest.fixture(autouse=True)
def _package_path():
    if _ort_has_openvino_ep():
        pytest.skip("this onnxruntime has its own OpenVINO provider; --provider openvino uses that")


def test_openvino_f32_agrees_with_ort_cpu_on_a_cnn(cli, cnn, tmp_path):  # noqa: F811
    ov_out, cpu_out = tmp_path / "ov.npz", tmp_path / "cpu.npz"
    r = cli("run", cnn, "--provider", "openvino", "--precision", "f32", "--batch-size", "4", "-o", ov_out, "--json")
    assert r.code == 0, r.stderr
    assert r.json["providers"] == ["OpenVINO (openvino package, CPU)"]
    assert "OpenVINO inference precision: f32" in r.json["notes"]
    assert r.json["contained"] is False and r.json["rehearsed"] is True
    assert cli("run", cnn, "--batch-size", "4", "-o", cpu_out).code == 0
    a, b = np.load(ov_out), np.load(cpu_out)
    assert np.max(np.abs(a["logits"] - b["logits"])) <= 1e-4


def test_openvino_default_precision_is_reported(cli, cnn):  # noqa: F811
    from onnxkit.runtime.targets_openvino import default_precision

    r = cli("run", cnn, "--provider", "openvino", "--json")
    assert r.code == 0, r.stderr
    picked = default_precision()
    if picked == "f32":
        assert "OpenVINO inference precision: f32" in r.json["notes"]
    else:
        note = next(n for n in r.json["notes"] if n.startswith(f"OpenVINO ran in {picked}: "))
        assert "OpenVINO's default precision, picked because" in note and "--precision f32" in note


def test_bf16_is_the_default_where_the_cpu_computes_bf16(cli, cnn):  # noqa: F811
    """This project's machine (AVX512-BF16): OpenVINO runs a float32 model in bf16 unless told,
    and run says so, naming the CPU feature."""
    from onnxkit.foundation.hostfacts import host_facts

    have = [f for f in ("AVX512-BF16", "AMX-BF16") if host_facts().has(f)]
    if not have:
        pytest.skip("this CPU does not compute bf16 natively")
    r = cli("run", cnn, "--provider", "openvino", "--json")
    assert r.code == 0, r.stderr
    assert any(n.startswith("OpenVINO ran in bf16: ") and have[0] in n for n in r.json["notes"])


def test_openvino_refuses_other_providers_and_provider_options(cli, cnn, tmp_path):  # noqa: F811
    out = tmp_path / "o.npz"
    r = cli("run", cnn, "--provider", "openvino", "--provider", "cuda", "-o", out)
    assert r.code == 2 and "cannot be combined with cuda" in r.stderr
    r = cli("run", cnn, "--provider", "openvino", "--provider-option", "x=1", "-o", out)
    assert r.code == 2 and "--precision" in r.stderr
    assert not out.exists()


def test_openvino_unreadable_model_is_exit_4_and_writes_nothing(cli, tmp_path):
    """A model OpenVINO has no conversion rule for (an ai.onnx.ml tree) is a conversion failure."""
    from onnx import TensorProto, helper

    import onnx

    node = helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5, name="bin0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    path = tmp_path / "bin.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "o.npz"
    r = cli("run", path, "--provider", "openvino", "-o", out)
    assert r.code == 4, r.stderr
    assert r.stderr.startswith("Error: ") and "Binarizer" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin.onnx"]
