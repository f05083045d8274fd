"""Builders of hostile and broken inputs, and the assertions every refusal must meet.

Every hazard is built here from scratch; payloads are harmless (at most they would create a
marker file in the test's temporary folder, and the tests assert that file never appears).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_linear_onnx, run_cli  # noqa: F401  (re-exported for the tests)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_one_line_error(r, code: int, *needles: str) -> str:
    """The user sees exactly one 'Error:' line, no traceback, and the documented exit code."""
    assert r.code == code, r
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r
    for n in needles:
        assert n in lines[0], (n, r)
    return lines[0]


def linear_model(opset: int = 17):
    """The tiny Gemm+Relu model as a ModelProto (not saved)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def save_raw(model, path: Path) -> Path:
    """Serialize without onnxkit's writer (the writer would refuse some hazards)."""
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def external_model(folder: Path, location: str, *, write_data: bool = True, data_bytes: bytes | None = None) -> Path:
    """A model whose weight 'w' lives in external file ``location`` (relative to ``folder``)."""
    from onnx import TensorProto

    model = linear_model()
    w = model.graph.initializer[0]
    raw = np.frombuffer(w.raw_data, np.uint8).tobytes() if w.raw_data else np.array(w.float_data, np.float32).tobytes()
    del w.float_data[:]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = w.external_data.add()
        e.key, e.value = k, v
    if write_data:
        target = Path(location) if os.path.isabs(location) else folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw if data_bytes is None else data_bytes)
    return save_raw(model, folder / "model.onnx")


@dataclass
class Hazard:
    path: Path
    folder: Path

    @property
    def marker(self) -> Path:
        return self.folder / "MARKER_payload_ran"


@pytest.fixture
def hazard_dir(tmp_path) -> Path:
    d = tmp_path / "case"
    d.mkdir()
    return d


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (links not followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = sha256(p)
    return out
