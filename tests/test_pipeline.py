"""`onnxkit init` + `onnxkit pipeline`: a real .pt2 program through every step, the reports
a CI job reads, gates that fail the build, and configs that are refused with the key and line."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _build_mlp(folder: Path) -> Path:
    try:
        from fixtures.torch_models import build_mlp
    except ImportError:  # the fixture module is optional; build the same shape of model here
        build_mlp = None
    import torch

    if build_mlp is not None:
        model = build_mlp()
    else:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), strict=False)
    path = folder / "mlp.pt2"
    torch.export.save(program, path)
    return path


def _small_bench(config: Path) -> None:
    """Few iterations: the tests check the plumbing, not the numbers."""
    text = config.read_text()
    text = text.replace("iterations = 50", "iterations = 5").replace("warmup = 5", "warmup = 1")
    text = re.sub(r"(\[bench\][^\[]*?)batch_sizes = \[1, 8\]", r"\1batch_sizes = [1, 4]", text, flags=re.S)
    config.write_text(text)


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """init on a .pt2, then one full pipeline run with $GITHUB_STEP_SUMMARY set."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("pipeline")
    models = root / "models"
    models.mkdir()
    source = _build_mlp(models)
    config = root / "ci" / "onnxkit.toml"
    config.parent.mkdir()
    init = run_cli("init", source, "-o", config)
    assert init.code == 0, init
    _small_bench(config)
    summary = root / "step_summary.md"
    summary.write_text("# earlier step\n")
    old = os.environ.get("GITHUB_STEP_SUMMARY")
    os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
    try:
        run = run_cli("pipeline", config, "--junit", root / "junit" / "pipeline.xml", "--json")
    finally:
        if old is None:
            os.environ.pop("GITHUB_STEP_SUMMARY", None)
        else:
            os.environ["GITHUB_STEP_SUMMARY"] = old
    return {"root": root, "source": source, "config": config, "init": init, "run": run, "summary": summary}


def test_init_writes_a_config_from_the_model(project):
    text = project["config"].read_text()
    assert 'path = "../models/mlp.pt2"' in text  # relative to the config's folder
    assert 'framework = "torch"' in text
    assert 'inputs = ["x:[batch,8]:float32"]' in text
    assert "opset = 18" in text
    # Optimize and quantize default to the automatic choice, and the config says so.
    import tomllib

    parsed = tomllib.loads(text)
    assert parsed["optimize"]["mode"] == "auto" and parsed["quantize"]["mode"] == "auto"
    assert "[gates.max_error]" in text and "# max_abs =" in text
    import tomllib

    tomllib.loads(text)  # what init writes parses


def test_init_refuses_to_overwrite_without_force(project, tmp_path):
    before = project["config"].read_text()
    r = run_cli("init", project["source"], "-o", project["config"])
    assert r.code == 2
    assert "already exists; pass --force" in r.stderr
    assert project["config"].read_text() == before
    copy = tmp_path / "c.toml"
    copy.write_text("old")
    assert run_cli("init", project["source"], "-o", copy, "--force").code == 0
    assert copy.read_text().startswith("# onnxkit pipeline config")


def test_pipeline_passes_and_keeps_every_step(project):
    r = project["run"]
    assert r.code == 0, r
    doc = r.json
    assert doc["verdict"] == "PASSED"
    steps = {s["name"]: s for s in doc["steps"]}
    assert list(steps) == ["export", "validate export", "optimize", "validate optimized", "quantize",
                           "validate quantized", "bench"]
    # The default config lets onnxkit choose: each auto step keeps its candidate table and its
    # pick; an artifact exists only where a variant beat its input on this machine.
    opt, quant = steps["optimize"]["result"], steps["quantize"]["result"]
    assert opt["stage"] == "optimize" and quant["stage"] == "quantize"
    assert {c["name"] for c in quant["candidates"]} >= {"input", "dynamic-pc", "dynamic-pt"}
    assert sum(c["chosen"] for c in quant["candidates"]) == 1 and quant["passed"]
    # no [quantize] budget: quantize is held to what the min_cosine gate (0.99) will check, less
    # a tenth of headroom, not to its own looser default for random inputs (0.02)
    assert quant["budget"].startswith("cosine error <= 0.009 "), quant["budget"]
    produced = ["exported"] + (["optimized"] if opt["output"] else []) + (["quantized"] if quant["output"] else [])
    for role in ("optimized", "quantized"):
        want = "passed" if role in produced else "skipped"
        assert steps[f"validate {role}"]["status"] == want, steps
    assert all(s["status"] == "passed" for n, s in steps.items() if not n.startswith("validate ")), steps
    # Each step keeps its command's own typed result.
    assert steps["export"]["result"]["framework"] == "torch"
    assert steps["validate export"]["result"]["outputs"][0]["max_abs"] < 1e-4
    bench = steps["bench"]["result"]
    assert {e["name"] for e in bench["entries"] if not e["is_source"]} == set(produced)
    assert any(e["is_source"] and e["kind"] == "torch" for e in bench["entries"])
    out = project["config"].parent / "onnxkit-out"
    files = {"exported": "mlp.onnx", "optimized": "mlp.opt.onnx", "quantized": "mlp.int8.onnx"}
    for role, name in files.items():
        assert (out / name).is_file() == (role in produced)
    assert doc["final_model"].endswith(files[produced[-1]]) and doc["final_variant"] == produced[-1]
    # Provenance: versions, digests, machine.
    prov = doc["provenance"]
    assert prov["packages"]["onnxruntime"] and prov["packages"]["torch"]
    roles = {a["role"]: a for a in prov["artifacts"]}
    assert set(roles) == {"source", *produced}
    import hashlib

    assert roles["exported"]["sha256"] == hashlib.sha256((out / "mlp.onnx").read_bytes()).hexdigest()
    assert roles["exported"]["opsets"]["ai.onnx"] == 18
    assert prov["machine"]["logical cores"] >= 1 and "CPUExecutionProvider" in prov["ort_providers"]


def test_junit_has_one_testcase_per_step_and_gate(project):
    doc = project["run"].json
    for path in (Path(doc["reports"]["junit"]), project["root"] / "junit" / "pipeline.xml"):
        root = ET.parse(path).getroot()
        names = [tc.get("name") for tc in root.iter("testcase")]
        assert len(names) == len(doc["steps"]) + len(doc["gates"])
        assert "step: export" in names and "gate: min_cosine" in names
        assert not list(root.iter("failure"))


def test_markdown_html_and_step_summary(project):
    doc = project["run"].json
    md = Path(doc["reports"]["markdown"]).read_text()
    assert "PASSED" in md and "| min_cosine |" in md and "validate quantized" in md
    summary = project["summary"].read_text()
    assert summary.startswith("# earlier step\n")  # appended, not replaced
    assert md in summary
    html = Path(doc["reports"]["html"]).read_text()
    assert html.count('<img src="data:image/png;base64,') >= 2
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "sha256" in html and "onnxruntime" in html


def test_failed_gate_exits_1_with_its_line(project, tmp_path):
    r = run_cli("pipeline", project["config"], "--gate", "min_speedup=1000", "--gate", "max_size_mb=0.000001",
                "--report-dir", tmp_path / "rep", "--json")
    assert r.code == 1, r
    gates = {g["name"]: g for g in r.json["gates"]}
    assert gates["min_speedup"]["passed"] is False and gates["min_speedup"]["actual"] > 0
    assert gates["max_size_mb"]["passed"] is False
    assert gates["min_cosine"]["passed"] is True
    junit = ET.parse(tmp_path / "rep" / "junit.xml").getroot()
    failed = [tc.get("name") for tc in junit.iter("testcase") if tc.find("failure") is not None]
    assert sorted(failed) == ["gate: max_size_mb", "gate: min_speedup"]
    assert "❌" in (tmp_path / "rep" / "summary.md").read_text()


def _config(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(body)
    return p


def test_typo_key_exits_2_naming_key_and_line(tmp_path):
    cfg = _config(tmp_path, '[source]\npath = "m.pt2"\n\n[bench]\nenabled = true\niteratons = 5\n')
    r = run_cli("pipeline", cfg)
    assert r.code == 2
    assert "bad.toml:6: unknown key 'bench.iteratons' (did you mean 'iterations'?)" in r.stderr


def test_unknown_section_and_bad_value_exit_2(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, '[source]\npath = "m.pt2"\n[gate]\nmin_speedup = 2\n'))
    assert r.code == 2 and "bad.toml:3: unknown section [gate] (did you mean 'gates'?)" in r.stderr
    r = run_cli("pipeline", _config(tmp_path, '[source]\npath = "m.pt2"\n[bench]\niterations = "many"\n'))
    assert r.code == 2 and "bad.toml:4: bench.iterations must be an integer" in r.stderr
    r = run_cli("pipeline", _config(tmp_path, '[source]\npath = "m.pt2"\n[gates.max_error]\ncosine = 0.9\n'))
    assert r.code == 2 and "unknown key 'gates.max_error.cosine'" in r.stderr


def test_malformed_toml_exits_2_naming_line(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, '[source]\npath = "m.pt2"\n[bench\niterations = 5\n'))
    assert r.code == 2
    assert re.search(r"bad\.toml:3(:\d+)?: invalid TOML", r.stderr), r.stderr


def test_bad_gate_override_exits_2(tmp_path):
    cfg = _config(tmp_path, '[source]\npath = "m.pt2"\n')
    r = run_cli("pipeline", cfg, "--gate", "min_speedp=2")
    assert r.code == 2 and "unknown gate 'min_speedp' in --gate (did you mean 'min_speedup'?)" in r.stderr
    r = run_cli("pipeline", cfg, "--gate", "min_speedup=fast")
    assert r.code == 2 and "not a number" in r.stderr


def test_missing_source_exits_2_before_any_work(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, '[source]\npath = "absent.pt2"\n'), "--json")
    assert r.code == 2
    assert "absent.pt2" in r.json["error"]


def test_static_quantization_without_calibration_is_a_config_error(tmp_path):
    (tmp_path / "m.pt2").write_bytes(b"PK")
    r = run_cli("pipeline", _config(tmp_path, '[source]\npath = "m.pt2"\n[quantize]\nmode = "static"\n'))
    assert r.code == 2 and "bad.toml:4: quantize.mode = \"static\" needs calib_data or calib_random" in r.stderr


def test_a_gate_that_was_not_measured_fails():
    from onnxkit.operations.gates import evaluate_gates
    from onnxkit.operations.pipeline import SKIPPED, PipelineResult, StepRecord
    from onnxkit.reports.pipeline_md import junit_cases

    res = PipelineResult(command="pipeline", steps=[StepRecord("bench", SKIPPED, reason="disabled in the config")])
    gates = evaluate_gates(res, {"min_speedup": 1.0, "max_size_mb": 10.0, "max_error.max_abs": 1.0})
    assert [g.passed for g in gates] == [False, False, False]
    assert gates[0].line == "min_speedup: not measured >= 1 (bench skipped: disabled in the config)"
    assert gates[2].detail == "the final model was not validated"
    res.gates = gates
    cases = junit_cases(res)
    assert cases[0] == ("step: bench", True, "skipped: disabled in the config", "skipped: disabled in the config")
    assert [c[1] for c in cases[1:]] == [False, False, False]


def test_a_step_that_raises_is_recorded_and_reports_are_still_written(tmp_path, linear_onnx):
    """ONNX as the source keeps this fast; data that does not fit the model makes every
    validation raise (exit 2), and the run still leaves its reports behind."""
    import numpy as np

    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 7), np.float32))  # the model takes 4 features
    cfg = _config(tmp_path, "\n".join([
        "[source]", f'path = "{linear_onnx.as_posix()}"',
        "[validate]", 'data = "bad.npz"',
        "[optimize]", "enabled = false",
        "[bench]", "enabled = false",
        "[gates]", "max_size_mb = 1",
    ]) + "\n")
    r = run_cli("pipeline", cfg, "--json")
    assert r.code == 2, r
    doc = r.json
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["export"]["status"] == "passed"
    assert steps["validate export"]["status"] == "error" and "bad.npz" in steps["validate export"]["reason"]
    assert steps["optimize"]["status"] == "skipped" and steps["optimize"]["reason"] == "disabled in the config"
    assert steps["bench"]["status"] == "skipped"
    assert doc["gates"][0]["passed"] is True  # the size gate was measured and passed
    junit = ET.parse(doc["reports"]["junit"]).getroot()
    failed = {tc.get("name") for tc in junit.iter("testcase") if tc.find("failure") is not None}
    # quantize measures its error on the same data, so it raises too; nothing is left to validate.
    assert failed == {"step: validate export", "step: quantize"}
    assert steps["validate quantized"]["reason"] == "quantize did not produce a model"
    assert Path(doc["reports"]["html"]).read_text().count("data:image/png;base64,") >= 1


def test_runtime_fused_graphs_are_detected(tmp_path):
    """Quantizing a graph with ORT's FusedConv leaves the convolutions in float; the
    pipeline detects such graphs and quantizes the portable export instead."""
    import onnx
    from onnx import TensorProto, helper

    from onnxkit.operations.pipeline import _has_runtime_fusions

    def save(op: str, domain: str) -> Path:
        g = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        p = tmp_path / f"{op}.onnx"
        onnx.save(m, str(p))
        return p

    assert _has_runtime_fusions(save("FusedConv", "com.microsoft"))
    assert not _has_runtime_fusions(save("Conv", ""))
