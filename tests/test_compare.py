"""The comparator against plain numpy: metrics, allclose semantics, streaming, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxkit.foundation.compare import PRESETS, Comparator, Tolerance, compare_once, make_tolerance, match_outputs
from onnxkit.errors import InputError, UsageError


def _pair(seed: int = 0, shape=(64, 10), noise: float = 1e-4):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(shape).astype(np.float32)
    cand = (ref + rng.standard_normal(shape) * noise).astype(np.float32)
    return ref, cand


def test_metrics_agree_with_numpy():
    ref, cand = _pair()
    ref[0, 0] = 0.0  # a zero reference must not make the relative error infinite
    tol = Tolerance(atol=1e-4, rtol=1e-3)
    c = compare_once({"y": ref}, {"y": cand}, tol)[0]
    r, k = ref.astype(np.float64), cand.astype(np.float64)
    d = np.abs(k - r)
    nz = r != 0
    assert c.max_abs == pytest.approx(d.max(), rel=1e-12)
    assert c.max_rel == pytest.approx((d[nz] / np.abs(r[nz])).max(), rel=1e-9)
    assert c.mean_abs == pytest.approx(d.mean(), rel=1e-9)
    assert c.p99_abs == pytest.approx(np.percentile(d, 99), rel=1e-5)
    expected_bad = int((~np.isclose(k, r, atol=1e-4, rtol=1e-3)).sum())
    assert expected_bad > 0
    assert c.out_of_tol == expected_bad
    assert c.out_of_tol_share == pytest.approx(expected_bad / ref.size)
    worst = np.unravel_index(np.argmax(d - (1e-4 + 1e-3 * np.abs(r))), r.shape)
    assert c.worst_index == [int(i) for i in worst]
    assert c.worst_ref == pytest.approx(float(ref[worst])) and c.worst_cand == pytest.approx(float(cand[worst]))
    cos = (r * k).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(k, axis=1))
    assert c.cosine == pytest.approx(cos.mean(), rel=1e-12)
    assert c.cosine_min == pytest.approx(cos.min(), rel=1e-12)
    assert c.passed is False
    assert "out of tolerance" in c.problems[0]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=40),
    st.floats(0, 1e-1), st.floats(0, 1e-1), st.integers(0, 2**31),
)
def test_pass_fail_is_numpy_allclose(values, atol, rtol, seed):
    ref = np.array(values, dtype=np.float32)
    rng = np.random.default_rng(seed)
    cand = (ref + rng.standard_normal(ref.shape).astype(np.float32) * np.float32(0.05)).astype(np.float32)
    c = compare_once({"y": ref}, {"y": cand}, Tolerance(atol=atol, rtol=rtol))[0]
    assert c.passed == bool(np.allclose(cand.astype(np.float64), ref.astype(np.float64), atol=atol, rtol=rtol))
    assert c.max_abs == pytest.approx(float(np.abs(cand.astype(np.float64) - ref).max()), abs=0, rel=1e-12)


def test_streaming_in_batches_matches_one_batch():
    ref, cand = _pair(1, (100, 7), 3e-4)
    tol = Tolerance(atol=1e-4, rtol=1e-3)
    one = compare_once({"y": ref}, {"y": cand}, tol)[0]
    comp = Comparator(tol)
    for i in range(0, 100, 16):
        comp.add({"y": ref[i : i + 16]}, {"y": cand[i : i + 16]})
    many = comp.results()[0]
    for key in ("max_abs", "max_rel", "out_of_tol", "worst_index", "worst_ref", "worst_cand", "ref_shape"):
        assert getattr(many, key) == getattr(one, key), key
    for key in ("mean_abs", "p99_abs", "cosine", "cosine_min"):
        assert getattr(many, key) == pytest.approx(getattr(one, key), rel=1e-9), key


def test_nan_or_inf_on_one_side_fails_and_same_nan_passes():
    ref = np.array([[1.0, np.nan, np.inf]], dtype=np.float32)
    same = compare_once({"y": ref}, {"y": ref.copy()})[0]
    assert same.passed, same.problems
    cand = np.array([[1.0, 2.0, np.inf]], dtype=np.float32)
    c = compare_once({"y": ref}, {"y": cand})[0]
    assert not c.passed and c.nan_mismatch == 1 and c.worst_index == [0, 1]
    flipped = compare_once({"y": ref}, {"y": np.array([[1.0, np.nan, -np.inf]], dtype=np.float32)})[0]
    assert not flipped.passed and "NaN/Inf" in flipped.problems[0]


def test_shape_mismatch_and_empty_outputs_fail_instead_of_broadcasting():
    ref = np.ones((4, 3), np.float32)
    c = compare_once({"y": ref}, {"y": np.ones((1, 3), np.float32)})[0]
    assert not c.passed and "shape mismatch" in c.problems[0]
    e = compare_once({"y": np.ones((0, 3), np.float32)}, {"y": np.ones((0, 3), np.float32)})[0]
    assert not e.passed and "empty" in e.problems[0]


def test_dtype_kind_mismatch_fails_but_width_only_warns():
    ref = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert compare_once({"y": ref}, {"y": ref.astype(np.float32)})[0].passed
    w = compare_once({"y": ref}, {"y": ref.astype(np.float32)})[0]
    assert "width" in w.warnings[0]
    c = compare_once({"y": ref}, {"y": ref.astype(np.int64)})[0]
    assert not c.passed and "dtype differs" in c.problems[0]


def test_labels_compare_exactly_with_agreement_and_scores_get_topk():
    labels = np.array([0, 1, 2, 1], dtype=np.int64)
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]], np.float32)
    cand_probs = probs.copy()
    cand_probs[3] = [0.41, 0.39, 0.2]  # flips the top-1 of the last row
    res = compare_once(
        {"label": labels, "probabilities": probs},
        {"label": np.array([0, 1, 2, 0], np.int64), "probabilities": cand_probs},
        Tolerance(atol=0.5, rtol=0.0),
    )
    lab, pr = res
    assert lab.kind == "label" and lab.label_agreement == pytest.approx(0.75) and not lab.passed
    assert lab.worst_index == [3] and lab.worst_ref == 1 and lab.worst_cand == 0
    assert pr.top1_agreement == pytest.approx(0.75) and pr.topk_agreement == pytest.approx(1.0) and pr.topk == 2
    assert pr.passed  # within the loose atol; labels are not forgiven by atol
    strings = compare_once({"c": np.array(["a", "b"])}, {"c": np.array(["a", "b"], dtype=object)})[0]
    assert strings.passed and strings.label_agreement == 1.0


def test_declared_label_outputs_are_exact_even_as_floats():
    ref = {"pred": np.array([1.0, 2.0], np.float32)}
    c = Comparator(Tolerance(atol=1.0), label_outputs=("pred",))
    c.add(ref, {"pred": np.array([1.0, 2.5], np.float32)})
    out = c.results()[0]
    assert out.kind == "label" and not out.passed


def test_fp16_preset_judges_float_outputs_by_cosine():
    ref, cand = _pair(2, (16, 32), 3e-2)
    tol = make_tolerance(preset="fp16")
    c = compare_once({"y": ref}, {"y": cand}, tol)[0]
    assert c.out_of_tol > 0 and c.passed  # element-wise drift, direction kept
    bad = compare_once({"y": ref}, {"y": -ref}, tol)[0]
    assert not bad.passed and "cosine" in bad.problems[0]


def test_make_tolerance_parses_cli_values():
    t = make_tolerance(["1e-3", "logits=0.5:0.1", "hidden*=2e-2"], rtol="1e-2")
    assert (t.atol, t.rtol) == (1e-3, 1e-2)
    assert t.for_output("logits") == (0.5, 0.1)
    assert t.for_output("hidden_state") == (2e-2, 1e-2)
    assert t.for_output("other") == (1e-3, 1e-2)
    d = make_tolerance()
    assert (d.atol, d.rtol) == (PRESETS["fp32"]["atol"], PRESETS["fp32"]["rtol"]) == (Tolerance().atol, Tolerance().rtol)
    assert make_tolerance(preset="int8").min_cosine == 0.99


@pytest.mark.parametrize(
    ("tol", "rtol", "preset", "message"),
    [
        (["abc"], None, None, "tolerance 'abc' is not a number"),
        (["-1e-3"], None, None, "must be finite and non-negative"),
        (["nan"], None, None, "must be finite and non-negative"),
        (["inf"], None, None, "must be finite and non-negative"),
        (["=1e-3"], None, None, "malformed --tol"),
        (["x="], None, None, "malformed --tol"),
        (["x=1e-3:"], None, None, "malformed --tol"),
        (None, "-0.1", None, "--rtol '-0.1' must be finite"),
        (None, None, "bf17", "unknown tolerance preset 'bf17'"),
    ],
)
def test_make_tolerance_refuses_bad_values(tol, rtol, preset, message):
    with pytest.raises(UsageError) as exc:
        make_tolerance(tol, rtol, preset)
    assert message in exc.value.message
    assert exc.value.exit_code == 2


def test_match_outputs_by_name_then_position_and_count_mismatch():
    assert match_outputs(["a", "b"], ["b", "a"]) == [("b", "b"), ("a", "a")]
    assert match_outputs(["output_0", "output_1"], ["logits", "hidden"]) == [("output_0", "logits"), ("output_1", "hidden")]
    assert match_outputs(["a", "x"], ["y", "a"]) == [("x", "y"), ("a", "a")]
    with pytest.raises(InputError) as exc:
        match_outputs(["a", "b"], ["a"])
    assert exc.value.message == "output count differs: reference has 2 (a, b), candidate has 1 (a)"


def test_no_batches_is_not_a_pass():
    with pytest.raises(InputError):
        Comparator(Tolerance()).results()


def test_large_outputs_fall_back_to_histogram_p99(monkeypatch):
    import onnxkit.foundation.compare as C

    monkeypatch.setattr(C, "EXACT_P99_LIMIT", 100)
    ref, cand = _pair(3, (50, 10), 1e-3)
    c = Comparator(Tolerance(atol=1.0))
    for i in range(0, 50, 5):
        c.add({"y": ref[i : i + 5]}, {"y": cand[i : i + 5]})
    p99 = c.results()[0].p99_abs
    exact = float(np.percentile(np.abs(cand.astype(np.float64) - ref), 99))
    assert math.isclose(p99, exact, rel_tol=0.05)
