"""`onnxkit optimize --auto` / `onnxkit quantize --mode auto`: candidates built, held to the
budget, timed together, the fastest valid one written; and the pipeline's auto default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    ).eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    return path


def _assert_fastest_valid_chosen(doc: dict) -> dict:
    cands = doc["candidates"]
    chosen = [c for c in cands if c["chosen"]]
    assert len(chosen) == 1, cands
    chosen = chosen[0]
    assert doc["chosen"] == chosen["name"]
    assert chosen["status"] == "ok" and chosen["within_budget"] is True
    d = str(doc["decide_batch"])
    valid = [c for c in cands if c["status"] == "ok" and c["within_budget"] is not False]
    finalists = [c for c in valid if c["runoff_ratio"] is not None]
    if finalists:
        # The run-off decides among the near-best; everyone else was slower in the first round.
        assert set(doc["runoff"]) == {c["name"] for c in finalists} and len(finalists) >= 2
        assert chosen["runoff_ratio"] == min(c["runoff_ratio"] for c in finalists)
        slowest_finalist = max(c["p50_ms"][d] for c in finalists)
        assert all(c["p50_ms"][d] > slowest_finalist for c in valid if c not in finalists)
    else:
        assert chosen["p50_ms"][d] == min(c["p50_ms"][d] for c in valid)
    return chosen


def test_quantize_auto_writes_the_fastest_candidate_within_budget(cnn_onnx, tmp_path):
    out = tmp_path / "cnn.auto.onnx"
    r = run_cli("quantize", cnn_onnx, "-o", out, "--mode", "auto", "--calib-random", "16", "--iterations", "5", "--json")
    assert r.code == 0, r
    doc = r.json
    names = [c["name"] for c in doc["candidates"]]
    # the fixture's first Conv reads the image (3 channels, 3x3): it is also tried in float
    assert names == ["input", "dynamic-pc", "dynamic-pt", "static-qdq-pc", "static-qdq-pt", "static-qdq-s8", "static-qop-pc",
                     "static-qdq-pc-stem-float"]
    stem = next(c for c in doc["candidates"] if c["name"] == "static-qdq-pc-stem-float")
    assert stem["status"] in ("ok", "out of budget") and stem["excluded"] >= 1
    assert doc["decide_batch"] == 8 and doc["batch_sizes"] == [1, 8]
    for c in doc["candidates"]:
        if c["status"] == "ok":
            assert set(c["p50_ms"]) == {"1", "8"} and all(v > 0 for v in c["p50_ms"].values())
            assert c["error"] is not None and c["error"] <= 0.01
    chosen = _assert_fastest_valid_chosen(doc)
    import onnx

    written = onnx.load(str(out))
    ops = {n.op_type for n in written.graph.node}
    if chosen["name"] == "input":
        assert ops == {n.op_type for n in onnx.load(str(cnn_onnx)).graph.node}
    else:
        assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "QLinearConv", "MatMulInteger"}
    # The work folder beside the output is gone.
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.auto.onnx"]
    # The human table names every candidate and marks the pick.
    r = run_cli("quantize", cnn_onnx, "-o", tmp_path / "again.onnx", "--mode", "auto", "--iterations", "3")
    assert r.code == 0, r
    assert "dynamic-pt" in r.stderr + r.stdout and "<- chosen" in r.stderr + r.stdout
    assert "static int8 variants not tried" in r.stderr + r.stdout


def test_a_candidate_over_budget_is_never_chosen(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", cnn_onnx, "-o", out, "--mode", "auto", "--max-error", "1e-12", "--iterations", "3", "--json")
    assert r.code == 1, r  # no quantized variant can be that exact
    doc = r.json
    quantized = [c for c in doc["candidates"] if c["name"] != "input"]
    assert len(quantized) == 2 and all(c["status"] == "out of budget" and c["within_budget"] is False for c in quantized)
    assert not any(c["chosen"] for c in quantized)
    assert doc["chosen"] == "input" and doc["chosen_is_input"]
    assert any("no quantized variant meets the accuracy budget" in n for n in doc["notes"])
    assert out.is_file()  # the float input: still a valid model where OUT was asked for
    # Insisting on a quantized model when none is within budget writes nothing.
    out2 = tmp_path / "q2.onnx"
    r = run_cli("quantize", cnn_onnx, "-o", out2, "--mode", "auto", "--max-error", "1e-12", "--iterations", "3",
                "--require-quantized", "--json")
    assert r.code == 1 and r.json["chosen"] is None and not out2.exists()
    assert "nothing was written" in r.json["notes"][-1]


def test_choose_skips_invalid_and_uses_the_runoff():
    from onnxkit.operations.autotune import FAILED, INVALID, Candidate, choose

    fast_but_wrong = Candidate("a", status=INVALID, within_budget=False, p50_ms={8: 1.0})
    broken = Candidate("b", status=FAILED, p50_ms={})
    slow = Candidate("c", within_budget=True, p50_ms={8: 5.0})
    base = Candidate("input", within_budget=True, p50_ms={8: 3.0}, is_input=True)
    assert choose([fast_but_wrong, broken, slow, base], 8).name == "input"
    assert choose([fast_but_wrong, broken, slow, base], 8, allow_input=False).name == "c"
    # Near-equals are settled by the longer run-off measurement, not the first round.
    x = Candidate("x", within_budget=True, p50_ms={8: 2.00}, runoff_ms=2.3, runoff_ratio=1.08)
    y = Candidate("y", within_budget=True, p50_ms={8: 2.05}, runoff_ms=2.1, runoff_ratio=1.0)
    assert choose([x, y, slow], 8).name == "y"
    assert choose([fast_but_wrong, broken], 8) is None


class _FastSource:
    """Stands in for a framework model that is faster than any ONNX variant (as XGBoost is
    at large batches)."""

    framework = "xgboost"
    path = "fake.json"

    def __init__(self, specs):
        self.input_specs = specs

    def predict(self, feeds):
        return {}


def test_optimize_auto_keeps_the_input_when_nothing_is_faster_and_says_when_the_source_wins(linear_onnx, tmp_path, monkeypatch):
    from onnxkit.operations import autotune
    from onnxkit.runtime import bench
    from onnxkit.runtime.session import make_session

    real = bench.bench_models

    def input_always_fastest(models, feeds, **kw):
        res = real(models, feeds, **kw)
        for e in res.entries:
            if not e.is_source:
                # 0.5 ms: still well above the fake source's microsecond, even on a busy machine
                e.stats.p50_ms = 0.5 if e.name == "input" else 1.0
        return res

    monkeypatch.setattr(bench, "bench_models", input_always_fastest)
    source = _FastSource(make_session(linear_onnx).input_specs)
    out = tmp_path / "opt.onnx"
    res = autotune.auto_optimize(linear_onnx, out, source=source, iterations=3, warmup=1)
    assert res.passed and res.chosen == "input" and res.chosen_is_input
    assert any(f"{out.name} is the input model, unchanged" in n for n in res.notes)
    import onnx

    assert onnx.load(str(out)).graph == onnx.load(str(linear_onnx)).graph
    assert {c.name for c in res.candidates} >= {"input", "default", "aggressive", "ort-extended"}
    assert res.source_p50_ms and set(res.source_p50_ms) == {1, 8}
    # The fake source returns at once: slower ONNX is reported, not hidden.
    assert any("xgboost model is faster than the best ONNX variant" in n for n in res.notes), res.notes
    table = res.tables()[0]
    assert "speed-up vs source @8" in table.columns and table.rows[-1][0] == "source (xgboost)"
    # The pipeline's form writes nothing when the input wins.
    out2 = tmp_path / "opt2.onnx"
    res = autotune.auto_optimize(linear_onnx, out2, iterations=3, warmup=1, write_input=False)
    assert res.output is None and not out2.exists()


def test_optimize_auto_cli_picks_the_fastest_valid(cnn_onnx, tmp_path):
    out = tmp_path / "o.onnx"
    r = run_cli("optimize", cnn_onnx, "-o", out, "--auto", "--batch-size", "2,4", "--iterations", "5", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["batch_sizes"] == [2, 4] and doc["decide_batch"] == 4
    assert len(doc["candidates"]) >= 4
    _assert_fastest_valid_chosen(doc)
    assert out.is_file()
    # Optimized candidates are checked against the input at fp32 tolerance.
    for c in doc["candidates"]:
        if c["status"] == "ok" and c["name"] != "input":
            assert c["within_budget"] is True and c["max_abs"] < 1e-3


def test_optimize_auto_validates_on_the_users_data(cnn_onnx, tmp_path):
    from onnxkit.operations.autotune import auto_optimize

    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32))
    res = auto_optimize(cnn_onnx, tmp_path / "o.onnx", data=tmp_path / "d.npz", batch_sizes=(1,), iterations=2, warmup=1)
    assert res.chosen is not None
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 5), np.float32))
    from onnxkit.errors import InputError

    with pytest.raises(InputError):
        auto_optimize(cnn_onnx, tmp_path / "o2.onnx", data=tmp_path / "bad.npz", iterations=2)


@pytest.mark.parametrize("args, message", [
    (["optimize", "--auto", "--level", "basic"], "--auto chooses the passes and level itself; drop --level or drop --auto"),
    (["optimize", "--batch-size", "4"], "--batch-size only applies with --auto"),
    (["quantize", "--mode", "auto", "--format", "qoperator"], "--mode auto chooses the variant itself; drop --format"),
    (["quantize", "--mode", "dynamic", "--require-quantized"], "--require-quantized only applies with --mode auto"),
    (["quantize", "--mode", "auto", "--metric", "maxabs"], "--metric maxabs needs --max-error"),
    (["optimize", "--auto", "--batch-size", "0"], "malformed --batch-size '0'"),
])
def test_auto_usage_errors_exit_2(linear_onnx, tmp_path, args, message):
    r = run_cli(args[0], linear_onnx, "-o", tmp_path / "x.onnx", *args[1:])
    assert r.code == 2, r
    assert message in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def _cfg(tmp_path: Path, linear_onnx: Path, body: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(f'[source]\npath = "{linear_onnx.as_posix()}"\n' + body)
    return p


def test_config_auto_default_and_pinned_settings(tmp_path, linear_onnx):
    from onnxkit.operations.config import ConfigError, load_config

    cfg = load_config(_cfg(tmp_path, linear_onnx, ""))
    assert cfg["optimize"]["mode"] == "auto" and cfg["quantize"]["mode"] == "auto"
    # An older config that pins a preset keeps its meaning.
    cfg = load_config(_cfg(tmp_path, linear_onnx, '[optimize]\npreset = "aggressive"\n'))
    assert cfg["optimize"]["mode"] == "fixed" and cfg["optimize"]["preset"] == "aggressive"
    cfg = load_config(_cfg(tmp_path, linear_onnx, '[quantize]\nmode = "dynamic"\n'))
    assert cfg["quantize"]["mode"] == "dynamic"
    with pytest.raises(ConfigError, match=r'c.toml:6: optimize.level is set but optimize.mode = "auto"'):
        load_config(_cfg(tmp_path, linear_onnx, '[optimize]\nmode = "auto"\n\nlevel = "basic"\n'))


def test_pipeline_auto_on_an_onnx_source(tmp_path, cnn_onnx):
    cfg = tmp_path / "p.toml"
    cfg.write_text("\n".join([
        "[source]", f'path = "{cnn_onnx.as_posix()}"',
        "[quantize]", "calib_random = 8", "min_cosine = 0.9",
        "[bench]", "iterations = 3", "warmup = 1", "batch_sizes = [2]",
    ]) + "\n")
    r = run_cli("pipeline", cfg, "--json")
    assert r.code == 0, r
    steps = {s["name"]: s for s in r.json["steps"]}
    q = steps["quantize"]["result"]
    assert q["decide_batch"] == 2 and "static-qop-pc" in [c["name"] for c in q["candidates"]]
    final = Path(r.json["final_model"]).name
    assert final == {"quantized": "model.int8.onnx", "optimized": "model.opt.onnx", "exported": "model.onnx"}[r.json["final_variant"]]


def test_a_candidate_whose_quantizer_fails_is_listed_not_fatal(cnn_onnx, tmp_path, monkeypatch):
    from onnxkit.operations import autotune
    from onnxkit.operations import quantize
    from onnxkit.errors import ConversionError

    real = quantize.quantize_model

    def qoperator_breaks(model, out, **kw):
        if kw.get("fmt") == "qoperator":
            raise ConversionError("quantize_static failed: QLinearConv not supported here")
        return real(model, out, **kw)

    monkeypatch.setattr(quantize, "quantize_model", qoperator_breaks)
    res = autotune.auto_quantize(cnn_onnx, tmp_path / "q.onnx", calib_random=8, batch_sizes=(2,), iterations=2, warmup=1)
    broken = res.candidate("static-qop-pc")
    assert broken.status == "failed" and "QLinearConv not supported" in broken.reason and not broken.chosen
    assert broken.p50_ms == {} and res.passed and res.chosen != "static-qop-pc"
    row = next(r for r in res.tables()[0].rows if r[0] == "static-qop-pc")
    assert "failed: quantize_static failed" in " ".join(map(str, row))


def test_stem_conv_is_the_one_shallow_conv_on_a_graph_input():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit.operations.quantize.selection import stem_conv

    def model(cin: int, k: int, second_on_input: bool = False):
        rng = np.random.default_rng(0)
        inits = [numpy_helper.from_array(rng.standard_normal((4, cin, k, k)).astype(np.float32), "w1"),
                 numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")]
        nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[k // 2] * 4),
                 helper.make_node("Conv", ["x" if second_on_input and cin == 4 else "a", "w2"], ["b"], pads=[1] * 4)]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, 8, 8])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    assert stem_conv(model(3, 3)) == "Conv_0"           # unnamed: named as quantize names it
    assert stem_conv(model(16, 3)) is None              # 144 multiplies per output: not shallow
    assert stem_conv(model(4, 1, second_on_input=True)) == "Conv_0"  # two on the input (4 and 36): the shallow one

