"""Keras files that carry code, or configs built to crash the reader.

A Python ``lambda`` given as an activation is saved by Keras 3 as marshalled bytecode
under ``{"value": [...]}``, with no class name; before, Keras' own loader stopped it with
exit 2 and its own words. It is a safety refusal: exit 5, onnxkit's message, before Keras
sees the file. A config nested 20,000-200,000 deep must be one line (exit 2), not a
RecursionError.
"""

from __future__ import annotations

import base64
import json
import marshal
import warnings
import zipfile
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, run_cli, snapshot

keras = pytest.importorskip("keras")


def _marker_lambda(marker: Path):
    target = str(marker)
    return lambda x: (open(target, "w").close(), x)[1]  # the payload, if it ever ran


@pytest.fixture
def case(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    return models, out, tmp_path / "MARKER_keras_code_ran"


def _lambda_activation_model(path: Path, marker: Path) -> Path:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation=_marker_lambda(marker), name="dense_act")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that the lambda is unsafe to reload: the point here
        model.save(path)
    return path


def _rewrite_config(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return dst


def _plain_model(path: Path) -> Path:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu", name="dense_act")])
    model.save(path)
    return path


def _code_string(marker: Path) -> str:
    return base64.encodebytes(marshal.dumps(_marker_lambda(marker).__code__)).decode()


def _dense_config(config) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")["config"]


def _export(src: Path, out: Path):
    return run_cli("export", src, "-o", out / "m.onnx")


def test_lambda_activation_saved_by_keras_is_refused(case):
    models, out, marker = case
    src = _lambda_activation_model(models / "act.keras", marker)
    before = snapshot(models)
    r = _export(src, out)
    assert_one_line_error(r, 5, "act.keras carries marshalled Python code", "layer 'dense_act' (activation.value)", "--trust")
    assert not marker.exists() and list(out.iterdir()) == [] and snapshot(models) == before


def test_validate_refuses_lambda_activation_source(case):
    models, out, marker = case
    src = _lambda_activation_model(models / "act.keras", marker)
    from tests.conftest import make_linear_onnx

    onnx_model = make_linear_onnx(models / "m.onnx", in_features=3, out_features=4)
    before = snapshot(models)
    r = run_cli("validate", src, onnx_model, "--report", out / "r.md")
    assert_one_line_error(r, 5, "carries marshalled Python code")
    assert not marker.exists() and list(out.iterdir()) == [] and snapshot(models) == before


@pytest.mark.parametrize("form", ["function", "bare-string", "nested-list"])
def test_bytecode_hidden_in_other_shapes_is_refused(form, case):
    """The scan looks for the bytecode, not for the wrappers Keras uses today."""
    models, out, marker = case
    code = _code_string(marker)
    payload = {
        "function": {"module": "builtins", "class_name": "function", "config": code, "registered_name": None},
        "bare-string": code,
        "nested-list": {"value": [[{"deep": [code]}]]},
    }[form]

    def edit(config):
        _dense_config(config)["activation"] = payload

    src = _rewrite_config(_plain_model(models / "plain.keras"), models / "edited.keras", edit)
    r = _export(src, out)
    assert_one_line_error(r, 5, "marshalled Python code", "layer 'dense_act'")
    assert not marker.exists() and list(out.iterdir()) == []


def test_lambda_class_in_activation_keeps_its_message(case):
    models, out, marker = case

    def edit(config):
        _dense_config(config)["activation"] = {"class_name": "__lambda__", "config": {"value": [_code_string(marker), None, None]}}

    src = _rewrite_config(_plain_model(models / "plain.keras"), models / "edited.keras", edit)
    assert_one_line_error(_export(src, out), 5, "Lambda layer ('dense_act')")
    assert not marker.exists()


def _deep(depth: int) -> str:
    return '{"class_name": "Sequential", "config": {"layers": ' + "[" * depth + "]" * depth + "}}"


@pytest.mark.parametrize("depth", [20_000, 200_000])
@pytest.mark.parametrize("member", ["config.json", "metadata.json"])
def test_deeply_nested_keras_json_is_one_line(depth, member, case):
    models, out, _ = case
    src = models / "deep.keras"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("config.json", _deep(depth) if member == "config.json" else json.dumps({"class_name": "Sequential"}))
        zf.writestr("metadata.json", _deep(depth) if member == "metadata.json" else "{}")
        zf.writestr("model.weights.h5", b"")
    before = snapshot(models)
    r = _export(src, out)
    assert_one_line_error(r, 2, f"{member} is nested {depth + 2:,} levels deep", "corrupt or hostile")
    assert list(out.iterdir()) == [] and snapshot(models) == before


def test_deeply_nested_h5_config_is_one_line(case):
    h5py = pytest.importorskip("h5py")
    models, out, _ = case
    src = models / "deep.h5"
    with h5py.File(src, "w") as f:
        f.attrs["model_config"] = _deep(50_000)
    r = _export(src, out)
    assert_one_line_error(r, 2, "model_config is nested 50,002 levels deep")
    assert list(out.iterdir()) == []


def test_h5_config_that_is_not_text_is_one_line(case):
    h5py = pytest.importorskip("h5py")
    import numpy as np

    models, out, _ = case
    src = models / "numbers.h5"
    with h5py.File(src, "w") as f:
        f.attrs["model_config"] = np.arange(5)
    assert_one_line_error(_export(src, out), 2, "model_config is a ndarray, not JSON text")


def test_config_json_zip_bomb_is_refused_unread(case, monkeypatch):
    from onnxkit.frameworks import keras_scan

    monkeypatch.setattr(keras_scan, "MAX_CONFIG_BYTES", 1000)
    models, out, _ = case
    src = models / "big.keras"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", '{"pad": "' + " " * 5000 + '"}')
    assert_one_line_error(_export(src, out), 2, "config.json unpacks to 5,011 bytes")


def test_ordinary_strings_are_not_taken_for_code():
    from onnxkit.frameworks.keras_scan import bytecode_sites, is_marshalled_code

    assert is_marshalled_code(_code_string(Path("/nonexistent")))
    benign = ["relu", "dense_1", "A" * 64, "Yw" + "A" * 62, "c2VyaWFsaXplZF9rZXJhc19tb2RlbA==", "glorot_uniform"]
    assert not any(is_marshalled_code(s) for s in benign)
    config = {"class_name": "Dense", "config": {"name": "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo=", "activation": "relu"}}
    assert bytecode_sites(config) == []


def test_plain_model_is_not_refused(case):
    models, out, _ = case
    src = _plain_model(models / "plain.keras")
    r = run_cli("export", src, "-o", out / "m.onnx", "--no-validate", "--json")
    assert r.code == 0, r
    assert (out / "m.onnx").exists()
