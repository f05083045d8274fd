"""No output may land on a file the command reads: a model's external data, --data,
--calib-data, --sample, a factory's .py, --weights, or another output. Each refusal is exit 2
before any work, and every file in the folder is left byte for byte as it was."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot


def _ext_model(folder: Path, name: str = "ext.onnx", location: str = "ext.onnx.data") -> Path:
    import onnx

    src = make_linear_onnx(folder / "plain_src.onnx")
    model = onnx.load(str(src))
    src.unlink()
    onnx.save_model(model, str(folder / name), save_as_external_data=True, location=location, size_threshold=0)
    return folder / name


FACTORY = textwrap.dedent(
    """\
    import torch


    def build():
        return torch.nn.Linear(4, 3)
    """,
)


@pytest.fixture
def proj(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    make_linear_onnx(tmp_path / "m.onnx")
    _ext_model(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    (tmp_path / "f.py").write_text(FACTORY)
    (tmp_path / "w.pt").write_bytes(b"not really weights; refused before they are read")
    (tmp_path / "s.csv").write_text("a,b,c,d\n1,2,3,4\n")
    return tmp_path


def _refused(folder: Path, args: list[str], *needles: str) -> None:
    before = snapshot(folder)
    r = run_cli(*args)
    assert_one_line_error(r, 2, *needles)
    assert snapshot(folder) == before  # inputs unchanged by hash, no output, no temporary file


@pytest.mark.parametrize("args", [
    ["optimize", "ext.onnx", "-o", "ext.onnx.data"],
    ["quantize", "ext.onnx", "-o", "ext.onnx.data", "--mode", "dynamic"],
])
def test_model_external_data_is_an_input(proj, args):
    _refused(proj, args, "output ext.onnx.data would overwrite the input ext.onnx.data")


@pytest.mark.parametrize("args", [
    ["optimize", "m.onnx", "-o", "x.npy"],
    ["quantize", "m.onnx", "-o", "x.npy", "--mode", "dynamic"],
    ["export", "f.py:build", "--random-weights", "--trust", "--input", "x:[1,4]:float32", "-o", "x.npy"],
])
def test_onnx_output_must_end_in_onnx(proj, args):
    _refused(proj, args, "x.npy", "ending in .onnx")


def test_sidecar_of_the_output_is_a_write(proj):
    # save_onnx writes <out>.data for a large model: it must not be an input either.
    (proj / "o.onnx.data").write_bytes((proj / "m.onnx").read_bytes())
    _refused(proj, ["optimize", "o.onnx.data", "-o", "o.onnx"], "would overwrite the input")


@pytest.mark.parametrize("flag", ["--junit", "--report", "--save-outputs"])
def test_validate_report_on_data(proj, flag):
    _refused(proj, ["validate", "m.onnx", "m.onnx", "--data", "x.npy", flag, "x.npy"], "x.npy", "would overwrite the input")


def test_validate_two_outputs_on_one_path(proj):
    _refused(proj, ["validate", "m.onnx", "m.onnx", "--junit", "j.xml", "--report", "j.xml"], "two outputs on one path")


def test_validate_report_on_external_data(proj):
    _refused(proj, ["validate", "ext.onnx", "ext.onnx", "--junit", "ext.onnx.data"], "ext.onnx.data")


@pytest.mark.parametrize("args", [
    ["quantize", "m.onnx", "-o", "c.onnx", "--mode", "static", "--calib-data", "c.onnx"],
    ["optimize", "m.onnx", "-o", "c.onnx", "--auto", "--data", "c.onnx"],
    ["export", "f.py:build", "--random-weights", "--trust", "--input", "x:[1,4]:float32", "-o", "c.onnx", "--data", "c.onnx"],
    ["export", "m.onnx", "-o", "c.onnx", "--sample", "c.onnx"],
])
def test_data_files_are_inputs(proj, args):
    # The data file is named like a model so that only the input rule, not the suffix rule, can refuse.
    np.save(proj / "c.npy", np.zeros((4, 4), np.float32))
    (proj / "c.npy").rename(proj / "c.onnx")
    _refused(proj, args, "c.onnx", "would overwrite the input")


def test_export_onto_factory_source(proj):
    _refused(proj, ["export", "f.py:build", "--random-weights", "--trust", "--input", "x:[1,4]:float32", "-o", "f.py"],
             "output f.py would overwrite the input f.py")


def test_export_onto_weights(proj):
    _refused(proj, ["export", "f.py:build", "--weights", "w.pt", "--trust", "--input", "x:[1,4]:float32", "-o", "w.pt"],
             "output w.pt would overwrite the input w.pt")


def test_export_onto_sample_and_data(proj):
    _refused(proj, ["export", "m.onnx", "-o", "s.csv", "--sample", "s.csv"], "output s.csv would overwrite the input s.csv")
    _refused(proj, ["export", "m.onnx", "-o", "x.npy", "--data", "x.npy"], "output x.npy would overwrite the input x.npy")


@pytest.mark.parametrize("out", ["w.pt", "f.py"])
def test_init_onto_factory_or_weights(proj, out):
    _refused(proj, ["init", "f.py:build", "--weights", "w.pt", "--trust", "--input", "x:[1,4]:float32", "-o", out, "--force"],
             out, "would overwrite the input")


def test_pipeline_artifact_on_source_external_data(proj):
    _ext_model(proj, "src.onnx", "out.onnx")
    (proj / "p.toml").write_text(textwrap.dedent("""\
        [source]
        path = "src.onnx"

        [output]
        dir = "."
        name = "out"
        """))
    _refused(proj, ["pipeline", "p.toml", "--report-dir", "rep"], "out.onnx", "external data")


def test_distinct_paths_still_work(proj):
    r = run_cli("optimize", "ext.onnx", "-o", "ext_opt.onnx")
    assert r.code == 0, r
    r = run_cli("validate", "m.onnx", "m.onnx", "--data", "x.npy", "--junit", "j.xml", "--report", "r.md")
    assert r.code == 0, r


def test_bench_outputs(proj):
    assert run_cli("bench", "m.onnx", "--iterations", "2", "--warmup", "0", "--save-baseline", "b.json").code == 0
    _refused(proj, ["bench", "m.onnx", "--baseline", "b.json", "--save-baseline", "b.json"], "output b.json would overwrite the input b.json")
    _refused(proj, ["bench", "ext.onnx", "--save-baseline", "ext.onnx.data"], "would overwrite the input ext.onnx.data")


def test_large_model_is_scanned_not_parsed(proj, monkeypatch):
    # Past the parse limit the model file is searched for the output's name instead.
    monkeypatch.setattr("onnxkit.foundation.files.PARSE_FOR_LOCATIONS_MAX", 0)
    monkeypatch.setattr("onnx.load_model", lambda *a, **k: pytest.fail("parsed a model over the limit"))
    _refused(proj, ["optimize", "ext.onnx", "-o", "ext.onnx.data"], "would overwrite the input ext.onnx.data")
