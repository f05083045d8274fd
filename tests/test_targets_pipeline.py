"""The pipeline's ``[targets]`` gate: the final model on each required target, the exit codes
(1 for a failing or disagreeing target, 3 for one not available here, 2 for a config that
names an unknown target), and the targets table in every report."""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import make_linear_onnx, run_cli

pytest.importorskip("onnx")


def _config(tmp_path: Path, targets: str, *, source: Path | None = None) -> Path:
    """An ONNX source (fast), every slow stage off, and the [targets] section given."""
    src = source or make_linear_onnx(tmp_path / "lin.onnx")
    cfg = tmp_path / "p.toml"
    cfg.write_text("\n".join([
        "[source]", f'path = "{src.as_posix()}"',
        "[optimize]", "enabled = false",
        "[quantize]", "enabled = false",
        "[bench]", "enabled = false",
        "[targets]", targets,
    ]) + "\n")
    return cfg


def _no_run_happened(tmp_path: Path) -> None:
    assert not (tmp_path / "onnxkit-out").exists(), "a refused config must not start the run"


def test_cpu_target_passes_and_every_report_has_the_targets_table(tmp_path):
    cfg = _config(tmp_path, 'require = ["cpu"]')
    text = run_cli("pipeline", cfg)
    assert text.code == 0 and "Targets (reference: ONNX Runtime CPU)" in text.stdout, text
    r = run_cli("pipeline", cfg, "--json")
    assert r.code == 0, r
    steps = {s["name"]: s for s in r.json["steps"]}
    assert steps["targets"]["status"] == "passed"
    assert steps["targets"]["artifact"].endswith("model.onnx")
    assert steps["targets"]["result"]["targets"][0]["target"] == "cpu"
    reports = r.json["reports"]
    md = Path(reports["markdown"]).read_text()
    assert "| target | available | runs | ops it cannot run | max diff | precision | latency ms | verdict |" in md
    assert "| cpu | yes | yes | - |" in md
    html = Path(reports["html"]).read_text()
    assert "<h2>Targets</h2>" in html and "<td>cpu</td>" in html
    cases = {tc.get("name"): tc for tc in ET.parse(reports["junit"]).getroot().iter("testcase")}
    assert "target: cpu" in cases and cases["target: cpu"].find("failure") is None


def test_unknown_target_is_exit_2_before_any_stage(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu", "webgpu"]'))
    assert r.code == 2, r
    assert "p.toml:10: unknown target 'webgpu' in targets.require (did you mean 'web'?)" in r.stderr
    _no_run_happened(tmp_path)


def test_unknown_key_and_bad_values_are_exit_2(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu"]\nallow_unavalable = true'))
    assert r.code == 2 and "p.toml:11: unknown key 'targets.allow_unavalable' (did you mean 'allow_unavailable'?)" in r.stderr
    r = run_cli("pipeline", _config(tmp_path, 'require = "cpu"'))
    assert r.code == 2 and "targets.require must be a list of strings" in r.stderr
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu"]\nprecision = "f8"'))
    assert r.code == 2 and "targets.precision = 'f8' is not one of f32, bf16, f16" in r.stderr
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu"]\ndata = "nowhere.npz"'))
    assert r.code == 2 and "targets.data:" in r.stderr and "nowhere.npz does not exist" in r.stderr
    # Settings without a target to apply them to are a mistake, not a no-op.
    r = run_cli("pipeline", _config(tmp_path, 'tol = ["1e-3"]'))
    assert r.code == 2 and "targets.tol is set but targets.require is empty" in r.stderr
    _no_run_happened(tmp_path)


def test_data_that_does_not_parse_is_exit_2_before_any_stage(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu"]\ndata = "bad.npz"'))
    assert r.code == 2, r
    assert "targets.data:" in r.stderr
    _no_run_happened(tmp_path)


def _gpu_absent() -> bool:
    from onnxkit.runtime.targets_ort import availability

    return availability("cuda") is not None


@pytest.mark.skipif(not _gpu_absent(), reason="needs a machine without CUDA")
def test_unavailable_target_is_exit_3_before_any_stage(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu", "cuda"]'))
    assert r.code == 3, r
    assert "[targets] require names a target not available here: cuda:" in r.stderr
    assert "allow_unavailable = true" in r.stderr
    _no_run_happened(tmp_path)


@pytest.mark.skipif(not _gpu_absent(), reason="needs a machine without CUDA")
def test_allow_unavailable_reports_skipped_not_passed(tmp_path):
    r = run_cli("pipeline", _config(tmp_path, 'require = ["cpu", "cuda"]\nallow_unavailable = true'), "--json")
    assert r.code == 0, r
    step = next(s for s in r.json["steps"] if s["name"] == "targets")
    assert step["status"] == "passed"
    assert "1 target(s) agree: cpu; skipped (unavailable here): cuda" == step["reason"]
    cuda = next(t for t in step["result"]["targets"] if t["target"] == "cuda")
    assert cuda["status"] == "skipped" and cuda["reason"].startswith("not available here:")
    md = Path(r.json["reports"]["markdown"]).read_text()
    assert "| cuda | no | - | - | - | - | - | skipped |" in md
    junit = ET.parse(r.json["reports"]["junit"]).getroot()
    case = next(tc for tc in junit.iter("testcase") if tc.get("name") == "target: cuda")
    assert case.find("skipped") is not None and case.find("failure") is None


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_a_disagreeing_target_fails_the_pipeline_with_exit_1(tmp_path):
    """OpenVINO forced to bfloat16 and held to 1e-7: it runs, and answers outside tolerance."""
    r = run_cli("pipeline", _config(tmp_path, 'require = ["openvino"]\nprecision = "bf16"\ntol = ["1e-7"]\nrtol = 0.0'),
                "--json")
    assert r.code == 1, r
    step = next(s for s in r.json["steps"] if s["name"] == "targets")
    assert step["status"] == "failed"
    assert step["reason"].startswith("openvino disagrees: output y: max |diff|")
    assert any(f.startswith("step targets: failed (openvino disagrees") for f in r.json["failures"])
    junit = ET.parse(r.json["reports"]["junit"]).getroot()
    failed = {tc.get("name") for tc in junit.iter("testcase") if tc.find("failure") is not None}
    assert failed == {"step: targets", "target: openvino"}
    html = Path(r.json["reports"]["html"]).read_text()
    assert "openvino" in html and "disagrees" in html


def test_init_writes_a_commented_targets_example_that_parses(tmp_path):
    from onnxkit.operations.config import load_config

    src = make_linear_onnx(tmp_path / "lin.onnx")
    cfg = tmp_path / "onnxkit.toml"
    r = run_cli("init", src, "-o", cfg)
    assert r.code == 0, r
    text = cfg.read_text()
    assert "\n[targets]\n" in text and '# require = ["cpu", "openvino", "web"]' in text
    assert load_config(cfg)["targets"]["require"] == []  # commented out: no check until the user asks
    # Uncommenting the example gives a config that loads.
    cfg.write_text(text.replace('# require = ["cpu", "openvino", "web"]', 'require = ["cpu", "openvino", "web"]')
                   .replace('# precision = "f32"', 'precision = "f32"'))
    loaded = load_config(cfg)["targets"]
    assert loaded["require"] == ["cpu", "openvino", "web"] and loaded["precision"] == "f32"
    assert json.loads(json.dumps(loaded["require"])) == ["cpu", "openvino", "web"]
