"""`onnxkit pipeline` checks its paths and data before the first stage: a write that would
land on something it reads, a target that is not a regular file, data that does not parse,
are exit 2 within a second or two, with nothing written and every input unchanged."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot

SECONDS = 10  # generous for a loaded machine; an export + bench of even this model takes longer


@pytest.fixture
def proj(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    make_linear_onnx(tmp_path / "m.onnx")
    return tmp_path


def _config(folder: Path, body: str, source: str = "m.onnx", name: str = "c.toml") -> Path:
    cfg = folder / name
    cfg.write_text(f'[source]\npath = "{source}"\n' + body)
    return cfg


def _refused(folder: Path, argv: list, code: int, *needles: str) -> None:
    before = snapshot(folder)
    entries = sorted(p.name for p in folder.iterdir())
    t0 = time.perf_counter()
    r = run_cli("pipeline", *argv)
    took = time.perf_counter() - t0
    assert_one_line_error(r, code, *needles)
    assert took < SECONDS, took
    assert "[pipeline] export" not in r.stderr  # no stage started
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == entries  # no output or report folder


def test_artifact_named_like_its_source(proj):
    (proj / "m.onnx").rename(proj / "m.opt.onnx")
    cfg = _config(proj, '[output]\ndir = "."\nname = "m"\n', source="m.opt.onnx")
    _refused(proj, [cfg], 2, "the artifact", "m.opt.onnx", "would overwrite the source model")


@pytest.mark.parametrize("flag, target, role", [
    ("--junit", "m.onnx", "the source model"),
    ("--junit", "c.toml", "the config"),
    ("--junit", "data.npz", "validate.data"),
])
def test_report_paths_never_overwrite_what_the_run_reads(proj, flag, target, role):
    np.savez(proj / "data.npz", x=np.ones((3, 4), np.float32))
    cfg = _config(proj, '[validate]\ndata = "data.npz"\n')
    _refused(proj, [cfg, flag, target], 2, f"would overwrite {role}")


def test_report_dir_files_never_overwrite_the_source(proj):
    (proj / "m.onnx").rename(proj / "summary.md")  # an ONNX model may be named anything
    (proj / "c.toml").write_text('[source]\npath = "summary.md"\nframework = "onnx"\n')
    _refused(proj, [proj / "c.toml", "--report-dir", "."], 2, "the report", "would overwrite the source model")


def test_step_summary_never_overwrites_the_source(proj, monkeypatch):
    cfg = _config(proj, "")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(proj / "m.onnx"))
    _refused(proj, [cfg], 2, "$GITHUB_STEP_SUMMARY", "would overwrite the source model")


def test_hard_link_to_the_source_is_caught(proj):
    os.link(proj / "m.onnx", proj / "alias.xml")
    cfg = _config(proj, "")
    _refused(proj, [cfg, "--junit", "alias.xml"], 2, "would overwrite the source model")


def test_output_inside_a_source_folder(proj):
    saved = proj / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    cfg = _config(proj, '[output]\ndir = "saved/out"\n', source="saved")
    _refused(proj, [cfg], 2, "lies inside the source model")


def test_two_reports_on_one_file(proj):
    cfg = _config(proj, "")
    _refused(proj, [cfg, "--report-dir", "rep", "--junit", "rep/summary.md"], 2, "are the same file")


def test_output_name_with_folders_refused(proj):
    cfg = _config(proj, '[output]\nname = "../escape"\n')
    _refused(proj, [cfg], 2, "output.name", "plain file name")


def test_output_dir_that_is_a_file(proj):
    (proj / "out").write_text("not a folder")
    cfg = _config(proj, '[output]\ndir = "out"\n')
    _refused(proj, [cfg], 2, "output.dir", "is not a directory")


def test_symlinked_report_path_refused(proj):
    (proj / "elsewhere.txt").write_text("keep me")
    (proj / "j.xml").symlink_to(proj / "elsewhere.txt")
    cfg = _config(proj, "")
    _refused(proj, [cfg, "--junit", "j.xml"], 2, "symbolic link")
    assert (proj / "elsewhere.txt").read_text() == "keep me"


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_special_report_targets_refused(proj, kind):
    if kind == "fifo":
        os.mkfifo(proj / "j.xml")
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("j.xml")
    mode = os.lstat(proj / "j.xml").st_mode
    cfg = _config(proj, "")
    try:
        _refused(proj, [cfg, "--junit", "j.xml"], 2, "j.xml", "not a regular file")
    finally:
        if kind == "socket":
            sock.close()
    assert os.lstat(proj / "j.xml").st_mode == mode


def test_step_summary_fifo_refused(proj, monkeypatch):
    os.mkfifo(proj / "summary")  # appending to it would block forever without a reader
    cfg = _config(proj, "")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(proj / "summary"))
    _refused(proj, [cfg], 2, "$GITHUB_STEP_SUMMARY", "a FIFO")


def test_dev_null_as_junit_refused_and_kept(proj):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    st = os.lstat("/dev/null")
    cfg = _config(proj, "")
    _refused(proj, [cfg, "--junit", "/dev/null", "--json"], 2, "/dev/null", "a device")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (st.st_ino, st.st_rdev)


# ------------------------------------------------------------------ data, before any stage


def _npz_object(path):
    np.savez(path, x=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize("name, content, key, code, needle", [
    ("extra.csv", "a,b,c,d\n1,2,3,4,5\n", "validate", 2, "line 2 has 5 fields, more than the 4 columns"),
    ("short.csv", "a,b,c,d\n1,2,3,4\n\n1,2,3\n", "validate", 2, "line 4 has 3 fields, fewer than"),
    ("header.csv", "a,b,c,d\n", "validate", 2, "holds no rows"),
    ("empty.npz", b"", "validate", 2, "empty"),
    ("trunc.npz", b"PK\x03\x04garbage", "validate", 2, "cannot read trunc.npz as .npz"),
    ("data.txt", "1 2 3 4\n", "validate", 2, "unsupported data file"),
    ("obj.npz", _npz_object, "validate", 5, "object array"),
    ("calib.csv", "a,b\n1,2,3\n", "quantize", 2, "line 2 has 3 fields"),
])
def test_bad_data_is_refused_before_any_stage(proj, name, content, key, code, needle):
    path = proj / name
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    body = (f'[validate]\ndata = "{name}"\n' if key == "validate"
            else f'[quantize]\nmode = "static"\ncalib_data = "{name}"\n')
    cfg = _config(proj, body)
    label = "validate.data" if key == "validate" else "quantize.calib_data"
    _refused(proj, [cfg], code, label, needle)


def test_random_batches_that_cannot_fit_are_refused_before_export(proj):
    cfg = _config(proj, 'inputs = ["x:[batch,1000]:float32"]\n[bench]\nbatch_sizes = [1000000000]\n')
    _refused(proj, [cfg, "--json"], 2, "batch size 1000000000", "random input x:[1000000000,1000]")


def test_bad_sample_csv_is_refused_before_any_stage(proj):
    (proj / "sample.txt").write_text("age,city\n31,Oslo,extra\n")  # read as CSV whatever its name
    cfg = _config(proj, 'sample = "sample.txt"\n')
    _refused(proj, [cfg], 2, "source.sample", "line 2 has 3 fields")
