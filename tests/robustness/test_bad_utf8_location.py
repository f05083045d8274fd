"""An external-data location that is not valid UTF-8 (protobuf returns it as bytes) is
refused in one line (exit 2), not a TypeError (exit 70)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper


def _bad_location_model(folder: Path) -> Path:
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 2], vals=[0.0] * 4)
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    e = w.external_data.add()
    e.key, e.value = "location", "a\x00b"
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 2])], initializer=[w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    raw = m.SerializeToString()
    assert raw.count(b"a\x00b") == 1
    path = folder / "bad.onnx"
    path.write_bytes(raw.replace(b"a\x00b", b"a\xffb"))
    return path


@pytest.mark.parametrize("cmd", [["inspect", "{m}"], ["run", "{m}"], ["validate", "{m}", "{m}"]])
def test_non_utf8_external_location_is_refused_in_one_line(cli, tmp_path, cmd):
    m = _bad_location_model(tmp_path)
    before = m.read_bytes()
    r = cli(*[a.format(m=m) for a in cmd])
    assert r.code == 2, r
    assert r.stderr.strip() == "Error: external data location of tensor 'W' is not valid UTF-8 (b'a\\xffb')", r
    assert m.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]
