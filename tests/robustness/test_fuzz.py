"""Property-based: mutated ONNX and data files never produce a traceback."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import external_model, linear_model, run_cli

ALLOWED_CODES = {0, 1, 2, 3, 5}

_VALID = linear_model().SerializeToString()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
    return buf.getvalue()


_VALID_NPY = _npy_bytes()


@st.composite
def mutated(draw, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
    return bytes(data)


_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _assert_clean(r) -> None:
    assert r.code in ALLOWED_CODES, r
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r
    if r.code not in (0, 1):
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), r


@_SETTINGS
@given(blob=mutated(_VALID))
def test_mutated_model_never_tracebacks(blob):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        path.write_bytes(blob)
        _assert_clean(run_cli("inspect", path))


@_SETTINGS
@given(blob=mutated(_VALID_NPY))
def test_mutated_data_never_tracebacks(blob):
    from onnxkit.foundation.data import open_data
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.errors import OnnxkitError

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.npy"
        path.write_bytes(blob)
        try:
            for feeds in open_data(path, parse_specs(["x:[batch,4]:float32"])).batches(2):
                assert feeds["x"].dtype == np.float32
        except OnnxkitError as exc:
            assert exc.exit_code in (2, 5) and "\n" not in exc.message


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(blob=mutated(b"\0" * 48))
def test_mutated_external_data_never_tracebacks(blob):
    with tempfile.TemporaryDirectory() as d:
        model = external_model(Path(d), "w.bin", data_bytes=blob)
        _assert_clean(run_cli("inspect", model))


def test_scaled_down_large_model_with_external_data(tmp_path):
    """A 20 MB model written through save_onnx(external=True) is inspected and reloaded
    intact, with its data file beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxkit.foundation.onnx_io import load_onnx, save_onnx

    w = np.random.default_rng(0).standard_normal((1280, 4096)).astype(np.float32)  # 20 MiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1280])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4096])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    dest = save_onnx(model, tmp_path / "big.onnx", external=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert dest.stat().st_size < 100_000
    r = run_cli("inspect", dest, "--json")
    assert r.code == 0, r
    assert r.json["external_data"] == ["big.onnx.data"]
    assert r.json["external_data_bytes"] >= w.nbytes
    loaded = load_onnx(dest)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.model.graph.initializer[0]), w)
    assert onnx.external_data_helper.uses_external_data(onnx.load(str(dest), load_external_data=False).graph.initializer[0])


def test_npy_with_broken_header_is_an_input_error(tmp_path):
    """Found by the fuzzer: a NUL inside the header dict made numpy raise SyntaxError."""
    from onnxkit.foundation.data import open_data
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.errors import InputError

    p = tmp_path / "x.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3, \x00\x00, }" + b" " * 58 + b"\n" + b"\x00" * 48)
    with pytest.raises(InputError, match="cannot read x.npy"):
        list(open_data(p, parse_specs(["x:[batch,4]:float32"])).batches(2))
