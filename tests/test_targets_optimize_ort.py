"""`optimize MODEL.onnx -o model.ort`: the ORT format with its reduced-operator config, run in
ONNX Runtime and compared with the input before it is published; bad cases write nothing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.test_targets import cnn, fused  # noqa: F401  (fixtures)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_ort_output_is_written_with_its_config_and_runs_like_the_input(cli, cnn, tmp_path):  # noqa: F811
    import onnxruntime as ort

    from onnxkit.runtime.ort_format import is_ort_file

    before = cnn.read_bytes()
    out = tmp_path / "cnn.ort"
    r = cli("optimize", cnn, "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert is_ort_file(out) and not is_ort_file(cnn)
    config = tmp_path / "cnn.required_operators.config"
    text = config.read_text()
    assert text.startswith("# Generated from model/s:\n# - cnn.ort\n")  # not the temporary path
    assert "ai.onnx;" in text and r.json["ort"]["required_operators"] == [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert r.json["ort"]["written"] is True and r.json["ort"]["level"] == "all"
    assert r.json["output"] == str(out) and r.json["size_after"] == out.stat().st_size
    assert r.json["validated"] is True and r.json["validation"]["passed"] is True
    assert cnn.read_bytes() == before
    assert _names(tmp_path) == ["cnn.onnx", "cnn.ort", "cnn.required_operators.config"]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(str(cnn), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.max(np.abs(got - want)) <= 1e-4


def test_graph_passes_apply_before_the_conversion(cli, fused, tmp_path):  # noqa: F811
    out = tmp_path / "fused.ort"
    r = cli("optimize", fused, "-o", out, "--level", "basic", "--json")
    assert r.code == 0, r.stderr
    assert r.json["ort"]["level"] == "basic"
    assert any(line.startswith("com.microsoft;1;") and "SkipLayerNormalization" in line
               for line in r.json["ort"]["required_operators"])


def test_an_ort_file_as_input_is_exit_2(cli, cnn, tmp_path):  # noqa: F811
    out = tmp_path / "cnn.ort"
    assert cli("optimize", cnn, "-o", out).code == 0
    renamed = tmp_path / "looks_like.onnx"  # an ORT file whatever its name
    shutil.copyfile(out, renamed)
    before = _names(tmp_path)
    for src in (out, renamed):
        r = cli("optimize", src, "-o", tmp_path / "again.ort")
        assert r.code == 2
        assert r.stderr.startswith(f"Error: {src.name} is already in the ORT format")
    assert _names(tmp_path) == before


def test_an_op_onnx_runtime_has_no_kernel_for_is_exit_4_naming_it(cli, tmp_path):
    node = helper.make_node("Erf", ["x"], ["y"], name="erf0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    src = tmp_path / "erf.onnx"
    onnx.save(model, str(src))
    r = cli("optimize", src, "-o", tmp_path / "erf.ort", "--trust", "--no-validate")
    assert r.code == 4
    assert r.stderr.strip() == "Error: conversion to the ORT format failed: no ONNX Runtime kernel for Erf (node erf0)"
    assert _names(tmp_path) == ["erf.onnx"]


def test_disagreement_publishes_nothing(cli, cnn, tmp_path, monkeypatch):  # noqa: F811
    from onnxkit.operations import optimize as opt

    real = opt.validate_pair

    def failing(*args, **kwargs):
        v = real(*args, **kwargs)
        v.passed = False
        return v

    monkeypatch.setattr(opt, "validate_pair", failing)
    out = tmp_path / "cnn.ort"
    r = cli("optimize", cnn, "-o", out, "--json")
    assert r.code == 1
    assert r.json["ort"]["written"] is False
    assert any(n == "cnn.ort was not written: the ORT-format model disagrees with the input" for n in r.json["notes"])
    assert _names(tmp_path) == ["cnn.onnx"]


@pytest.mark.parametrize("case", ["config_is_input", "auto", "level", "no_folder", "directory"])
def test_bad_ort_outputs_are_refused_before_any_work(cli, cnn, tmp_path, case):  # noqa: F811
    args, message, code = {
        "auto": (["-o", tmp_path / "m.ort", "--auto"], "--auto writes an ONNX model", 2),
        "level": (["-o", tmp_path / "m.ort", "--level", "max"], "unknown --level 'max'", 2),
        "no_folder": (["-o", tmp_path / "nope" / "m.ort"], "output folder does not exist", 3),
        "directory": (["-o", tmp_path / "d.ort"], "output is a directory", 2),
        "config_is_input": (["-o", tmp_path / "cnn.ort"], "would overwrite the input", 2),
    }[case]
    src = cnn
    (tmp_path / "d.ort").mkdir()
    if case == "config_is_input":  # the config ONNX Runtime names after the output is the input itself
        src = tmp_path / "cnn.required_operators.config"
        cnn.rename(src)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    r = cli("optimize", src, *args)
    assert r.code == code, r.stderr
    assert r.stderr.startswith("Error: ") and message in r.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert _names(tmp_path / "d.ort") == []
