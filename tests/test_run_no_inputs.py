"""`run` on a model that takes no inputs, and how it counts batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def no_input_onnx(tmp_path_factory) -> Path:
    """A model whose output comes from a constant: nothing to feed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    value = numpy_helper.from_array(np.arange(-3, 3, dtype=np.float32).reshape(2, 3), "v")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Relu", ["c"], ["y"])],
        "no_inputs", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path_factory.mktemp("noin") / "constant.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("trust", [False, True])
def test_a_model_without_inputs_runs_once_and_writes_its_outputs(cli, no_input_onnx, tmp_path, trust):
    out = tmp_path / "out.npz"
    r = cli("run", no_input_onnx, "-o", out, *(["--trust"] if trust else []))
    assert r.code == 0, r
    assert "none (the model takes no inputs)" in r.stdout
    got = np.load(out)
    np.testing.assert_array_equal(got["y"], [[0, 0, 0], [0, 1, 2]])


def test_data_for_a_model_without_inputs_is_refused(cli, no_input_onnx, tmp_path):
    data = tmp_path / "in.npz"
    np.savez(data, x=np.zeros((2, 3), np.float32))
    out = tmp_path / "out.npz"
    r = cli("run", no_input_onnx, "--data", data, "-o", out)
    assert r.code == 2
    assert r.stderr == "Error: constant.onnx takes no inputs; run it without --data\n"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.npz"]


def test_batches_are_counted_in_words(cli, linear_onnx, tmp_path):
    data = tmp_path / "in.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32))
    r = cli("run", linear_onnx, "--data", data, "--batch-size", "32", "--trust")
    assert r.code == 0, r
    assert "4 batches of 32 rows (the last one shorter)" in r.stdout
    assert "4 of 32" not in r.stdout
    r = cli("run", linear_onnx, "--data", data, "--batch-size", "25", "--trust", "-q")
    assert r.stdout.startswith("PASSED run: 100 rows in 4 batches of 25 rows, ")
