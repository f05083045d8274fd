"""Refusals that name what the user gave and what the model takes, and silent misreadings
(a CSV without a header, empty fields, ignored options) that are now said or refused."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import make_linear_onnx, run_cli
from tests.robustness.conftest import assert_one_line_error, snapshot


def _unbatched(path):
    # x:[6] -> y:[2], no batch dimension (as torch.onnx.export writes for a 1-D example input).
    w = helper.make_tensor("w", TensorProto.FLOAT, [6, 2], np.ones(12, np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "nb",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_rows_for_a_model_without_batch_dimension(tmp_path, suffix):
    model = _unbatched(tmp_path / "nb.onnx")
    x = np.zeros((10, 6), np.float32)
    data = tmp_path / f"x{suffix}"
    np.save(data, x) if suffix == ".npy" else np.savez(data, x=x)
    before = snapshot(tmp_path)
    r = run_cli("run", model, "--data", data)
    assert_one_line_error(r, 2, "float32[10, 6] (10 rows of [6])", "x: float32[6]", "no batch dimension")
    assert "[6,6]" not in r.stderr
    assert snapshot(tmp_path) == before


def test_negative_dimension_in_input_spec(tmp_path):
    model = make_linear_onnx(tmp_path / "m.onnx")
    r = run_cli("run", model, "--input", "x:[-1,4]:float32")
    assert_one_line_error(r, 2, "negative dimension -1", "?")


def test_provider_option_for_cpu_is_refused(tmp_path):
    model = make_linear_onnx(tmp_path / "m.onnx")
    before = snapshot(tmp_path)
    r = run_cli("run", model, "--provider-option", "foo=bar", "-o", tmp_path / "y.npz")
    assert_one_line_error(r, 2, "'foo'", "CPUExecutionProvider takes no provider options")
    assert snapshot(tmp_path) == before


def test_unknown_cuda_key_is_warned(caplog):
    from onnxkit.runtime.providers import CUDA, parse_provider_options

    assert parse_provider_options(["gpu_mem_limt=1"], [CUDA, "CPUExecutionProvider"]) == {CUDA: {"gpu_mem_limt": "1"}}
    assert "gpu_mem_limt" in caplog.text and "gpu_mem_limit" in caplog.text
    caplog.clear()
    parse_provider_options(["gpu_mem_limit=1"], [CUDA])
    assert "may ignore" not in caplog.text


def test_csv_without_header_is_refused(tmp_path):
    model = make_linear_onnx(tmp_path / "m.onnx")
    (tmp_path / "d.csv").write_text("1,2,3,4\n5,6,7,8\n")
    before = snapshot(tmp_path)
    r = run_cli("run", model, "--data", tmp_path / "d.csv")
    assert_one_line_error(r, 2, "line 1 (1, 2, 3, 4) is all numbers", "header")
    assert snapshot(tmp_path) == before


def test_csv_with_pandas_default_header_is_read(tmp_path):
    model = make_linear_onnx(tmp_path / "m.onnx")
    (tmp_path / "d.csv").write_text("0,1,2,3\n5,6,7,8\n")
    r = run_cli("run", model, "--data", tmp_path / "d.csv", "--json")
    assert r.code == 0, r
    assert r.json["rows"] == 1


def test_csv_holes_and_overflow_are_counted(tmp_path):
    model = make_linear_onnx(tmp_path / "m.onnx")
    (tmp_path / "d.csv").write_text("a,b,c,d\n1,,3,4\n1e999,2,3,4\n,,1,1\n")
    r = run_cli("run", model, "--data", tmp_path / "d.csv", "--json")
    assert r.code == 0, r
    assert any("3 empty or NaN field(s)" in n and "1 value(s) beyond the float range" in n for n in r.json["notes"]), r.json


def test_csv_holes_for_an_integer_input_are_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["y"])], "ints",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "i.onnx"))
    (tmp_path / "d.csv").write_text("a,b\n1,\n3,4\n")
    r = run_cli("run", tmp_path / "i.onnx", "--data", tmp_path / "d.csv")
    assert_one_line_error(r, 2, "missing values for integer input 'ids'")


def test_output_name_that_is_an_input_name(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "f.py").write_text(textwrap.dedent("""\
        import torch


        class Two(torch.nn.Module):
            def forward(self, x):
                return x + 1, x * 2


        def build():
            return Two()
        """))
    before = snapshot(tmp_path)
    r = run_cli("export", f"{tmp_path / 'f.py'}:build", "--random-weights", "--trust", "--input", "x:[2,3]:float32",
                "--output-names", "x,b", "-o", tmp_path / "o.onnx")
    assert_one_line_error(r, 2, "--output-names x", "not an input's")
    assert snapshot(tmp_path) == before


def test_one_sample_counts_as_one_row(tmp_path):
    model = _unbatched(tmp_path / "nb.onnx")
    np.save(tmp_path / "x6.npy", np.zeros(6, np.float32))
    r = run_cli("run", model, "--data", tmp_path / "x6.npy", "--json")
    assert r.code == 0, r
    assert (r.json["rows"], r.json["batches"], r.json["batch_size"]) == (1, 1, 1)
