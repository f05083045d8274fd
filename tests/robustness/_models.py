"""Hostile and unusual ONNX models, built in code, for the containment tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxkit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def make_loop_onnx(path: Path, *, scale: int = 1, weighted: bool = False) -> Path:
    """y[0] = scale * max(|n|): a Loop that counts to the largest value of its input ``n[batch]``
    (int64), times ``scale``. A row holding 10**15 makes it run for days: a hang chosen by
    the data (with scale 10**12, any input but zeros hangs). ``weighted``: the count then goes
    through a MatMul with constant weights (y is [1, 4]), so quantize has work to do and
    must run the model."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "count",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Abs", ["n"], ["a"]),
         helper.make_node("ReduceMax", ["a"], ["m1"], keepdims=0),
         helper.make_node("Mul", ["m1", "scale"], ["m"]),
         helper.make_node("Loop", ["m", "", "zero"], ["y" if not weighted else "count"], body=body)],
        "loop_from_data",
        [helper.make_tensor_value_info("n", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1] if not weighted else [1, 4])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]), numpy_helper.from_array(np.array(scale, np.int64), "scale")],
    )
    if weighted:
        graph.node.extend([helper.make_node("Reshape", ["count", "row"], ["count2d"]),
                           helper.make_node("MatMul", ["count2d", "w"], ["y"])])
        graph.initializer.extend([numpy_helper.from_array(np.array([1, 1], np.int64), "row"),
                                  numpy_helper.from_array(np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4), "w")])
    return _save(graph, path)


def make_max_onnx(path: Path) -> Path:
    """The same interface as :func:`make_loop_onnx` and the same answer, without a loop."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["n"], ["m"], keepdims=1),
         helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT)],
        "max",
        [helper.make_tensor_value_info("n", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return _save(graph, path)


def make_alloc_onnx(path: Path) -> Path:
    """y[batch] = n + sum(zeros([max(n), 4096])) : allocates max(n) * 16 KiB at run time.
    A row holding 2**28 asks for 4 TiB; no static check can see it."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["n"], ["m"], keepdims=1),
         helper.make_node("Concat", ["m", "w"], ["shape"], axis=0),
         helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
         helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
         helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["nf", "s"], ["y"])],
        "alloc_from_data",
        [helper.make_tensor_value_info("n", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array([4096], np.int64), "w")],
    )
    return _save(graph, path)


def make_fixed_onnx(path: Path, shape: tuple[int, ...], *, out_name: str = "y") -> Path:
    """y = 2 * x + 1 on an input whose every dimension is fixed (no batch dimension)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], [out_name])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(shape))],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    return _save(graph, path)


def make_named_outputs_onnx(path: Path, names: list[str]) -> Path:
    """x[batch,2] -> one Identity output per name (names as hostile as the caller likes)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [n]) for n in names],
        "named",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2]) for n in names],
    )
    return _save(graph, path)
