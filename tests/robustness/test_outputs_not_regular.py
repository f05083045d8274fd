"""An output path that names a device, FIFO or socket is refused (exit 2) and left as it was.

The atomic rename onnxkit writes with would otherwise replace the node itself; as root,
``-o /dev/null`` would put a model file where every program expects the null device.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from onnxkit.foundation.files import atomic_output, check_output_path, write_text_atomic
from onnxkit.errors import UsageError
from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot


def _node_state(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), st.st_ino, st.st_rdev


@pytest.fixture
def case(tmp_path, monkeypatch):
    """A folder with a model, a FIFO and a socket named like outputs (relative names keep the
    socket path under the AF_UNIX length limit)."""
    monkeypatch.chdir(tmp_path)
    model = make_linear_onnx(tmp_path / "m.onnx")
    os.mkfifo("fifo.onnx")
    os.mkfifo("fifo.npz")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("sock.onnx")
    yield tmp_path, model
    sock.close()


def _assert_untouched(folder: Path, before: dict, nodes: dict) -> None:
    assert snapshot(folder) == before
    for name, state in nodes.items():
        assert _node_state(folder / name) == state, name
    # No temporary file of an aborted write is left behind.
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("argv, target, kind", [
    (["optimize", "m.onnx", "-o", "fifo.onnx", "--no-validate"], "fifo.onnx", "a FIFO"),
    (["optimize", "m.onnx", "-o", "sock.onnx", "--no-validate"], "sock.onnx", "a socket"),
    (["run", "m.onnx", "--input", "x:[2,4]:float32", "--output", "fifo.npz"], "fifo.npz", "a FIFO"),
    (["quantize", "m.onnx", "-o", "fifo.onnx", "--mode", "dynamic"], "fifo.onnx", "a FIFO"),
    (["validate", "m.onnx", "m.onnx", "--junit", "sock.onnx"], "sock.onnx", "a socket"),
    (["validate", "m.onnx", "m.onnx", "--report", "fifo.onnx"], "fifo.onnx", "a FIFO"),
    (["bench", "m.onnx", "--save-baseline", "fifo.onnx"], "fifo.onnx", "a FIFO"),
])
def test_special_output_refused(case, argv, target, kind):
    folder, _ = case
    before = snapshot(folder)
    nodes = {n: _node_state(folder / n) for n in ("fifo.onnx", "fifo.npz", "sock.onnx")}
    r = run_cli(*argv)
    assert_one_line_error(r, 2, target, kind, "not a regular file")
    _assert_untouched(folder, before, nodes)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_device_output_refused_and_device_kept(case, device):
    if not Path(device).exists():
        pytest.skip(f"{device} is absent here")
    folder, _ = case
    state = _node_state(Path(device))
    assert stat.S_ISCHR(state[0])
    before = snapshot(folder)
    r = run_cli("optimize", "m.onnx", "-o", device, "--no-validate", "--json")
    assert_one_line_error(r, 2, device, "a device")
    assert r.json["exit_code"] == 2
    assert _node_state(Path(device)) == state  # still the same character device
    assert snapshot(folder) == before


def test_library_writers_refuse_special_files(case):
    folder, _ = case
    for name in ("fifo.onnx", "sock.onnx"):
        state = _node_state(folder / name)
        with pytest.raises(UsageError, match="not a regular file"):
            check_output_path(name)
        with pytest.raises(UsageError, match="not a regular file"):
            write_text_atomic(name, "report")
        assert _node_state(folder / name) == state


def test_special_file_appearing_during_the_write_is_not_replaced(case):
    """A FIFO created at the output path while onnxkit writes is not replaced either."""
    folder, _ = case
    dest = folder / "late.onnx"
    with pytest.raises(UsageError, match="a FIFO"), atomic_output(dest) as tmp:
        tmp.write_bytes(b"model")
        os.mkfifo(dest)
    assert stat.S_ISFIFO(os.lstat(dest).st_mode)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
