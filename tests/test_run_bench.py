"""`onnxkit run`, `onnxkit bench`, `onnxkit providers` on tiny real models (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_linear_onnx, make_runaway_onnx


def ort_reference(model: Path, feeds: dict) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.fixture(scope="session")
def rows() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((10, 4)).astype(np.float32)


# ---------------------------------------------------------------- run

def test_run_cpu_random_matches_onnxruntime(cli, linear_onnx, tmp_path):
    from onnxkit.foundation.data import random_feeds
    from onnxkit.runtime.session import make_session

    out = tmp_path / "out.npz"
    r = cli("run", linear_onnx, "--provider", "cpu", "--batch-size", "3", "--seed", "5", "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["providers"] == ["CPUExecutionProvider"]
    assert doc["node_providers"] and set(doc["node_providers"]) == {"CPUExecutionProvider"}
    assert doc["rows"] == 3 and doc["batches"] == 1
    assert doc["outputs"][0]["shape"] == [3, 3] and doc["outputs"][0]["dtype"] == "float32"
    feeds = random_feeds(make_session(linear_onnx).input_specs, batch=3, seed=5)
    ref = ort_reference(linear_onnx, feeds)
    with np.load(out) as got:
        assert set(got.files) == {"y"}
        np.testing.assert_array_equal(got["y"], ref["y"])


def test_run_data_streams_batches_into_npz_and_npy(cli, linear_onnx, tmp_path, rows):
    data = tmp_path / "data.npz"
    np.savez(data, x=rows)
    ref = ort_reference(linear_onnx, {"x": rows})["y"]
    out = tmp_path / "out.npz"
    r = cli("run", linear_onnx, "--data", data, "--batch-size", "4", "-o", out, "--json")
    assert r.code == 0, r
    assert r.json["rows"] == 10 and r.json["batches"] == 3
    with np.load(out) as got:
        np.testing.assert_array_equal(got["y"], ref)
    npy = tmp_path / "out.npy"
    assert cli("run", linear_onnx, "--data", data, "--batch-size", "3", "-o", npy).code == 0
    np.testing.assert_array_equal(np.load(npy), ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_run_csv_in_csv_and_parquet_out(cli, linear_onnx, tmp_path, rows):
    import pandas as pd

    data = tmp_path / "in.csv"
    pd.DataFrame(rows, columns=["a", "b", "c", "d"]).to_csv(data, index=False)
    ref = ort_reference(linear_onnx, {"x": pd.read_csv(data).to_numpy().astype(np.float32)})["y"]
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"pred{suffix}"
        r = cli("run", linear_onnx, "--data", data, "--batch-size", "3", "-o", out, "--json")
        assert r.code == 0, r
        assert r.json["batches"] == 4
        frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        assert list(frame.columns) == ["y_0", "y_1", "y_2"]
        np.testing.assert_allclose(frame.to_numpy(dtype=np.float32), ref, rtol=1e-6, atol=1e-7)


def test_run_data_mismatch_is_exit_2(cli, linear_onnx, tmp_path):
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((5, 3), np.float32))
    r = cli("run", linear_onnx, "--data", data)
    assert r.code == 2, r
    assert "bad.npz (batch 1): expected x: float32[batch,4], got float32[5,3]" in r.stderr


def test_run_failure_midway_leaves_no_output(cli, linear_onnx, tmp_path):
    data = tmp_path / "in.csv"
    lines = ["a,b,c,d"] + ["1,2,3,4"] * 4 + ["1,2,oops,4"]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.csv"
    r = cli("run", linear_onnx, "--data", data, "--batch-size", "2", "-o", out)
    assert r.code == 2, r
    assert "in.csv has non-numeric columns but input 'x' is float32" in r.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_run_unavailable_provider_exit_3_names_available(cli, linear_onnx):
    r = cli("run", linear_onnx, "--provider", "cuda")
    assert r.code == 3, r
    assert "CUDAExecutionProvider is not available" in r.stderr
    assert "CPUExecutionProvider" in r.stderr.split("available:")[1]
    assert "--fallback" in r.stderr


def test_run_fallback_warns_and_runs_on_cpu(cli, linear_onnx):
    r = cli("run", linear_onnx, "--provider", "cuda", "--provider", "cpu", "--fallback", "--json")
    assert r.code == 0, r
    assert "not available; falling back to CPU" in " ".join(r.stderr.split())
    assert r.json["providers"] == ["CPUExecutionProvider"]
    assert r.json["providers_requested"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert any("CUDAExecutionProvider not available" in n for n in r.json["notes"])


@pytest.mark.parametrize(("args", "message"), [
    (["--provider", "warp-drive"], "unknown execution provider 'warp-drive'"),
    (["--provider-option", "novalue"], "malformed --provider-option 'novalue'"),
    (["--provider-option", "cuda:device_id=1"], "not among the providers used"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["-o", "out.txt"], "unsupported output file out.txt"),
    (["--input", "x:[2,4,"], "malformed input spec"),
])
def test_run_usage_errors(cli, linear_onnx, args, message):
    r = cli("run", linear_onnx, *args)
    assert r.code == 2, r
    assert message in r.stderr


def test_run_input_override_and_two_output_npy_refused(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])], "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "m"])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", "m"]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", "m"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    r = cli("run", path, "--input", "x:[2,5]:float32", "--json")
    assert r.code == 0, r
    assert [o["shape"] for o in r.json["outputs"]] == [[2, 5], [2, 5]]
    r = cli("run", path, "-o", tmp_path / "o.npy")
    assert r.code == 2 and "use .npz" in r.stderr


# ---------------------------------------------------------------- providers

def test_providers_lists_installed_and_hints(cli):
    r = cli("providers", "--json")
    assert r.code == 0, r
    doc = r.json
    by_name = {p["name"]: p for p in doc["providers"]}
    assert by_name["CPUExecutionProvider"]["available"] is True
    assert "onnxruntime" in doc["packages"] or "onnxruntime-gpu" in doc["packages"]
    cuda = by_name["CUDAExecutionProvider"]
    if not cuda["available"]:
        assert "onnxruntime-gpu" in cuda["install"] and "cuDNN" in cuda["install"]
    for name in ("OpenVINOExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider", "ROCMExecutionProvider", "TensorrtExecutionProvider"):
        assert by_name[name]["install"]


def test_provider_option_parsing():
    from onnxkit.runtime.providers import parse_provider_options, provider_options_for

    chosen = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = parse_provider_options(["trt_fp16_enable=True", "cuda:cudnn_conv_algo_search=HEURISTIC", "trt:device_id=1"], chosen)
    assert opts == {"TensorrtExecutionProvider": {"trt_fp16_enable": "True", "device_id": "1"},
                    "CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}
    merged = provider_options_for(chosen, opts)
    assert merged["TensorrtExecutionProvider"]["trt_engine_cache_enable"] == "True"
    assert merged["TensorrtExecutionProvider"]["trt_fp16_enable"] == "True"
    assert merged["CUDAExecutionProvider"] == {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC"}
    assert "CPUExecutionProvider" not in merged


def test_check_active_refuses_silent_cpu_fallback():
    from onnxkit.errors import EnvironmentProblem
    from onnxkit.runtime.providers import check_active

    with pytest.raises(EnvironmentProblem, match="could not be initialised"):
        check_active(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], fallback=False)
    assert check_active(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], fallback=True)
    assert check_active(["CPUExecutionProvider"], ["CPUExecutionProvider"], fallback=False) == []


# ---------------------------------------------------------------- I/O binding

def test_bound_runner_matches_plain_run(linear_onnx, rows):
    from onnxkit.runtime.iobinding import BoundRunner
    from onnxkit.runtime.session import make_session

    sess = make_session(linear_onnx)
    bound = BoundRunner(sess, {"x": rows}, device="cpu")
    bound.run()
    np.testing.assert_array_equal(bound.outputs()["y"], sess.run({"x": rows})["y"])


# ---------------------------------------------------------------- bench

@pytest.fixture(scope="session")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("bench")
    return make_linear_onnx(d / "small.onnx"), make_linear_onnx(d / "wide.onnx", out_features=64, seed=1)


def test_bench_json_percentiles_throughput_and_ratio(cli, two_models):
    a, b = two_models
    r = cli("bench", a, b, "--batch-size", "1,4", "--warmup", "1", "--iterations", "7", "--json")
    assert r.code == 0, r
    doc = r.json
    assert [(e["name"], e["batch_size"]) for e in doc["entries"]] == [("small", 1), ("wide", 1), ("small", 4), ("wide", 4)]
    for e in doc["entries"]:
        s = e["stats"]
        assert s["iterations"] == 7
        assert 0 < s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["throughput"] == pytest.approx(e["batch_size"] * 1000 / s["p50_ms"])
        assert e["providers"] == ["CPUExecutionProvider"]
    first, second = doc["entries"][0], doc["entries"][1]
    assert first["ratio_to_first"] == 1.0
    assert second["ratio_to_first"] == pytest.approx(second["stats"]["p50_ms"] / first["stats"]["p50_ms"])


@pytest.mark.parametrize("other,message", [
    ({"in_features": 6}, "input x has shape [batch,6], not [batch,4]"),
    ({"rename": "features"}, "it takes inputs (features), not (x)"),
])
def test_bench_refuses_models_that_cannot_share_inputs(cli, linear_onnx, tmp_path, other, message):
    import onnx

    path = make_linear_onnx(tmp_path / "other.onnx", in_features=other.get("in_features", 4))
    if "rename" in other:
        m = onnx.load(str(path))
        m.graph.input[0].name = other["rename"]
        m.graph.node[0].input[0] = other["rename"]
        onnx.save(m, str(path))
    r = cli("bench", linear_onnx, path, "--iterations", "2", "--json")
    assert r.code == 2, r
    assert r.json["error"] == f"other.onnx cannot be timed on linear.onnx's inputs: {message}"


def test_bench_models_api_interleaves_sessions(linear_onnx, rows):
    from onnxkit.runtime.bench import bench_models
    from onnxkit.runtime.session import make_session

    sessions = [make_session(linear_onnx), make_session(linear_onnx)]
    calls: list[int] = []
    for i, s in enumerate(sessions):
        real = s.session

        class Spy:
            def __init__(self, inner, idx):
                self.inner, self.idx = inner, idx

            def run(self, names, feeds):
                calls.append(self.idx)
                return self.inner.run(names, feeds)

        s.session = Spy(real, i)
    res = bench_models(sessions, {2: {"x": rows[:2]}}, warmup=0, iterations=4, names=["a", "b"])
    assert [e.name for e in res.entries] == ["a", "b"]
    timed = calls[2:]  # after one untimed first run each
    assert timed == [0, 1, 1, 0, 0, 1, 1, 0]  # round-robin, start rotating


def test_bench_io_binding_on_cpu(linear_onnx, rows):
    from onnxkit.runtime.bench import bench_models

    res = bench_models([linear_onnx], {4: {"x": rows[:4]}}, warmup=1, iterations=3, io_binding=True)
    assert res.entries[0].io_binding is True and res.entries[0].stats.iterations == 3


def test_bench_duration_mode(cli, linear_onnx):
    r = cli("bench", linear_onnx, "--duration", "0.05", "--warmup", "0", "--json")
    assert r.code == 0, r
    assert r.json["entries"][0]["stats"]["iterations"] >= 3
    r = cli("bench", linear_onnx, "--duration", "1", "--iterations", "3")
    assert r.code == 2 and "not both" in r.stderr


def test_bench_baseline_gate(cli, two_models, tmp_path):
    a, b = two_models
    base = tmp_path / "baseline.json"
    r = cli("bench", a, b, "--iterations", "5", "--warmup", "1", "--save-baseline", base, "--json")
    assert r.code == 0, r
    doc = json.loads(base.read_text())
    assert doc["format"] == "onnxkit-bench-baseline" and len(doc["entries"]) == 2

    # Tolerant limit: passes and reports the comparison.
    r = cli("bench", a, b, "--iterations", "5", "--warmup", "1", "--baseline", base, "--max-regression", "100000%", "--json")
    assert r.code == 0, r
    assert len(r.json["comparisons"]) == 2 and not any(c["regressed"] for c in r.json["comparisons"])

    # Doctored baseline: 'small' used to be 1000x faster -> regression, exit 1.
    for e in doc["entries"]:
        if e["name"] == "small":
            for m in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms"):
                e[m] /= 1000
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(doc))
    r = cli("bench", a, b, "--iterations", "5", "--warmup", "1", "--baseline", doctored, "--max-regression", "10%", "--json")
    assert r.code == 1, r
    regressed = {c["name"] for c in r.json["comparisons"] if c["regressed"]}
    assert "small" in regressed
    assert r.json["verdict"] == "FAILED"


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "something-else"}),
                                     json.dumps({"format": "onnxkit-bench-baseline", "entries": [{"name": "x"}]})])
def test_bench_malformed_baseline_exit_2(cli, linear_onnx, tmp_path, content):
    base = tmp_path / "b.json"
    base.write_text(content)
    r = cli("bench", linear_onnx, "--iterations", "2", "--baseline", base)
    assert r.code == 2, r
    assert "baseline" in r.stderr


def test_bench_baseline_without_matching_entries_exit_2(cli, two_models, tmp_path):
    a, b = two_models
    base = tmp_path / "b.json"
    assert cli("bench", a, "--iterations", "2", "--warmup", "0", "--save-baseline", base).code == 0
    r = cli("bench", b, "--iterations", "2", "--warmup", "0", "--baseline", base)
    assert r.code == 2 and "nothing to compare" in r.stderr


def test_bench_plot_writes_png(cli, two_models, tmp_path):
    a, b = two_models
    png = tmp_path / "lat.png"
    r = cli("bench", a, b, "--batch-size", "1,2", "--iterations", "3", "--warmup", "0", "--plot", png)
    assert r.code == 0, r
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("bench", a, "--iterations", "3", "--plot", tmp_path / "lat.jpg")
    assert r.code == 2 and "PNG" in r.stderr


@pytest.fixture(scope="session")
def torch_mlp_pair(tmp_path_factory) -> tuple[Path, Path]:
    """The same MLP as a torch.export .pt2 and as an ONNX graph built from its weights."""
    torch = pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("onnxkit.frameworks.torch_fw") is None:
        pytest.skip("onnxkit.frameworks.torch_fw not present yet")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fixtures.torch_models import build_mlp, export_program

    d = tmp_path_factory.mktemp("torchvs")
    mlp = build_mlp()
    pt2 = d / "mlp.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(export_program(mlp, (torch.randn(2, 8),), {"x": {0: batch}}), pt2)
    sd = {k: v.detach().numpy() for k, v in mlp.state_dict().items()}
    inits = [numpy_helper.from_array(v, k) for k, v in sd.items()]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "fc2.weight", "fc2.bias"], ["h2"], transB=1),
        helper.make_node("Tanh", ["h2"], ["t2"]),
        helper.make_node("Gemm", ["t2", "head.weight", "head.bias"], ["output_0"], transB=1),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("output_0", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = d / "mlp.onnx"
    onnx.save(model, str(path))
    return pt2, path


def test_bench_vs_torch_source(cli, torch_mlp_pair):
    pt2, onnx_path = torch_mlp_pair
    r = cli("bench", onnx_path, "--vs", pt2, "--batch-size", "1,8", "--iterations", "5", "--warmup", "1", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["source"]["framework"] == "torch"
    for b in (1, 8):
        onnx_e = next(e for e in doc["entries"] if e["batch_size"] == b and not e["is_source"])
        src_e = next(e for e in doc["entries"] if e["batch_size"] == b and e["is_source"])
        assert src_e["kind"] == "torch" and src_e["stats"]["p50_ms"] > 0
        assert src_e["stats"]["throughput"] > 0 and onnx_e["stats"]["p99_ms"] >= onnx_e["stats"]["p50_ms"]
        assert onnx_e["speedup_vs_source"] == pytest.approx(src_e["stats"]["p50_ms"] / onnx_e["stats"]["p50_ms"])
    # The column's header may wrap between its words when the timings make the table wide
    # (the renderer keeps words whole, not headers on one line): look for the words.
    assert "speed-up" in r.stderr and "source" in r.stderr


def test_bench_vs_onnx_source_without_frameworks(cli, linear_onnx):
    r = cli("bench", linear_onnx, "--vs", linear_onnx, "--iterations", "3", "--warmup", "0", "--json")
    assert r.code == 0, r
    kinds = [(e["is_source"], e["kind"]) for e in r.json["entries"]]
    assert kinds == [(False, "onnx"), (True, "onnx")]
    assert r.json["entries"][0]["speedup_vs_source"] > 0


def test_bench_unavailable_provider_exit_3(cli, linear_onnx):
    r = cli("bench", linear_onnx, "--provider", "tensorrt", "--iterations", "2")
    assert r.code == 3, r
    assert "TensorrtExecutionProvider is not available" in r.stderr


def test_interleaved_sessions_do_not_spin(monkeypatch, two_models, linear_onnx):
    """Busy-waiting ORT threads slow whatever runs next; interleaved benches turn it off."""
    import onnxkit.runtime.session as session_mod
    from onnxkit.runtime.bench import bench_models

    seen: list[bool] = []
    real = session_mod.make_session

    def spy(*args, **kwargs):
        seen.append(kwargs.get("spinning", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_mod, "make_session", spy)
    feeds = {2: {"x": np.ones((2, 4), np.float32)}}
    single = bench_models([linear_onnx], feeds, iterations=2, warmup=0)
    assert seen == [True] and "do not spin" not in single.spin_policy
    seen.clear()
    both = bench_models(list(two_models), feeds, iterations=2, warmup=0)
    assert seen == [False, False]
    assert "allow_spinning=0" in both.spin_policy


def test_untrusted_model_is_probed_in_a_child_first(cli, linear_onnx, monkeypatch):
    from onnxkit.runtime.contained import ContainedSession

    calls = []
    real = ContainedSession.__init__
    monkeypatch.setattr(ContainedSession, "__init__", lambda self, m, **k: (calls.append(m), real(self, m, **k))[1])
    r = cli("run", linear_onnx, "--json")
    assert r.code == 0, r
    assert len(calls) == 1 and r.json["contained"] is True
    calls.clear()
    r = cli("run", linear_onnx, "--trust", "--json")
    assert r.code == 0 and calls == [] and r.json["contained"] is False


def test_runaway_allocation_is_one_clean_error(cli, tmp_path):
    """The output's shape is computed at run time (no static check can see it): 2^38 floats."""
    path = make_runaway_onnx(tmp_path / "runaway.onnx")
    r = cli("run", path)
    assert r.code == 2, r
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_threads_apply_to_the_torch_source(torch_mlp_pair):
    import torch

    from onnxkit.frameworks.registry import load_source
    from onnxkit.runtime.bench import bench_models

    pt2, onnx_path = torch_mlp_pair
    source = load_source(pt2)
    before = torch.get_num_threads()
    seen = []
    predict = source.predict
    source.predict = lambda feeds: (seen.append(torch.get_num_threads()), predict(feeds))[1]
    torch.set_num_threads(2)
    try:
        spec = source.input_specs[0]
        bench_models([onnx_path], {2: {spec.name: np.ones((2, *spec.shape[1:]), np.float32)}}, iterations=2, warmup=0,
                     threads=1, source=source)
        assert seen and set(seen) == {1}  # every timed call ran at the bench's count
        assert torch.get_num_threads() == 2  # and the process's setting is back afterwards
    finally:
        torch.set_num_threads(before)


def test_bench_says_when_onnx_is_slower_than_the_source(cli, linear_onnx, tmp_path):
    """The 'source' here is the tiny linear model; the benched model does 10 2048x2048 GEMMs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2048)).astype(np.float32), "w0")]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"])]
    for i in range(1, 11):
        inits.append(numpy_helper.from_array(rng.standard_normal((2048, 2048)).astype(np.float32) * 0.01, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i - 1}", f"w{i}"], [f"h{i}"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((2048, 3)).astype(np.float32), "wout"))
    nodes.append(helper.make_node("MatMul", ["h10", "wout"], ["y"]))
    g = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    slow = tmp_path / "slow.onnx"
    onnx.save(m, str(slow))
    r = cli("bench", slow, "--vs", linear_onnx, "--iterations", "5", "--warmup", "1", "--batch-size", "2", "--json")
    assert r.code == 0, r
    assert r.json["entries"][0]["speedup_vs_source"] < 1
    assert any("slower than the source framework" in n for n in r.json["notes"])
