"""A deflate-compressed .npz member declares its size in its header: it is checked against a
memory budget before anything is inflated, and what passes is decompressed a batch at a time."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot


@pytest.fixture
def model(tmp_path):
    return make_linear_onnx(tmp_path / "m.onnx")


def _bomb(path, rows: int) -> None:
    # Written a block at a time, as an attacker would, so the test never holds the array.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("x.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (rows, 4)})
        block = np.zeros((1 << 14, 4), np.float32).tobytes()
        for _ in range(rows >> 14):
            fh.write(block)


def test_member_over_budget_is_refused_before_inflating(model, tmp_path, monkeypatch):
    monkeypatch.setattr("onnxkit.foundation.npz_stream.member_budget", lambda: 1 << 20)
    bomb = tmp_path / "bomb.npz"
    _bomb(bomb, 1 << 18)  # 4 MiB declared, a few KiB on disk
    assert bomb.stat().st_size < 64 << 10
    inflated = []
    monkeypatch.setattr("onnxkit.foundation.npz_stream._row_batches",
                        lambda *a, **k: inflated.append(1) or iter(()))
    before = snapshot(tmp_path)
    r = run_cli("run", model, "--data", bomb, "-o", tmp_path / "out.npz")
    assert_one_line_error(r, 2, "'x'", "bomb.npz", "float32[262144, 4]", "4.19 MB", "quarter of this machine's memory")
    assert not inflated
    assert snapshot(tmp_path) == before


def test_compressed_member_streams_in_batches(model, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    np.savez_compressed(tmp_path / "c.npz", x=x)
    np.save(tmp_path / "c.npy", x)
    reads = []
    real_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: reads.append(n) or real_read(self, n))
    a = run_cli("run", model, "--data", tmp_path / "c.npz", "--batch-size", "8", "-o", tmp_path / "a.npz")
    b = run_cli("run", model, "--data", tmp_path / "c.npy", "--batch-size", "8", "-o", tmp_path / "b.npz")
    assert a.code == 0 and b.code == 0, (a, b)
    assert max(reads) <= 8 * 4 * 4  # never more than one batch of rows at a time
    with np.load(tmp_path / "a.npz") as ya, np.load(tmp_path / "b.npz") as yb:
        assert ya.files == yb.files
        for k in ya.files:
            np.testing.assert_array_equal(ya[k], yb[k])


def test_fortran_order_and_truncated_members(model, tmp_path):
    from onnxkit.foundation.data import load_all
    from onnxkit.foundation.spec import specs_from_onnx
    import onnx

    specs = specs_from_onnx(onnx.load(str(model)))
    x = np.asfortranarray(np.arange(40, dtype=np.float32).reshape(10, 4))
    np.savez_compressed(tmp_path / "f.npz", x=x)
    np.testing.assert_array_equal(load_all(tmp_path / "f.npz", specs)["x"], x)

    # A header that declares more rows than the member holds.
    with zipfile.ZipFile(tmp_path / "t.npz", "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("x.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (100, 4)})
        fh.write(np.zeros((10, 4), np.float32).tobytes())
    before = snapshot(tmp_path)
    r = run_cli("run", model, "--data", tmp_path / "t.npz")
    assert_one_line_error(r, 2, "'x'", "truncated")
    assert snapshot(tmp_path) == before


def test_object_member_is_refused_without_unpickling(model, tmp_path):
    with zipfile.ZipFile(tmp_path / "o.npz", "w") as zf, zf.open("x.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": (2, 4)})
        fh.write(b"\x80\x04N.")
    r = run_cli("run", model, "--data", tmp_path / "o.npz")
    assert_one_line_error(r, 5, "object array")
