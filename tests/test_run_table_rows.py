"""run -o TABLE writes one row per input row: outputs that are not per row, or whose columns
collide, are refused instead of writing other numbers under a row."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper


def _save(tmp_path, name, nodes, outputs, inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])]
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def test_an_output_that_is_not_per_row_is_refused_for_tables_and_batched_npz(cli, tmp_path):
    model = _save(tmp_path, "transpose", [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "n"])])
    data = tmp_path / "x.npy"
    np.save(data, np.arange(8, dtype=np.float32).reshape(4, 2))
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in ("y.parquet", "y.csv"):
        r = cli("run", model, "--data", data, "-o", tmp_path / out)
        assert r.code == 2 and "output 'y' has a fixed first dimension of 2" in r.stderr, r
    # the same model with its output shape left undeclared: caught on the rows it returns
    bare = onnx.load(model)
    bare.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(bare, model)
    r = cli("run", model, "--data", data, "-o", tmp_path / "y.csv")
    assert r.code == 2 and "output 'y' has 2 rows for a batch of 4 input rows" in r.stderr, r
    r = cli("run", model, "--data", data, "--batch-size", "3", "-o", tmp_path / "y.npz")
    assert r.code == 2 and "not one row per input row" in r.stderr, r
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # one batch to .npz keeps the array as the model gave it
    r = cli("run", model, "--data", data, "-o", tmp_path / "one.npz")
    assert r.code == 0, r
    assert np.load(tmp_path / "one.npz")["y"].shape == (2, 4)


def test_outputs_whose_table_columns_collide_are_refused(cli, tmp_path):
    model = _save(tmp_path, "collide", [
        helper.make_node("Identity", ["x"], ["y"]),
        helper.make_node("ReduceSum", ["x"], ["y_0"], keepdims=0, axes=None),
    ], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2]),
        helper.make_tensor_value_info("y_0", TensorProto.FLOAT, [])])
    # y_0 per row instead: a ReduceSum over axis 1
    model_pb = onnx.load(model)
    model_pb.graph.node[1].CopyFrom(helper.make_node("ReduceSum", ["x", "axes"], ["y_0"], keepdims=0))
    model_pb.graph.initializer.append(helper.make_tensor("axes", TensorProto.INT64, [1], [1]))
    del model_pb.graph.output[1]
    model_pb.graph.output.append(helper.make_tensor_value_info("y_0", TensorProto.FLOAT, ["n"]))
    onnx.save(model_pb, model)
    data = tmp_path / "x.npy"
    np.save(data, np.ones((3, 2), dtype=np.float32))
    r = cli("run", model, "--data", data, "-o", tmp_path / "o.parquet")
    assert r.code == 2 and "two outputs map to the table column 'y_0'" in r.stderr, r
    assert not (tmp_path / "o.parquet").exists()
