"""A model that lies about itself is not called valid.

An input declared with 2^62 rows, or an external-data entry whose ``length`` disagrees
with the tensor's size, passes ``onnx.checker``. ``inspect`` must say what is wrong
(exit 1, still describing the rest), and the commands that would feed or load the model
must refuse it (exit 2) before anything is allocated or written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from .conftest import assert_one_line_error, linear_model, run_cli, save_raw, snapshot


def _huge_input(folder: Path, rows: int = 2**62) -> Path:
    model = linear_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = rows
    return save_raw(model, folder / "model.onnx")


def _wrong_length(folder: Path, extra: int) -> Path:
    model = linear_model()
    w = model.graph.initializer[0]
    raw = numpy_helper.to_array(w).tobytes()
    (folder / "w.bin").write_bytes(raw + b"\0" * 64)  # long enough for either length: only the size lies
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", "0"), ("length", str(len(raw) + extra))):
        e = w.external_data.add()
        e.key, e.value = k, v
    return save_raw(model, folder / "model.onnx")


CASES = {
    "input-2^62-rows": (_huge_input, "input 'x' is declared with an absurd shape [4611686018427387904, 4]"),
    "length-too-long": (lambda d: _wrong_length(d, 16), "declares length 64 bytes, but its shape [3, 4] and type need 48"),
    "length-too-short": (lambda d: _wrong_length(d, -8), "declares length 40 bytes, but its shape [3, 4] and type need 48"),
}


@pytest.fixture
def case_dir(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    return d


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("extra", [[], ["--no-check"]])
def test_inspect_reports_the_lie(case, extra, case_dir):
    build, needle = CASES[case]
    model = build(case_dir)
    before = snapshot(case_dir)
    r = run_cli("inspect", model, *extra)
    assert r.code == 1, r
    assert "Traceback" not in r.stdout + r.stderr
    assert needle in r.stdout + r.stderr
    j = run_cli("inspect", model, "--json", *extra)
    assert j.code == 1 and j.json["passed"] is False, j
    assert any(needle in n for n in j.json["notes"]), j.json["notes"]
    assert j.json["inputs"][0]["name"] == "x"  # the rest of the model is still described
    assert snapshot(case_dir) == before


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_validate_optimize_refuse_the_lie(case, case_dir, tmp_path):
    build, needle = CASES[case]
    model = build(case_dir)
    before = snapshot(case_dir)
    out = tmp_path / "out"
    out.mkdir()
    for args in (["run", model, "-o", out / "y.npz"], ["validate", model, model], ["optimize", model, "-o", out / "m.onnx"]):
        r = run_cli(*args)
        assert_one_line_error(r, 2, needle, "corrupt or hostile")
        assert list(out.iterdir()) == [], args
    assert snapshot(case_dir) == before


def test_large_but_plausible_input_is_not_a_lie(case_dir):
    """No false alarm: a fixed batch of a million rows is unusual, not absurd."""
    model = _huge_input(case_dir, rows=1_000_000)
    r = run_cli("inspect", model, "--json")
    assert r.code == 0 and r.json["passed"] is True, r


def test_correct_length_passes(case_dir):
    model = _wrong_length(case_dir, 0)
    r = run_cli("run", model, "--input", "x:[2,4]:float32", "--json")
    assert r.code == 0, r
    r = run_cli("inspect", model, "--json")
    assert r.code == 0 and r.json["external_data"] == ["w.bin"], r
    assert np.isfinite(r.json["parameter_count"])
