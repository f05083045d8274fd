"""validate on Ray: the mergeable comparison (no Ray needed), then local vs Ray runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxkit.foundation.compare import Comparator, Tolerance, make_tolerance
from onnxkit.foundation.compare_merge import ExactSum, MergeableComparator, RelativeErrorSketch, SKETCH_ALPHA, merge_all

EXACT_FIELDS = (
    "name", "reference_name", "ref_shape", "cand_shape", "ref_dtype", "cand_dtype", "kind", "atol", "rtol",
    "elements", "max_abs", "max_rel", "rel_error", "mean_abs", "p99_abs", "out_of_tol", "out_of_tol_share",
    "worst_index", "worst_ref", "worst_cand", "cosine", "cosine_min", "label_agreement", "top1_agreement",
    "topk_agreement", "topk", "nan_mismatch", "passed", "problems", "warnings", "warning_codes",
)


def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


def _batches(rows: int, seed: int, *, width: int = 3, nan: bool = False):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((rows, width)).astype(np.float32)
    cand = ref + rng.standard_normal((rows, width)).astype(np.float32) * np.float32(3e-5)
    labels = rng.integers(0, 3, rows)
    cand_labels = np.where(rng.random(rows) < 0.05, (labels + 1) % 3, labels)
    if nan and rows > 2:
        cand[1, 0] = np.nan
    return {"probabilities": ref, "label": labels}, {"probabilities": cand, "label": cand_labels}


def _split(ref, cand, cuts):
    edges = [0, *sorted(cuts), len(next(iter(ref.values())))]
    return [({k: v[a:b] for k, v in ref.items()}, {k: v[a:b] for k, v in cand.items()}, a)
            for a, b in zip(edges, edges[1:]) if b > a]


def _states(pieces, tol):
    out = []
    for r, c, first in pieces:
        s = MergeableComparator(tol, first_row=first)
        s.add(r, c)
        out.append(s)
    return out


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(2, 300), cuts=st.lists(st.integers(1, 299), max_size=6, unique=True),
       seed=st.integers(0, 5), order_seed=st.integers(0, 1000), nan=st.booleans())
def test_merging_in_any_split_and_order_equals_one_pass(rows, cuts, seed, order_seed, nan):
    ref, cand = _batches(rows, seed, nan=nan)
    tol = make_tolerance(None, None, "fp32")
    one = MergeableComparator(tol)  # what local validate uses
    one.add(ref, cand)
    expected = {o.name: o.to_dict() for o in one.results()}
    plain = Comparator(tol)
    plain.add(ref, cand)
    for o in plain.results():  # the plain comparator differs at most by the rounding of its sums
        for key in EXACT_FIELDS:
            if key in ("mean_abs", "rel_error") and o.to_dict()[key] is not None:
                assert o.to_dict()[key] == pytest.approx(expected[o.name][key], rel=1e-12)
            else:
                assert _same(o.to_dict()[key], expected[o.name][key]), key
    pieces = _split(ref, cand, [c for c in cuts if c < rows])
    states = _states(pieces, tol)
    np.random.default_rng(order_seed).shuffle(states)
    merged = merge_all(states)
    assert merged.rows == rows and merged.batches == len(pieces)
    got = {o.name: o.to_dict() for o in merged.results()}
    for name, exp in expected.items():
        for key in EXACT_FIELDS:
            assert _same(got[name][key], exp[key]), (name, key, got[name][key], exp[key])


def test_states_compared_before_their_place_is_known_shift_into_place():
    ref, cand = _batches(50, 1)
    cand["probabilities"][37, 2] += 1.0
    tol = Tolerance()
    a = MergeableComparator(tol)
    a.add({k: v[:30] for k, v in ref.items()}, {k: v[:30] for k, v in cand.items()})
    b = MergeableComparator(tol)  # a second shard, compared from row 0
    b.add({k: v[30:] for k, v in ref.items()}, {k: v[30:] for k, v in cand.items()})
    b.shift_rows(a.row_count)
    res = {o.name: o for o in merge_all([b, a]).results()}
    assert res["probabilities"].worst_index == [37, 2]
    assert not res["probabilities"].passed


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False, allow_subnormal=False), min_size=1, max_size=400),
       st.sampled_from([0.5, 0.9, 0.99, 1.0]), st.integers(1, 5))
def test_sketch_percentiles_within_the_stated_bound(values, q, parts):
    arr = np.asarray(values)
    sketches = []
    for chunk in np.array_split(arr, parts):
        s = RelativeErrorSketch()
        s.add(chunk)
        sketches.append(s)
    merged = sketches.pop()
    for s in sketches:
        merged.merge(s)
    exact = float(np.percentile(arr, 100 * q))
    assert abs(merged.quantile(q) - exact) <= SKETCH_ALPHA * exact + 1e-30


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), max_size=200), st.integers(0, 200))
def test_exact_sum_is_the_correctly_rounded_total_for_any_split(values, cut):
    import math

    a, b = ExactSum(), ExactSum()
    a.add(np.asarray(values[:cut], dtype=np.float64))
    b.add(np.asarray(values[cut:], dtype=np.float64))
    b.merge(a)
    assert b.value() == math.fsum(values)


def test_p99_past_the_exact_limit_comes_from_the_sketch(monkeypatch):
    import onnxkit.foundation.compare_merge as cm

    monkeypatch.setattr(cm, "EXACT_P99_LIMIT", 500)
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((400, 4))
    cand = ref + rng.exponential(1e-6, (400, 4))
    diffs = np.abs(cand - ref).ravel()
    states = _states(_split({"y": ref}, {"y": cand}, [100, 150, 333]), Tolerance())
    merged = merge_all(states).results()[0]
    exact = float(np.percentile(diffs, 99))
    assert merged.p99_abs != exact and abs(merged.p99_abs - exact) <= SKETCH_ALPHA * exact
