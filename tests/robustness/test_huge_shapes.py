"""Random inputs whose size is absurd are refused before they are allocated (exit 2, one
line naming the input and the size), never a MemoryError traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxkit.foundation import data as data_mod
from onnxkit.foundation.spec import parse_spec
from onnxkit.errors import InputError
from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, save_raw, snapshot


def _relu_model(path, dims):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return save_raw(m, path)


@pytest.fixture
def folder(tmp_path):
    make_linear_onnx(tmp_path / "m.onnx")
    _relu_model(tmp_path / "rows.onnx", [2**62, 4])
    return tmp_path


def _check(r, folder, before, *needles, why="would take"):
    assert_one_line_error(r, 2, *needles)
    doc = json.loads(r.stdout)  # exactly one JSON document
    assert doc["exit_code"] == 2 and why in doc["error"]
    assert snapshot(folder) == before


def test_huge_input_spec_refused(folder):
    before = snapshot(folder)
    r = run_cli("run", folder / "m.onnx", "--input", "x:[1000000000000,4]:float32", "--output", folder / "o.npz", "--json")
    _check(r, folder, before, "random input x:[1000000000000,4]:float32", "TB")
    assert not (folder / "o.npz").exists()


@pytest.mark.parametrize("argv", [
    ["run", "{m}"], ["bench", "{m}"], ["validate", "{m}", "{m}"],
])
def test_model_input_of_2_62_rows_refused(folder, argv):
    before = snapshot(folder)
    r = run_cli(*[a.format(m=folder / "rows.onnx") for a in argv], "--json")
    # Refused when the model is loaded (its declared shape is absurd) or, failing that, before
    # its random inputs are allocated: either way one line naming the input and its size.
    at_load = "absurd shape" in r.stderr
    _check(r, folder, before, "'x'" if at_load else "random input x", str(2**62), why="absurd shape" if at_load else "would take")


def test_huge_batch_size_refused(folder):
    before = snapshot(folder)
    r = run_cli("validate", folder / "m.onnx", folder / "m.onnx", "--batch-sizes", "1000000000000", "--json")
    _check(r, folder, before, "random input x:[1000000000000,4]", "more than a quarter")


def test_budget_counts_all_inputs_together(monkeypatch):
    """Two inputs each under the budget but over it together are refused, naming the second."""
    monkeypatch.setattr(data_mod, "memory_bytes", lambda: 4 * 1000)
    specs = [parse_spec("a:[100,2]:float32"), parse_spec("b:[100,2]:float32")]  # 800 B each, budget 1000 B
    with pytest.raises(InputError, match=r"random input b:\[100,2\]:float32 .*with the inputs before it"):
        data_mod.random_feeds(specs, batch=100)
    feeds = data_mod.random_feeds(specs[:1], batch=100)  # one alone fits
    assert feeds["a"].shape == (100, 2) and feeds["a"].dtype == np.float32
    with pytest.raises(InputError, match="random input a"):
        data_mod.edge_case_feeds([parse_spec("a:[batch,300]:float32")], batch=1, seq=1, with_nan=False)
