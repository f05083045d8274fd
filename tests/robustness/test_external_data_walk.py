"""External data is checked wherever a tensor can hide in an ONNX file.

Each case puts one tensor whose bytes live "outside" the model folder into one
tensor-bearing field of the protobuf (sparse initializers, sparse attributes, function
bodies, training graphs...), by each of the four ways out (``..``, an absolute path, a
symlink, a hard link). Every command must refuse it with exit 5 before ONNX Runtime reads
it: no output, the secret's bytes nowhere, the inputs unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from .conftest import assert_one_line_error, linear_model, run_cli, save_raw, snapshot

SECRET = b"TOP-SECRET-" + bytes(range(65, 65 + 53))  # 64 bytes, recognizable in any output


def _external(tensor: TensorProto, location: str) -> TensorProto:
    """Move ``tensor``'s bytes out of the proto; its data now 'lives' at ``location``."""
    n = len(numpy_helper.to_array(tensor).tobytes())
    tensor.ClearField("raw_data")
    for f in ("float_data", "int64_data", "int32_data"):
        tensor.ClearField(f)
    tensor.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        e = tensor.external_data.add()
        e.key, e.value = k, v
    return tensor


def _floats(name: str, n: int = 4) -> TensorProto:
    return numpy_helper.from_array(np.arange(n, dtype=np.float32), name)


def _sparse(name: str, values_loc: str | None, indices_loc: str | None) -> onnx.SparseTensorProto:
    values = _floats(name)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), name + "_idx")
    if values_loc:
        _external(values, values_loc)
    if indices_loc:
        _external(indices, indices_loc)
    return helper.make_sparse_tensor(values, indices, [8])


def _identity_model(extra_nodes=(), opset: int = 17, functions=()):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), *extra_nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid("local", 1)] * bool(functions)
    model = helper.make_model(graph, opset_imports=imports, functions=list(functions))
    model.ir_version = 9
    return model


def _if_node(loc: str, out: str = "unused"):
    inner = helper.make_graph(
        [helper.make_node("Identity", ["inner_w"], ["branch_out"])], "branch", [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [4])],
        [_external(_floats("inner_w"), loc)],
    )
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "c"))
    return [cond, helper.make_node("If", ["cond"], [out], then_branch=inner, else_branch=inner)]


def _function(body, attributes=()):
    fn = helper.make_function("local", "Hidden", [], ["out"], body, [helper.make_opsetid("", 17)])
    fn.attribute_proto.extend(attributes)
    return fn


def _build(field: str, loc: str):
    """A model whose tensor at ``field`` reads its bytes from ``loc``."""
    if field == "initializer":
        model = linear_model()
        _external(model.graph.initializer[0], loc)
        return model
    if field in ("sparse_initializer.values", "sparse_initializer.indices"):
        model = _identity_model()
        values = loc if field.endswith("values") else None
        model.graph.sparse_initializer.append(_sparse("s", values, None if values else loc))
        return model
    if field == "constant.value":
        return _identity_model([helper.make_node("Constant", [], ["c"], value=_external(_floats("cv"), loc))])
    if field == "constant.sparse_value":
        return _identity_model([helper.make_node("Constant", [], ["c"], sparse_value=_sparse("sv", loc, None))])
    if field == "attribute.tensors":
        node = helper.make_node("Identity", ["x"], ["z"])
        node.attribute.append(helper.make_attribute("payload", [_external(_floats("tt"), loc)]))
        return _identity_model([node])
    if field == "attribute.sparse_tensors":
        node = helper.make_node("Identity", ["x"], ["z"])
        node.attribute.append(helper.make_attribute("payload", [_sparse("st", None, loc)]))
        return _identity_model([node])
    if field == "subgraph.initializer":
        return _identity_model(_if_node(loc))
    if field == "function.constant":
        body = [helper.make_node("Constant", [], ["out"], value=_external(_floats("fc"), loc))]
        return _identity_model([helper.make_node("Hidden", [], ["f"], domain="local")], functions=[_function(body)])
    if field == "function.subgraph":
        fn = _function(_if_node(loc, out="out"))
        return _identity_model([helper.make_node("Hidden", [], ["f"], domain="local")], functions=[fn])
    if field == "function.attribute_default":
        body = [helper.make_node("Identity", ["x"], ["out"])]
        default = helper.make_attribute("w", _external(_floats("fd"), loc))
        return _identity_model([helper.make_node("Hidden", [], ["f"], domain="local")], functions=[_function(body, [default])])
    if field == "function.attribute_default_graph":
        body = [helper.make_node("Identity", ["x"], ["out"])]
        branch = _if_node(loc)[1].attribute[0].g
        default = helper.make_attribute("body", branch)
        return _identity_model([helper.make_node("Hidden", [], ["f"], domain="local")], functions=[_function(body, [default])])
    if field == "training_info":
        model = linear_model()
        init = helper.make_graph([], "init", [], [], [_external(_floats("ti"), loc)])
        info = onnx.TrainingInfoProto()
        info.initialization.CopyFrom(init)
        info.algorithm.CopyFrom(helper.make_graph([], "algo", [], []))
        model.training_info.append(info)
        return model
    raise AssertionError(field)


FIELDS = [
    "initializer", "sparse_initializer.values", "sparse_initializer.indices", "constant.value",
    "constant.sparse_value", "attribute.tensors", "attribute.sparse_tensors", "subgraph.initializer",
    "function.constant", "function.subgraph", "function.attribute_default", "function.attribute_default_graph",
    "training_info",
]
WAYS_OUT = ["dotdot", "absolute", "symlink", "hardlink"]


def _case(tmp_path: Path, field: str, way: str) -> Path:
    """models/case/model.onnx whose ``field`` reaches tmp_path/secret.bin by ``way``."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    case = tmp_path / "models" / "case"
    case.mkdir(parents=True)
    if way == "dotdot":
        loc = "../../secret.bin"
    elif way == "absolute":
        loc = str(secret)
    else:
        loc = "w.bin"
        (os.symlink if way == "symlink" else os.link)(secret, case / loc)
    return save_raw(_build(field, loc), case / "model.onnx")


def _commands(model: Path, out: Path) -> dict[str, list]:
    return {
        "run": ["run", model, "-o", out / "out.npz"],
        "validate": ["validate", model, model],
        "inspect": ["inspect", model, "--json"],
        "optimize": ["optimize", model, "-o", out / "m.onnx"],
    }


@pytest.mark.parametrize("way", WAYS_OUT)
@pytest.mark.parametrize("field", FIELDS)
def test_every_field_is_checked_by_every_command(field, way, tmp_path):
    model = _case(tmp_path, field, way)
    before = snapshot(tmp_path / "models")
    secret_before = (tmp_path / "secret.bin").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    for command, args in _commands(model, out).items():
        r = run_cli(*args)
        needle = "hard links" if way == "hardlink" else "outside the model folder"
        line = assert_one_line_error(r, 5, needle, "--trust")
        assert SECRET[:11].decode() not in r.stdout + r.stderr, command
        assert r.stdout == "" or "TOP-SECRET" not in r.stdout
        assert list(out.iterdir()) == [], f"{command} left {list(out.iterdir())}"
        assert snapshot(tmp_path / "models") == before, command
        assert (tmp_path / "secret.bin").read_bytes() == secret_before
        assert line


def test_message_names_where_the_tensor_hides(tmp_path):
    model = _case(tmp_path, "function.subgraph", "dotdot")
    r = run_cli("inspect", model)
    line = assert_one_line_error(r, 5, "function local.Hidden", "inner_w", "../../secret.bin")
    assert "If" in line


def test_ort_memory_address_tag_refused_even_with_trust(tmp_path):
    case = tmp_path / "case"
    (case / "*" / "_ORT_MEM_ADDR_").mkdir(parents=True)
    (case / "*" / "_ORT_MEM_ADDR_" / "*").write_bytes(b"\0" * 64)  # the tag as a real path passes every file rule
    model = save_raw(_build("sparse_initializer.values", "*/_ORT_MEM_ADDR_/*"), case / "model.onnx")
    for extra in ([], ["--trust"]):
        r = run_cli("run", model, *extra)
        assert_one_line_error(r, 5, "in-memory address tag")


def test_duplicate_location_key_refused(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    (case / "w.bin").write_bytes(b"\0" * 64)
    model = _build("constant.value", "w.bin")
    t = model.graph.node[1].attribute[0].t
    e = t.external_data.add()
    e.key, e.value = "location", "../../secret.bin"  # a reader that takes the last entry would follow this one
    path = save_raw(model, case / "model.onnx")
    r = run_cli("inspect", path)
    assert_one_line_error(r, 2, "names 'location' twice")


def test_sparse_dense_shape_is_bounded(tmp_path):
    model = _identity_model()
    sp = _sparse("big", None, None)
    del sp.dims[:]
    sp.dims.extend([2**20, 2**20])  # ONNX Runtime would densify 2^40 floats (4 TiB)
    model.graph.sparse_initializer.append(sp)
    path = save_raw(model, tmp_path / "model.onnx")
    r = run_cli("run", path)
    assert_one_line_error(r, 2, "sparse initializer 'big'", "absurd shape")


def test_sparse_initializer_with_local_external_data_still_runs(tmp_path):
    """No false refusal: sparse external data inside the folder is the ordinary case."""
    values = np.array([1.5, -2.0, 3.25], np.float32)
    raw = values.tobytes()
    (tmp_path / "w.bin").write_bytes(raw)
    v = numpy_helper.from_array(values, "w")
    _external(v, "w.bin")
    sp = helper.make_sparse_tensor(v, numpy_helper.from_array(np.array([0, 2, 5], np.int64), "w_idx"), [6])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])],
    )
    graph.sparse_initializer.append(sp)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = save_raw(model, tmp_path / "model.onnx")
    np.save(tmp_path / "x.npy", np.zeros((2, 6), np.float32))
    r = run_cli("run", path, "--data", tmp_path / "x.npy", "-o", tmp_path / "y.npz", "--json")
    assert r.code == 0, r
    got = np.load(tmp_path / "y.npz")["y"]
    np.testing.assert_array_equal(got[0], [1.5, 0, -2.0, 0, 0, 3.25])
    r = run_cli("inspect", path, "--json", "--no-check")  # onnx's checker does not type sparse initializers
    assert r.code == 0 and r.json["external_data"] == ["w.bin"], r
