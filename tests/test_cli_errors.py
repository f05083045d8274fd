"""An exception onnxkit did not expect is a bug: exit 70, one line, the traceback in a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import onnxkit.operations.inspect as inspect_mod


class _Boom(Exception):
    pass


@pytest.fixture
def crash_home(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("ONNXKIT_DEBUG", raising=False)

    def explode(*args, **kwargs):
        raise _Boom("the parser fell over\nsecond line not shown")

    monkeypatch.setattr(inspect_mod, "inspect_model", explode)
    return home


def _crash_files(home: Path) -> list[Path]:
    folder = home / "onnxkit" / "crashes"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_unexpected_exception_exits_70_with_one_line(cli, linear_onnx, crash_home):
    before = linear_onnx.read_bytes()
    r = cli("inspect", linear_onnx)
    assert r.code == 70
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: internal error in onnxkit (a bug): _Boom: the parser fell over; traceback written to ")
    assert "Traceback" not in r.stderr and "second line" not in r.stderr
    assert r.stdout == ""
    files = _crash_files(crash_home)
    assert len(files) == 1 and files[0].name.startswith("crash-")
    assert str(files[0]) in lines[0]
    report = files[0].read_text()
    assert "Traceback" in report and "_Boom: the parser fell over" in report and "inspect" in report
    assert linear_onnx.read_bytes() == before


def test_internal_error_with_verbose_also_prints_the_traceback(cli, linear_onnx, crash_home):
    r = cli("inspect", linear_onnx, "-v")
    assert r.code == 70
    assert "Traceback" in r.stderr and "_Boom" in r.stderr
    assert len(_crash_files(crash_home)) == 1


def test_internal_error_with_json_is_one_document(cli, linear_onnx, crash_home):
    r = cli("inspect", linear_onnx, "--json")
    assert r.code == 70
    doc = json.loads(r.stdout)  # exactly one document: json.loads rejects trailing data
    assert doc["exit_code"] == 70 and doc["kind"] == "InternalError"
    assert "a bug" in doc["error"] and "traceback written to" in doc["error"]


def test_unwritable_cache_falls_back_to_the_temp_folder(cli, linear_onnx, crash_home, tmp_path, monkeypatch):
    crash_home.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    r = cli("inspect", linear_onnx)
    assert r.code == 70
    written = list((tmp_path / "tmp" / "onnxkit-crashes").glob("crash-*.txt"))
    assert len(written) == 1 and str(written[0]) in r.stderr
    assert not list((tmp_path / "tmp" / "onnxkit-crashes").glob(".crash-*"))  # no half-written leftovers


def test_onnxkit_errors_keep_their_codes(cli, tmp_path):
    r = cli("inspect", tmp_path / "missing.onnx")
    assert r.code == 2 and r.stderr.startswith("Error: ") and "internal" not in r.stderr


def test_bad_flag_is_usage_error_through_public_typer_api(cli, linear_onnx):
    r = cli("inspect", linear_onnx, "--no-such-flag")
    assert r.code == 2
    assert "No such option" in r.stderr and "--no-such-flag" in r.stderr
    r = cli("inspect", linear_onnx, "--no-such-flag", "--json")
    assert r.code == 2
    assert json.loads(r.stdout)["exit_code"] == 2


def test_common_uses_no_private_typer_module():
    source = (Path(__file__).resolve().parents[1] / "onnxkit" / "cli" / "common.py").read_text()
    assert "typer._" not in source


def test_a_missing_export_source_is_named_before_the_output_is_judged(cli, tmp_path):
    # -o without .onnx is what a Hugging Face folder takes; a source that does not exist at all
    # must say so rather than blame the output name.
    for out in (tmp_path / "o_x", tmp_path / "o.onnx"):
        r = cli("export", tmp_path / "nope", "-o", out)
        assert r.code == 2, r
        assert r.stderr.strip() == f"Error: source not found: {tmp_path / 'nope'}"
    assert list(tmp_path.iterdir()) == []
