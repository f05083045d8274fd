"""Models with control flow, made by hand: an If on a scalar bool input, and float work that
sits inside If branches. Both are legitimate graphs that were refused."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _if_model(path, *, cond_input: bool):
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])

    def branch(name, w):
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["batch", 4])
        return helper.make_graph([helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_out"], name=f"{name}_mm")],
                                 name, [], [out], [numpy_helper.from_array(w, f"{name}_w")])

    then_b = branch("then", rng.standard_normal((8, 4)).astype(np.float32))
    else_b = branch("else", rng.standard_normal((8, 4)).astype(np.float32))
    nodes, inputs = [], [x]
    if cond_input:
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
        cond = "flag"
    else:
        nodes += [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="sum"),
                  helper.make_node("Greater", ["total", "zero"], ["positive"], name="gt")]
        cond = "positive"
    nodes.append(helper.make_node("If", [cond], ["y"], then_branch=then_b, else_branch=else_b, name="branch"))
    inits = [] if cond_input else [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    model = helper.make_model(helper.make_graph(nodes, "if_model", inputs, [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_scalar_bool_input_gets_random_flags(cli, tmp_path):
    # Was exit 2 "Unable to handle object of type <class 'numpy.bool'>": a 0-d random bool was a numpy scalar.
    m = _if_model(tmp_path / "if.onnx", cond_input=True)
    r = cli("validate", m, m, "--json")
    assert r.code == 0, r
    assert r.json["outputs"][0]["elements"] > 0


def test_fp16_counts_the_nodes_inside_if_branches(cli, tmp_path):
    # Was exit 1 "nothing was quantized": only top-level nodes were counted, and both MatMuls sit in branches.
    m = _if_model(tmp_path / "if.onnx", cond_input=False)
    out = tmp_path / "if.fp16.onnx"
    r = cli("quantize", m, "-o", out, "--mode", "fp16", "--json")
    assert r.code == 0, r
    assert r.json["quantized_ops"].get("MatMul") == 2, r.json["quantized_ops"]
    assert out.exists()
