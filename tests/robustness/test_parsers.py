"""Inputs the parsers underneath misread or choke on: CSV rows wider or narrower than the
header, one multi-megabyte line, non-UTF-8 bytes in CSV data and in XGBoost's error text;
and NumPy data one dtype width off, which is cast when every value is kept."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot


@pytest.fixture
def folder(tmp_path):
    make_linear_onnx(tmp_path / "m.onnx")
    return tmp_path


def _refused_run(folder, data_name, code, *needles):
    before = snapshot(folder)
    out = folder / "out.npz"
    r = run_cli("run", folder / "m.onnx", "--data", folder / data_name, "--output", out, "--json")
    assert_one_line_error(r, code, *needles)
    assert json.loads(r.stdout)["exit_code"] == code
    assert not out.exists() and snapshot(folder) == before
    return r


def test_row_wider_than_header_is_refused_naming_the_line(folder):
    # pandas read this as a 4-column frame indexed by the first field: silently wrong inputs.
    (folder / "d.csv").write_text("a,b,c,d\n1,2,3,4\n9,1,2,3,4\n")
    _refused_run(folder, "d.csv", 2, "d.csv: line 3 has 5 fields, more than the 4 columns of the header")


def test_first_row_wider_than_header_is_refused(folder):
    (folder / "d.csv").write_text("a,b,c,d\n9,1,2,3,4\n5,6,7,8,9\n")
    _refused_run(folder, "d.csv", 2, "line 2 has 5 fields")


def test_short_row_is_refused_not_padded_with_nan(folder):
    (folder / "d.csv").write_text('a,b,c,d\n1,2,3,4\n\n"5",6,"7\n",8\n1,2,3\n')  # a blank line and a quoted newline are fine
    _refused_run(folder, "d.csv", 2, "line 6 has 3 fields, fewer than the 4 columns")


def test_well_formed_csv_still_runs(folder):
    (folder / "d.csv").write_text('a,b,c,d\n1,2,3,4\n\n"5",6,7,8\n')
    r = run_cli("run", folder / "m.onnx", "--data", folder / "d.csv", "--json")
    assert r.code == 0, r
    assert r.json["rows"] == 2


def test_six_megabyte_line_costs_a_second_not_minutes(folder):
    # Before: pandas built a 3-million-level index from this line for over 150 s.
    (folder / "d.csv").write_text("a,b,c,d\n" + "1," * 3_000_000 + "1,2,3,4\n")
    t0 = time.perf_counter()
    _refused_run(folder, "d.csv", 2, "line 2 has 3000004 fields")
    assert time.perf_counter() - t0 < 15


def test_huge_field_and_huge_header_are_bounded(folder):
    (folder / "f.csv").write_text("a,b,c,d\n" + "1" * 6_000_000 + ",2,3,4\n")
    _refused_run(folder, "f.csv", 2, "line 2", "a field longer than 128 KiB")
    (folder / "h.csv").write_text(",".join(f"c{i}" for i in range(200_001)) + "\n" + "1\n")
    t0 = time.perf_counter()
    _refused_run(folder, "h.csv", 2, "the header (line 1) has 200001 columns")
    assert time.perf_counter() - t0 < 15


def test_csv_that_is_not_utf8(folder):
    (folder / "d.csv").write_bytes(b"a,b,c,d\n1,2,3,\xff\n")
    _refused_run(folder, "d.csv", 2, "d.csv is not UTF-8 text (invalid byte 0xff)")


# ------------------------------------------------------------------ NumPy dtypes


def test_float64_data_for_a_float32_input_is_cast_with_a_note(folder):
    x = np.random.default_rng(0).standard_normal((5, 4))
    np.savez(folder / "d.npz", x=x)
    r = run_cli("run", folder / "m.onnx", "--data", folder / "d.npz", "--output", folder / "o.npz")
    assert r.code == 0, r
    assert "float64 data cast to float32 for input 'x'" in r.stderr
    with np.load(folder / "o.npz") as out:
        ref = np.maximum(x.astype(np.float32) @ _weights(folder)[0].T + _weights(folder)[1], 0)
        np.testing.assert_allclose(out["y"], ref, rtol=1e-5, atol=1e-6)


def _weights(folder):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(folder / "m.onnx"))
    t = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return t["w"], t["b"]


def test_casts_that_change_values_are_refused():
    from onnxkit.foundation.casts import fit_dtype
    from onnxkit.errors import InputError

    i64 = np.dtype(np.int64)
    out, note = fit_dtype(np.array([[1.0, 2.0]]), i64, name="ids", where="d.npz")
    assert out.dtype == i64 and note and "every value kept" in note
    out, note = fit_dtype(np.array([1, 2], np.int32), i64, name="ids", where="d.npz")
    assert out.dtype == i64 and note
    for arr, target, needle in [
        (np.array([1.5]), i64, "non-integer values"),
        (np.array([np.nan]), i64, "NaN or Inf"),
        (np.array([1e300]), np.dtype(np.float32), "outside its range"),
        (np.array([2**40]), np.dtype(np.int32), "outside its range"),
        (np.array([2**24 + 1]), np.dtype(np.float32), "cannot hold every integer"),
        (np.array([True]), np.dtype(np.float32), "booleans and numbers"),
    ]:
        with pytest.raises(InputError, match=needle) as exc:
            fit_dtype(arr, target, name="ids", where="d.npz")
        assert "'ids'" in str(exc.value)


def test_fractional_data_for_an_int64_input_is_a_usage_error(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)], "g",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    (tmp_path / "ids.onnx").write_bytes(m.SerializeToString())
    np.savez(tmp_path / "d.npz", ids=np.array([[1.5, 2.0]]))
    r = run_cli("run", tmp_path / "ids.onnx", "--data", tmp_path / "d.npz")
    assert_one_line_error(r, 2, "input 'ids' is int64", "non-integer values")
    np.savez(tmp_path / "ok.npz", ids=np.array([[1.0, 2.0]]))
    r = run_cli("run", tmp_path / "ids.onnx", "--data", tmp_path / "ok.npz", "--json")
    assert r.code == 0, r


# ------------------------------------------------------------------ XGBoost error text


def test_xgboost_error_with_non_utf8_bytes_is_one_line(tmp_path):
    pytest.importorskip("xgboost")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\xfa\xfb{ not a booster")
    before = snapshot(tmp_path)
    r = run_cli("export", bad, "-o", tmp_path / "o.onnx", "--framework", "xgboost", "--json")
    assert_one_line_error(r, 2, "cannot load bad.json as an XGBoost model")
    assert json.loads(r.stdout)["exit_code"] == 2
    assert snapshot(tmp_path) == before
