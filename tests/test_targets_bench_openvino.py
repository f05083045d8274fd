"""`bench --provider openvino [--precision P]`: each model timed on ONNX Runtime CPU and on
OpenVINO side by side, the precision OpenVINO ran at in the result and the table."""

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


def test_bench_times_ort_cpu_and_openvino_side_by_side(cli, cnn, tmp_path):  # noqa: F811
    base = tmp_path / "base.json"
    r = cli("bench", cnn, "--provider", "openvino", "--precision", "f32", "--batch-size", "1,4", "-n", "5",
            "--warmup", "1", "--save-baseline", base, "--json")
    assert r.code == 0, r.stderr
    rows = [(e["name"], e["batch_size"], e["precision"], e["providers"]) for e in r.json["entries"]]
    assert rows == [
        ("cnn", 1, None, ["CPUExecutionProvider"]),
        ("cnn [openvino f32]", 1, "f32", ["OpenVINO (openvino package, CPU)"]),
        ("cnn", 4, None, ["CPUExecutionProvider"]),
        ("cnn [openvino f32]", 4, "f32", ["OpenVINO (openvino package, CPU)"]),
    ]
    assert all(e["stats"]["p50_ms"] > 0 for e in r.json["entries"])
    assert r.json["entries"][1]["ratio_to_first"] > 0  # against the first model on ONNX Runtime
    assert "OpenVINO inference precision: f32" in r.json["notes"]
    # the baseline names the OpenVINO entries too, so a later run compares like with like
    r = cli("bench", cnn, "--provider", "openvino", "--precision", "f32", "-n", "5", "--warmup", "1",
            "--baseline", base, "--max-regression", "100000%", "--json")
    assert r.code == 0, r.stderr
    assert {c["name"] for c in r.json["comparisons"]} == {"cnn", "cnn [openvino f32]"}


def test_bench_default_precision_is_openvinos_pick(cli, cnn):  # noqa: F811
    from onnxkit.runtime.targets_openvino import default_precision

    picked = default_precision()
    r = cli("bench", cnn, "--provider", "openvino", "-n", "3", "--warmup", "1", "--json")
    assert r.code == 0, r.stderr
    assert [(e["name"], e["precision"]) for e in r.json["entries"]] == [("cnn", None), (f"cnn [openvino {picked}]", picked)]
    if picked != "f32":
        assert any(n.startswith(f"OpenVINO ran in {picked}: ") for n in r.json["notes"])


def test_bench_openvino_beside_the_source(cli, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    pt2 = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 6),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(pt2))
    onnx_path = tmp_path / "mlp.onnx"
    torch.onnx.export(net, (torch.randn(2, 6),), str(onnx_path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    r = cli("bench", onnx_path, "--vs", pt2, "--provider", "openvino", "--precision", "f32", "--threads", "1",
            "-n", "5", "--warmup", "1", "--json")
    assert r.code == 0, r.stderr
    by_name = {e["name"]: e for e in r.json["entries"]}
    assert set(by_name) == {"mlp", "mlp [openvino f32]", "mlp.pt2"}
    assert by_name["mlp [openvino f32]"]["speedup_vs_source"] > 0
    assert r.json["threads"] == 1 and r.json["threads_from"] == "--threads"


@pytest.mark.parametrize("extra, message", [
    (["--precision", "fp8"], "unknown --precision 'fp8'; choose from f32, bf16, f16"),
    (["--provider-option", "x=1"], "--provider openvino takes --precision"),
    (["--io-binding"], "OpenVINO runs on the CPU here"),
    (["--provider", "cuda"], "cannot be combined with cuda"),
])
def test_bench_openvino_bad_usage_is_exit_2_and_writes_nothing(cli, cnn, tmp_path, extra, message):  # noqa: F811
    base = tmp_path / "base.json"
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("bench", cnn, "--provider", "openvino", *extra, "-n", "3", "--save-baseline", base)
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("Error: ") and message in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_precision_without_openvino_is_ignored_with_a_note(cli, cnn):  # noqa: F811
    r = cli("bench", cnn, "--precision", "bf16", "-n", "3", "--warmup", "1", "--json")
    assert r.code == 0, r.stderr
    assert all(e["precision"] is None for e in r.json["entries"])
    assert any(n.startswith("--precision bf16 ignored") for n in r.json["notes"])
