"""A deeply nested XGBoost JSON or UBJSON file overflowed the C stack of XGBoost's
recursive parser, in onnxkit's own process (SIGSEGV, exit 139). The depth is bounded
first: exit 2 with one line, nothing written."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from onnxkit.errors import InputError
from onnxkit.frameworks.booster_scan import MAX_DEPTH, check_depth
from tests.robustness.conftest import assert_one_line_error

DEEP = 100_000


def _ubj_key(key: str) -> bytes:
    return b"L" + struct.pack(">q", len(key)) + key.encode()


def _deep_files(folder: Path) -> list[Path]:
    json_file = folder / "deep.json"
    json_file.write_text('{"learner": ' + "[" * DEEP + "]" * DEEP + "}")
    ubj_file = folder / "deep.ubj"
    ubj_file.write_bytes(b"{" + _ubj_key("learner") + b"[" * DEEP)
    ubj_objects = folder / "deep_objects.ubj"  # nested objects, each under a key
    ubj_objects.write_bytes((b"{" + _ubj_key("a")) * 5000 + b"Z" + b"}" * 5000)
    return [json_file, ubj_file, ubj_objects]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_deeply_nested_booster_is_refused_before_parsing(cli, tmp_path, index):
    src = _deep_files(tmp_path)[index]
    before = sorted(p.name for p in tmp_path.iterdir())
    data = src.read_bytes()
    r = cli("export", src, "-o", tmp_path / "d.onnx")
    assert_one_line_error(r, 2, src.name, f"more than {MAX_DEPTH} levels")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert src.read_bytes() == data


def test_brackets_inside_json_strings_do_not_count(tmp_path):
    path = tmp_path / "strings.json"
    path.write_text('{"a": "' + "[" * 500 + '\\"[[[[", "b": [[1]]}')
    check_depth(path)  # no error: the brackets are quoted


def test_depth_limit_is_exact(tmp_path):
    ok, deep = tmp_path / "ok.json", tmp_path / "deep.json"
    ok.write_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    deep.write_text("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    check_depth(ok)
    with pytest.raises(InputError):
        check_depth(deep)


def test_typed_ubjson_arrays_are_skipped_whole(tmp_path):
    """A typed array's payload may hold '[' bytes (0x5B): they are numbers, not brackets."""
    payload = bytes([0x5B]) * 4 * 1000
    path = tmp_path / "typed.ubj"
    path.write_bytes(b"{" + _ubj_key("w") + b"[$d#L" + struct.pack(">q", 1000) + payload + b"}")
    check_depth(path)


def test_truncated_ubjson_is_a_one_line_input_error(cli, tmp_path):
    path = tmp_path / "cut.ubj"
    path.write_bytes(b"{" + _ubj_key("learner") + b"{" + b"L\x00\x00")
    r = cli("export", path, "-o", tmp_path / "c.onnx")
    assert_one_line_error(r, 2, "cut.ubj")
    assert not (tmp_path / "c.onnx").exists()


@pytest.mark.parametrize("ext", ["json", "ubj"])
def test_real_boosters_still_export(cli, tmp_path, ext):
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    X = rng.random((200, 5))
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 4},
                        xgb.DMatrix(X, label=(X[:, 0] * 3).astype(int)), 10)
    path = tmp_path / f"m.{ext}"
    booster.save_model(str(path))
    check_depth(path)
    r = cli("export", path, "-o", tmp_path / "m.onnx", "-q")
    assert r.code == 0, r.stderr
    assert (tmp_path / "m.onnx").is_file()
