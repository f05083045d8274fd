"""The fp16/int8/int4 presets judge scale, not only direction: cosine is blind to a
candidate multiplied by a constant, and for one value per sample it is only the sign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.foundation.compare import compare_once, make_tolerance

def _scaled(path: Path, width: int | None, factor: float) -> Path:
    """x[n,8] -> y = (x @ W) * factor, y of shape [n, width] (or [n] when width is None);
    W is the same for every call, so two models differ by ``factor`` only."""
    w = np.random.default_rng(1).standard_normal((8, width or 1)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "f"], ["y" if width else "y2"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(factor, np.float32), "f")]
    out_shape: list = ["n", width] if width else ["n"]
    if not width:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
        nodes.append(helper.make_node("Reshape", ["y2", "flat"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("preset", ["fp16", "int8", "int4"])
@pytest.mark.parametrize("width", [None, 1, 3, 16])
def test_a_candidate_off_by_a_scale_factor_fails_every_lossy_preset(cli, tmp_path, preset, width):
    ref = _scaled(tmp_path / "ref.onnx", width, 1.0)
    cand = _scaled(tmp_path / "cand.onnx", width, 7.0)
    r = cli("validate", ref, cand, "--preset-tol", preset, "--json")
    assert r.code == 1, r
    problems = " ".join(p for o in r.json["outputs"] for p in o["problems"])
    if width and width > 4:
        assert "relative error" in problems and "scale" in problems, problems
    else:
        assert "out of tolerance" in problems, problems
    same = _scaled(tmp_path / "same.onnx", width, 1.0)
    assert cli("validate", ref, same, "--preset-tol", preset).code == 0


def _noisy(ref: np.ndarray, rel: float, seed: int = 0) -> np.ndarray:
    """ref plus noise whose norm is ``rel`` times the reference's, row by row."""
    noise = np.random.default_rng(seed).standard_normal(ref.shape)
    noise *= rel * np.linalg.norm(ref, axis=-1, keepdims=True) / np.linalg.norm(noise, axis=-1, keepdims=True)
    return (ref + noise).astype(np.float32)


@pytest.mark.parametrize(("preset", "rel"), [("fp16", 0.02), ("int8", 0.1), ("int4", 0.15)])
def test_quantization_like_noise_on_wide_rows_still_passes(preset, rel):
    # The noise a cosine floor admits, far beyond what the measured quantizations show
    # (docs/validation.md): the scale bound must not fail what the cosine accepts.
    ref = np.random.default_rng(3).standard_normal((32, 384)).astype(np.float32)
    [res] = compare_once({"y": ref}, {"y": _noisy(ref, rel)}, make_tolerance(preset=preset))
    assert res.passed, res.problems
    [res] = compare_once({"y": ref}, {"y": ref * 1.5}, make_tolerance(preset=preset))
    assert not res.passed and "relative error" in res.problems[0]


def test_a_sign_flip_on_a_one_value_output_was_all_cosine_saw_now_values_decide():
    ref = np.linspace(1, 5, 20, dtype=np.float32).reshape(20, 1)
    [res] = compare_once({"y": ref}, {"y": ref * 3}, make_tolerance(preset="int8"))
    assert not res.passed and res.cosine == 1.0  # cosine alone would have passed it
    [res] = compare_once({"y": ref}, {"y": ref + 0.05}, make_tolerance(preset="int8"))
    assert res.passed, res.problems


def test_fp32_and_an_explicit_tolerance_are_unchanged():
    tol = make_tolerance(preset="fp32")
    assert tol.max_rel_error is None and tol.min_cosine is None
    assert make_tolerance(preset="int8").to_dict()["max_rel_error"] == 0.2


def test_a_relaxed_cosine_floor_relaxes_the_scale_bound_with_it():
    # A config's quantize.min_cosine = 0.95 admits errors up to sqrt(1/0.95^2 - 1) = 0.33
    # orthogonal to the output: the int8 bound (0.2) must not fail what that floor accepts.
    tol = make_tolerance(preset="int8", min_cosine=0.95)
    assert tol.max_rel_error == pytest.approx(0.3287, abs=1e-3)
    ref = np.random.default_rng(4).standard_normal((16, 64)).astype(np.float32)
    [res] = compare_once({"y": ref}, {"y": _noisy(ref, 0.3)}, tol)
    assert res.passed, res.problems
    [res] = compare_once({"y": ref}, {"y": ref * 2}, tol)
    assert not res.passed
    assert make_tolerance(preset="int8", min_cosine=0.999).max_rel_error == 0.2


def _mlp(path: Path) -> Path:
    """x[n,64] -> MatMul 64x128 -> Relu -> MatMul 128x32 (wide enough for int4 blocks)."""
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((64, 128)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((128, 32)) / 11).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize(("mode", "preset"), [("dynamic", "int8"), ("int4", "int4"), ("fp16", "fp16")])
def test_real_quantizations_still_pass_their_preset(cli, tmp_path, mode, preset):
    m = _mlp(tmp_path / "mlp.onnx")
    q = tmp_path / f"mlp.{mode}.onnx"
    r = cli("quantize", m, "-o", q, "--mode", mode)
    assert r.code == 0, r
    v = cli("validate", m, q, "--preset-tol", preset, "--json")
    assert v.code == 0, v
    [out] = v.json["outputs"]
    assert out["rel_error"] < v.json["tolerance"]["max_rel_error"] / 2, out
