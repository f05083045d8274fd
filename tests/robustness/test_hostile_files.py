"""Each hazard is refused with its exit code and one line, runs nothing, changes nothing,
writes nothing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from .conftest import assert_one_line_error, external_model, linear_model, run_cli, save_raw, snapshot


class _OpenMarker:
    """Unpickling this calls open(marker, 'w'): the harmless stand-in for code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _registered(name: str) -> bool:
    from onnxkit.cli import app as app_mod

    app_mod._register()
    return any(c.name == name for c in app_mod.app.registered_commands)


def _huge_constant_of_shape(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        "huge", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2**20, 2**20])],
        [numpy_helper.from_array(np.array([2**20, 2**20], np.int64), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_raw(model, path)


def _custom_domain(path: Path) -> Path:
    m = linear_model()
    m.graph.node[1].domain = "evil.ops"
    m.opset_import.append(helper.make_opsetid("evil.ops", 1))
    return save_raw(m, path)


def _neg_dim(path: Path) -> Path:
    m = linear_model()
    m.graph.initializer[1].dims[0] = -3
    return save_raw(m, path)


def _truncated(path: Path) -> Path:
    raw = linear_model().SerializeToString()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _symlink_out(d: Path) -> Path:
    (d.parent / "secret.bin").write_bytes(b"\0" * 48)
    os.symlink("../secret.bin", d / "w.bin")
    return external_model(d, "w.bin", write_data=False)


def _hardlink_out(d: Path) -> Path:
    (d.parent / "secret.bin").write_bytes(b"\0" * 48)
    os.link(d.parent / "secret.bin", d / "w.bin")
    return external_model(d, "w.bin", write_data=False)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _absolute(d: Path) -> Path:
    return external_model(d, str(d.parent / "outside.bin"))


# name -> (builder taking the case folder, exit code, words the message must contain)
HAZARDS = {
    "zero-byte": (lambda d: _write(d / "m.onnx", b""), 2, ["empty (0 bytes)"]),
    "truncated": (lambda d: _truncated(d / "m.onnx"), 2, ["cannot parse", "truncated or not ONNX"]),
    "pickle-named-onnx": (lambda d: _write(d / "m.onnx", b"\x80\x04\x95" + b"\0" * 20), 2, ["looks like a Python pickle"]),
    "opset-99": (lambda d: save_raw(linear_model(99), d / "m.onnx"), 3, ["opset 99", "upgrade"]),
    "negative-dim": (lambda d: _neg_dim(d / "m.onnx"), 2, ["negative dimension"]),
    "huge-constant-of-shape": (lambda d: _huge_constant_of_shape(d / "m.onnx"), 2, ["ConstantOfShape", "would allocate"]),
    "external-dotdot": (lambda d: external_model(d, "../outside.bin"), 5, ["outside the model folder", "--trust"]),
    "external-absolute": (_absolute, 5, ["outside the model folder"]),
    "external-symlink-out": (_symlink_out, 5, ["symbolic link", "outside the model folder"]),
    "external-hardlink-out": (_hardlink_out, 5, ["hard links"]),
    "external-missing": (lambda d: external_model(d, "w.bin", write_data=False), 2, ["external data file missing"]),
    "external-truncated": (lambda d: external_model(d, "w.bin", data_bytes=b"\0" * 10), 2, ["truncated", "the file has 10"]),
    "custom-domain": (lambda d: _custom_domain(d / "m.onnx"), 2, ["custom operator domain 'evil.ops'", "--custom-op-library"]),
}


@pytest.mark.parametrize("command", ["inspect", "optimize", "run"])
@pytest.mark.parametrize("hazard", sorted(HAZARDS))
def test_hazard_refused(hazard, command, tmp_path):
    if not _registered(command):
        pytest.skip(f"onnxkit {command} does not exist yet")
    build, code, needles = HAZARDS[hazard]
    case = tmp_path / "models" / "case"
    case.mkdir(parents=True)
    model = build(case)
    before = snapshot(tmp_path)
    out = tmp_path / "out" / "result.onnx"
    out.parent.mkdir()
    args = {"inspect": ["inspect", model], "optimize": ["optimize", model, "-o", out], "run": ["run", model]}[command]
    r = run_cli(*args)
    assert_one_line_error(r, code, *needles)
    assert snapshot(tmp_path / "models") == {k.removeprefix("models/"): v for k, v in before.items() if k.startswith("models/")}
    assert list(out.parent.iterdir()) == [], "a refused command left an output or a temporary file"


def test_fifo_model_does_not_block(tmp_path):
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_cli("inspect", fifo)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # unblock the reader so the test process can exit, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("onnxkit inspect blocked on a FIFO")
    assert_one_line_error(box["r"], 2, "is a FIFO, not a regular file")


def test_device_as_model_refused():
    r = run_cli("inspect", "/dev/zero")
    assert_one_line_error(r, 2, "is a device")


def test_trust_allows_symlinked_data(tmp_path):
    """--trust is the documented opt-in; with it, the same model loads."""
    case = tmp_path / "case"
    case.mkdir()
    model = _symlink_out(case)
    assert run_cli("inspect", model).code == 5
    r = run_cli("inspect", model, "--trust", "--json")
    assert r.code == 0, r
    assert r.json["external_data"] == ["w.bin"]


def test_hugging_face_style_symlinked_cache_is_accepted(tmp_path):
    """snapshots/<rev>/model.onnx and its data are links into ../../blobs/: allowed, because
    the data resolves into the folder the model file itself resolves into."""
    repo = tmp_path / "models--org--name"
    blobs, snap = repo / "blobs", repo / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    staging = tmp_path / "staging"
    staging.mkdir()
    built = external_model(staging, "model.onnx.data")
    (blobs / "1111").write_bytes(built.read_bytes())
    (blobs / "2222").write_bytes((staging / "model.onnx.data").read_bytes())
    os.symlink("../../blobs/1111", snap / "model.onnx")
    os.symlink("../../blobs/2222", snap / "model.onnx.data")
    r = run_cli("inspect", snap / "model.onnx", "--json")
    assert r.code == 0, r
    from onnxkit.foundation.onnx_io import load_onnx

    loaded = load_onnx(snap / "model.onnx")
    w = numpy_helper.to_array(loaded.model.graph.initializer[0])
    np.testing.assert_array_equal(w, numpy_helper.to_array(linear_model().graph.initializer[0]))
    # ... but a link from that snapshot to anywhere else is still refused.
    (tmp_path / "secret.bin").write_bytes(b"\0" * 48)
    os.remove(snap / "model.onnx.data")
    os.symlink(str(tmp_path / "secret.bin"), snap / "model.onnx.data")
    assert_one_line_error(run_cli("inspect", snap / "model.onnx"), 5, "outside the model folder")


def _pickled_npy(path: Path, marker: Path) -> Path:
    arr = np.empty(2, dtype=object)
    arr[0] = _OpenMarker(marker)
    arr[1] = 1.0
    np.save(path, arr, allow_pickle=True)
    return path


def _pickled_npz(path: Path, marker: Path) -> Path:
    arr = np.empty(2, dtype=object)
    arr[0] = _OpenMarker(marker)
    np.savez(path, x=arr)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_pickled_data_file_never_unpickled(tmp_path, suffix):
    from onnxkit.foundation.data import open_data
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.errors import OnnxkitError

    marker = tmp_path / "MARKER_payload_ran"
    data = (_pickled_npy if suffix == ".npy" else _pickled_npz)(tmp_path / f"d{suffix}", marker)
    digest = snapshot(tmp_path)
    with pytest.raises(OnnxkitError) as ei:
        for _ in open_data(data, parse_specs(["x:[batch,4]:float32"])).batches(2):
            pass
    assert ei.value.exit_code in (2, 5)
    assert "\n" not in str(ei.value)
    assert not marker.exists()
    assert snapshot(tmp_path) == digest


def test_pickled_calibration_data_via_cli(tmp_path, linear_onnx):
    if not _registered("quantize"):
        pytest.skip("onnxkit quantize does not exist yet")
    marker = tmp_path / "MARKER_payload_ran"
    data = _pickled_npy(tmp_path / "calib.npy", marker)
    digest = snapshot(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("quantize", linear_onnx, "-o", out / "q.onnx", "--mode", "static", "--calib-data", data)
    assert r.code in (2, 5), r
    assert_one_line_error(r, r.code)
    assert not marker.exists()
    assert snapshot(tmp_path) == {k: v for k, v in digest.items()}
    assert list(out.iterdir()) == []
