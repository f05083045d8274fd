"""atomic_output: the previous output survives every failure, and no temporary file stays."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from onnxkit.foundation.files import atomic_output, check_output_path, write_bytes_atomic
from onnxkit.errors import EnvironmentProblem, Interrupted, UsageError


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_in_destination_folder_with_normal_permissions(tmp_path):
    dest = tmp_path / "out.onnx"
    with atomic_output(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask
    assert _listing(tmp_path) == ["out.onnx"]


def test_keeps_mode_of_replaced_file(tmp_path):
    dest = tmp_path / "out.onnx"
    dest.write_bytes(b"old")
    dest.chmod(0o640)
    write_bytes_atomic(dest, b"new")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640


def test_exception_keeps_previous_output(tmp_path):
    dest = tmp_path / "out.onnx"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert dest.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.onnx"]


def test_ctrl_c_keeps_previous_output(tmp_path):
    dest = tmp_path / "out.onnx"
    dest.write_bytes(b"old")
    with pytest.raises(Interrupted), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert dest.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.onnx"]


def test_never_writes_through_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = tmp_path / "out.onnx"
    link.symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        write_bytes_atomic(link, b"evil")
    with pytest.raises(UsageError, match="symbolic link"):
        check_output_path(link)
    assert victim.read_bytes() == b"precious"
    assert _listing(tmp_path) == ["out.onnx", "victim.txt"]


def test_output_same_as_input_refused(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(b"model")
    os.link(src, tmp_path / "alias.onnx")
    with pytest.raises(UsageError, match="overwrite the input"):
        check_output_path(tmp_path / "alias.onnx", src)
    with pytest.raises(UsageError, match="overwrite the input"):
        check_output_path(tmp_path / "." / "m.onnx", src)
    with pytest.raises(UsageError, match="directory"):
        check_output_path(tmp_path, src)


def test_disk_full_is_exit_3_and_keeps_previous(tmp_path):
    """RLIMIT_FSIZE in a child makes writes fail with EFBIG, as a full disk would."""
    dest = tmp_path / "out.onnx"
    dest.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        from onnxkit.foundation.files import write_bytes_atomic
        from onnxkit.errors import OnnxkitError
        try:
            write_bytes_atomic({str(dest)!r}, b"x" * (4 << 20))
        except OnnxkitError as exc:
            print(exc.message)
            sys.exit(exc.exit_code)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 3, r
    assert "file size limit" in r.stdout and "Traceback" not in r.stderr
    assert dest.read_bytes() == b"old"
    assert _listing(tmp_path) == ["out.onnx"]


def test_unwritable_folder_is_environment_problem(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(EnvironmentProblem):
            write_bytes_atomic(ro / "out.onnx", b"x")
        with pytest.raises(EnvironmentProblem, match="not writable"):
            check_output_path(ro / "out.onnx")
    finally:
        ro.chmod(0o700)
