"""CUDA / TensorRT paths of run and bench. They need onnxruntime-gpu and an NVIDIA GPU; on
any other machine every test here is skipped with the reason."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

AVAILABLE = ort.get_available_providers()
needs_cuda = pytest.mark.skipif("CUDAExecutionProvider" not in AVAILABLE, reason="CUDAExecutionProvider not available (needs onnxruntime-gpu and a GPU)")
needs_trt = pytest.mark.skipif("TensorrtExecutionProvider" not in AVAILABLE, reason="TensorrtExecutionProvider not available (needs onnxruntime-gpu and TensorRT)")


def _cpu_reference(model, feeds):
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@needs_cuda
def test_providers_probe_says_cuda_usable(cli):
    r = cli("providers", "--json")
    assert r.code == 0, r
    cuda = next(p for p in r.json["providers"] if p["name"] == "CUDAExecutionProvider")
    assert cuda["available"] is True
    assert cuda["usable"] is True, cuda["problem"]


@needs_cuda
def test_run_cuda_matches_cpu_and_reports_cuda_nodes(cli, linear_onnx, tmp_path):
    rows = np.random.default_rng(3).standard_normal((64, 4)).astype(np.float32)
    data = tmp_path / "x.npz"
    np.savez(data, x=rows)
    out = tmp_path / "y.npz"
    r = cli("run", linear_onnx, "--provider", "cuda", "--provider-option", "cudnn_conv_algo_search=HEURISTIC",
            "--data", data, "--batch-size", "16", "-o", out, "--json")
    assert r.code == 0, r
    assert r.json["providers"][0] == "CUDAExecutionProvider"
    assert "CUDAExecutionProvider" in (r.json["node_providers"] or {})
    with np.load(out) as got:
        # TF32 matmuls on Ampere+ differ from CPU fp32 in the 3rd-4th significant digit.
        np.testing.assert_allclose(got["y"], _cpu_reference(linear_onnx, {"x": rows}), rtol=1e-2, atol=1e-3)


@needs_cuda
def test_bound_runner_on_cuda_matches_plain_run(linear_onnx):
    from onnxkit.runtime.iobinding import BoundRunner, device_for
    from onnxkit.runtime.session import make_session

    sess = make_session(linear_onnx, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert device_for(sess) == "cuda"
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    bound = BoundRunner(sess, {"x": x}, device="cuda", device_id=0)
    bound.run()
    bound.run()  # re-running the same binding is what bench does
    np.testing.assert_allclose(bound.outputs()["y"], sess.run({"x": x})["y"], rtol=1e-5, atol=1e-6)


@needs_cuda
def test_bench_cuda_uses_io_binding(cli, linear_onnx):
    r = cli("bench", linear_onnx, "--provider", "cuda", "--batch-size", "1,32", "--iterations", "10", "--warmup", "3", "--json")
    assert r.code == 0, r
    for e in r.json["entries"]:
        assert e["providers"][0] == "CUDAExecutionProvider"
        assert e["io_binding"] is True
        assert e["stats"]["p50_ms"] > 0
    r = cli("bench", linear_onnx, "--provider", "cuda", "--no-io-binding", "--iterations", "5", "--json")
    assert r.code == 0 and r.json["entries"][0]["io_binding"] is False


@needs_cuda
def test_cuda_bad_provider_option_is_a_clear_error(cli, linear_onnx):
    r = cli("run", linear_onnx, "--provider", "cuda", "--provider-option", "cudnn_conv_algo_search=FASTEST_PLEASE")
    assert r.code in (2, 3), r
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr


@needs_trt
def test_run_tensorrt_with_engine_cache(cli, linear_onnx, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONNXKIT_CACHE", str(cache))
    r = cli("run", linear_onnx, "--provider", "tensorrt", "--provider-option", "trt_fp16_enable=False", "--batch-size", "4", "--json")
    if r.code == 3 and "could not be initialised" in r.stderr:
        pytest.skip("TensorRT libraries did not load on this machine: " + r.stderr.strip())
    assert r.code == 0, r
    assert r.json["providers"][:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert "TensorrtExecutionProvider" in (r.json["node_providers"] or {})
    assert any((cache / "tensorrt").iterdir()), "TensorRT engine cache was not written"
