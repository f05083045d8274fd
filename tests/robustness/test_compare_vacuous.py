"""The comparator never passes vacuously (numpy.allclose does: empty arrays, broadcasting)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxkit.foundation.compare import Comparator, Tolerance, compare_once
from onnxkit.errors import InputError


def _one(ref, cand):
    [res] = compare_once({"y": np.asarray(ref)}, {"y": np.asarray(cand)}, Tolerance())
    return res


def test_allclose_is_vacuous_here_but_compare_is_not():
    assert np.allclose(np.zeros((0, 3)), np.ones((0, 3)))
    res = _one(np.zeros((0, 3), np.float32), np.ones((0, 3), np.float32))
    assert not res.passed and any("empty" in p for p in res.problems)


def test_broadcast_shapes_fail():
    ref = np.ones((4, 3), np.float32)
    cand = np.ones((1, 3), np.float32)
    assert np.allclose(ref, cand)  # numpy broadcasts
    res = _one(ref, cand)
    assert not res.passed and any("shape mismatch" in p for p in res.problems)
    res = _one(np.ones((3,), np.float32), np.ones((), np.float32))
    assert not res.passed


def test_one_sided_nan_fails():
    res = _one(np.array([1.0, 2.0], np.float32), np.array([1.0, np.nan], np.float32))
    assert not res.passed and res.nan_mismatch == 1


def test_no_batches_refused():
    with pytest.raises(InputError, match="vacuous"):
        Comparator(Tolerance()).results()


def test_equal_arrays_pass():
    assert _one(np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(6, dtype=np.float32).reshape(2, 3)).passed
