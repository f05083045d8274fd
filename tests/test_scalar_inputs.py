"""Rank-0 (scalar) inputs and inputs declared without a shape run like any other: the
batched inputs count the rows, a scalar is fed whole to every batch (issue: IndexError in
feeds_rows, exit 70). A 0-d .npy for a batched input is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxkit.foundation.data import feeds_rows


def _save(graph, path: Path) -> Path:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _identity(path: Path, shape) -> Path:
    return _save(helper.make_graph(
        [helper.make_node("Identity", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]), path)


def _mul_by_scalar(path: Path) -> Path:
    """y[n,2] = X[n,2] * s[]"""
    return _save(helper.make_graph(
        [helper.make_node("Mul", ["X", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 2]), helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])]), path)


def test_feeds_rows_counts_batched_inputs_not_scalars():
    assert feeds_rows({"s": np.float32(2), "X": np.ones((5, 2), np.float32)}) == 5
    assert feeds_rows({"s": np.float32(2)}) == 1
    assert feeds_rows({}) == 0


@pytest.mark.parametrize("shape", [[], None], ids=["rank0", "no-shape"])
def test_validate_and_run_a_model_with_a_scalar_input(cli, tmp_path, shape):
    m = _identity(tmp_path / "id.onnx", shape)
    r = cli("validate", m, m, "--json")
    assert r.code == 0, r
    assert r.json["samples"] >= 1
    assert cli("run", m).code == 0


def test_a_scalar_beside_a_batch_in_npz_data_is_fed_to_every_batch(cli, tmp_path):
    m = _mul_by_scalar(tmp_path / "mul.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, X=np.arange(10, dtype=np.float32).reshape(5, 2), s=np.float32(3))
    out = tmp_path / "out.npz"
    r = cli("run", m, "--data", data, "--batch-size", "2", "-o", out)
    assert r.code == 0, r
    with np.load(out) as z:
        np.testing.assert_array_equal(z["y"], np.arange(10, dtype=np.float32).reshape(5, 2) * 3)
    assert cli("validate", m, m, "--data", data).code == 0
    q = cli("quantize", m, "-o", tmp_path / "h.onnx", "--mode", "fp16", "--data", data)
    assert q.code == 0, q


def test_a_0d_npy_runs_a_scalar_model_and_is_refused_for_a_batched_one(cli, tmp_path):
    scalar = tmp_path / "s.npy"
    np.save(scalar, np.float32(3))
    assert cli("run", _identity(tmp_path / "id.onnx", []), "--data", scalar).code == 0
    relu = _save(helper.make_graph(
        [helper.make_node("Relu", ["X"], ["y"])], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])]), tmp_path / "relu.onnx")
    before = sorted(p.name for p in tmp_path.iterdir())
    for cmd in (["run", relu, "--data", scalar, "-o", tmp_path / "o.npz"], ["validate", relu, relu, "--data", scalar]):
        r = cli(*cmd)
        assert r.code == 2, r
        assert r.stderr.strip() == "Error: s.npy holds a scalar; expected a batch of inputs", r
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert np.load(scalar) == np.float32(3)


def test_a_scalar_listed_first_does_not_count_the_rows(cli, tmp_path):
    """Inputs [s[], X[n,2]]: every operation that counted rows from the first input broke."""
    m = _save(helper.make_graph(
        [helper.make_node("Mul", ["s", "X"], ["y"])], "g",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, []), helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])]), tmp_path / "smul.onnx")
    assert cli("validate", m, m).code == 0
    assert cli("optimize", m, "-o", tmp_path / "o.onnx").code == 0
    r = cli("quantize", m, "-o", tmp_path / "h.onnx", "--mode", "fp16")
    assert r.code == 0, r


def test_a_sequence_input_is_refused_as_not_supported(cli, tmp_path):
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, ["n", 2])
    m = _save(helper.make_graph(
        [helper.make_node("ConcatFromSequence", ["xs"], ["y"], axis=0)], "g", [seq],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 2])]), tmp_path / "seq.onnx")
    before = m.read_bytes()
    for cmd in (["validate", m, m], ["run", m, "-o", tmp_path / "o.npz"], ["optimize", m, "-o", tmp_path / "o.onnx"]):
        r = cli(*cmd)
        assert r.code == 2, r
        assert r.stderr.strip() == "Error: input 'xs' is of type seq(tensor(float)): not supported (onnxkit feeds tensor inputs only)", r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.onnx"] and m.read_bytes() == before
    assert cli("inspect", m).code == 0  # describing it needs no feeding
