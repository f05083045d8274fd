"""Comparisons that merge: each batch (or shard) compared on its own, anywhere (a Ray actor,
another process), and the pieces combined into exactly what one pass over all batches gives.

:class:`MergeableComparator` is :class:`~onnxkit.foundation.compare.Comparator` with two
changes: sums are kept exactly (:class:`ExactSum`), so a mean does not depend on where
the batches were cut, and past ``EXACT_P99_LIMIT`` differences the p99 comes from a
:class:`RelativeErrorSketch`, which merges by adding counts. Local ``validate`` uses it too, so
the local and the distributed paths compute the same figures by construction.

What merges exactly (bit for bit, whatever the split and the merge order): element and
failure counts, NaN/Inf mismatches, max abs and max rel diff, mean abs diff, the relative
error norm, label/top-1/top-k agreement, the worst element (ties go to the earlier row), the
mean and minimum cosine, shapes, dtypes, problems and warnings. The p99 is exact up to
``EXACT_P99_LIMIT`` elements (the differences themselves are kept) and within the sketch's
bound beyond.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import numpy as np

from onnxkit.errors import InputError
from onnxkit.foundation.compare import EXACT_P99_LIMIT, Comparator, OutputComparison, _OutputAccumulator

# 0.5% relative error: about 2,800 buckets cover differences from 1e-12 to 1e12.
SKETCH_ALPHA = 0.005
# Below this a difference counts as zero (exact for true zeros, off by at most this otherwise).
SKETCH_FLOOR = 1e-30


class RelativeErrorSketch:
    """A mergeable quantile sketch of non-negative values with a relative error bound.

    A value x > ``SKETCH_FLOOR`` goes to bucket ``ceil(log(x) / log(gamma))`` with
    ``gamma = (1 + alpha) / (1 - alpha)``; a bucket stands for ``2 gamma^i / (gamma + 1)``, which
    lies within ``alpha * x`` of every x of that bucket. Values at or below the floor are kept
    as zeros. ``quantile(q)`` locates the two order statistics numpy's linear interpolation
    uses (ranks ``floor(q (n-1))`` and ``ceil(q (n-1))``) and interpolates their bucket values, so

        |quantile(q) - numpy.percentile(values, 100 q)| <= alpha * numpy.percentile(values, 100 q)
                                                          + SKETCH_FLOOR

    Counts add on merge, so merging in any order gives the same sketch.
    """

    def __init__(self, alpha: float = SKETCH_ALPHA) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must lie in (0, 1)")
        self.alpha = alpha
        self.log_gamma = math.log((1 + alpha) / (1 - alpha))
        self.zeros = 0
        self.counts: dict[int, int] = {}

    @property
    def count(self) -> int:
        return self.zeros + sum(self.counts.values())

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        small = v <= SKETCH_FLOOR
        self.zeros += int(small.sum())
        big = v[~small]
        if big.size:
            keys, n = np.unique(np.ceil(np.log(big) / self.log_gamma).astype(np.int64), return_counts=True)
            for k, c in zip(keys.tolist(), n.tolist()):
                self.counts[k] = self.counts.get(k, 0) + c

    def merge(self, other: RelativeErrorSketch) -> None:
        if other.alpha != self.alpha:
            raise ValueError("cannot merge sketches of different accuracy")
        self.zeros += other.zeros
        for k, c in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + c

    def _value(self, key: int) -> float:
        gamma = math.exp(self.log_gamma)
        return 2.0 * math.exp(key * self.log_gamma) / (gamma + 1.0)

    def _at_rank(self, rank: int, keys: list[int], cum: np.ndarray) -> float:
        if rank < self.zeros:
            return 0.0
        i = int(np.searchsorted(cum, rank - self.zeros, side="right"))
        return self._value(keys[min(i, len(keys) - 1)])

    def quantile(self, q: float) -> float:
        n = self.count
        if n == 0:
            return 0.0
        keys = sorted(self.counts)
        cum = np.cumsum([self.counts[k] for k in keys]) if keys else np.zeros(0, dtype=np.int64)
        pos = q * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        a = self._at_rank(lo, keys, cum)
        b = self._at_rank(hi, keys, cum) if hi != lo else a
        return a + (pos - lo) * (b - a)


class ExactSum:
    """The exact sum of float64 values, kept as integer mantissa sums per binary exponent so
    that it merges without rounding: the value is the correctly rounded total, the same for
    any split of the values and any merge order."""

    _CHUNK = 1 << 24  # float64 bincounts of 27-bit integers stay exact up to 2^26 of them
    _EXP_SHIFT = 1100
    _EXP_SLOTS = 2200

    def __init__(self) -> None:
        self.by_exp: dict[int, int] = {}
        self.nonfinite = 0.0  # inf or nan seen: the sum is that

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        bad = ~np.isfinite(v)
        if bad.any():
            self.nonfinite = float(np.sum(v[bad])) + self.nonfinite
            v = v[~bad]
        for start in range(0, v.size, self._CHUNK):
            self._add_chunk(v[start:start + self._CHUNK])

    def _add_chunk(self, v: np.ndarray) -> None:
        frac, exp = np.frexp(v)
        m = (frac * float(1 << 53)).astype(np.int64)  # exact: a float64 has 53 significant bits
        hi, lo = m >> 27, m & ((1 << 27) - 1)
        # float64 exponents from frexp lie in [-1073, 1024]: shifted, they index a bincount.
        slot = exp.astype(np.int64) + self._EXP_SHIFT
        hs = np.bincount(slot, weights=hi, minlength=self._EXP_SLOTS)
        ls = np.bincount(slot, weights=lo, minlength=self._EXP_SLOTS)
        for i in np.flatnonzero((hs != 0) | (ls != 0)).tolist():
            e = i - self._EXP_SHIFT
            self.by_exp[e] = self.by_exp.get(e, 0) + (int(hs[i]) << 27) + int(ls[i])

    def merge(self, other: ExactSum) -> None:
        for e, n in other.by_exp.items():
            self.by_exp[e] = self.by_exp.get(e, 0) + n
        self.nonfinite = self.nonfinite + other.nonfinite

    def value(self) -> float:
        if self.nonfinite:
            return self.nonfinite
        if not self.by_exp:
            return 0.0
        from fractions import Fraction

        low = min(self.by_exp) - 53
        total = sum(n << (e - 53 - low) for e, n in self.by_exp.items())
        return float(Fraction(total) * Fraction(2) ** low)


class _MergeableOutput(_OutputAccumulator):
    """One output's accumulator whose state merges with a later one's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.exact_abs = ExactSum()  # |cand - ref| over finite pairs
        self.exact_sq_diff = ExactSum()
        self.exact_sq_ref = ExactSum()
        self.sketch: RelativeErrorSketch | None = None
        # Rows of the batches that set or grew the shape, by rank: a later batch grows the
        # first batch's row count only when its rank is the same (as Comparator does).
        self.good_rows: dict[int, int] = {}

    def add(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        ref, cand = np.asarray(ref), np.asarray(cand)
        super().add(ref, cand, row_offset)
        if ref.shape == cand.shape and ref.size and ref.ndim:
            self.good_rows[ref.ndim] = self.good_rows.get(ref.ndim, 0) + int(ref.shape[0])

    def _add_numeric(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        super()._add_numeric(ref, cand, row_offset)
        r = ref.astype(np.float64)
        k = cand.astype(np.float64)
        both = np.isfinite(r) & np.isfinite(k)
        if both.any():
            fr = r[both]
            d = np.abs(k[both] - fr)
            self.exact_abs.add(d)
            self.exact_sq_diff.add(np.square(d))
            self.exact_sq_ref.add(np.square(fr))

    def _keep_for_p99(self, d: np.ndarray) -> None:
        self.diff_count += d.size
        if self.sketch is None and self.diff_count <= EXACT_P99_LIMIT:
            self.diffs.append(d.astype(np.float32))
            return
        self._to_sketch()
        self.sketch.add(d)

    def _to_sketch(self) -> None:
        if self.sketch is None:
            self.sketch = RelativeErrorSketch()
            for old in self.diffs:
                self.sketch.add(old)
            self.diffs = []

    def merge(self, later: _MergeableOutput) -> None:
        """Fold in the state of batches that come after this one's (rows further on)."""
        c, o = self.c, later.c
        if not c.ref_dtype:
            c.ref_dtype, c.cand_dtype = o.ref_dtype, o.cand_dtype
        if c.ref_shape is None:
            c.ref_shape = None if o.ref_shape is None else list(o.ref_shape)
            c.cand_shape = None if o.cand_shape is None else list(o.cand_shape)
        else:
            grown = later.good_rows.get(len(c.ref_shape), 0) if c.ref_shape else 0
            if grown:
                c.ref_shape[0] += grown
                c.cand_shape = list(c.ref_shape)
        for rank, rows in later.good_rows.items():
            self.good_rows[rank] = self.good_rows.get(rank, 0) + rows
        if o.kind == "label":
            c.kind = "label"
        c.elements += o.elements
        c.out_of_tol += o.out_of_tol
        c.nan_mismatch += o.nan_mismatch
        c.max_abs = max(c.max_abs, o.max_abs)
        c.max_rel = max(c.max_rel, o.max_rel)
        if o.topk is not None:
            c.topk = o.topk
        if o.worst_index is not None and (c.worst_index is None or later.worst_excess > self.worst_excess):
            self.worst_excess = later.worst_excess
            c.worst_index, c.worst_ref, c.worst_cand = list(o.worst_index), o.worst_ref, o.worst_cand
        if not o.passed:
            c.passed = False
        for p in o.problems:
            if p not in c.problems:
                c.problems.append(p)
        for w in o.warnings:
            self._warn(w)
        for code in o.warning_codes:
            if code not in c.warning_codes:
                c.warning_codes.append(code)
        self.sum_abs += later.sum_abs
        self.exact_abs.merge(later.exact_abs)
        self.exact_sq_diff.merge(later.exact_sq_diff)
        self.exact_sq_ref.merge(later.exact_sq_ref)
        self._merge_p99(later)
        self.row_cos.extend(later.row_cos)
        for name in ("label_eq", "label_n", "top1", "topk", "top_n"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        self.ref_min = min(self.ref_min, later.ref_min)
        self.ref_max = max(self.ref_max, later.ref_max)
        if later.row_width is not None:
            self.row_width = later.row_width if self.row_width is None else min(self.row_width, later.row_width)

    def _merge_p99(self, later: _MergeableOutput) -> None:
        self.diff_count += later.diff_count
        if self.sketch is None and later.sketch is None and self.diff_count <= EXACT_P99_LIMIT:
            self.diffs.extend(later.diffs)
            return
        self._to_sketch()
        if later.sketch is not None:
            self.sketch.merge(later.sketch)
        for d in later.diffs:
            self.sketch.add(d)

    def finish(self, min_cosine, min_agreement, max_rel_error=None) -> OutputComparison:
        # Exactly rounded sums: the same whatever the batch boundaries were.
        self.sum_abs = self.exact_abs.value()
        self.sq_diff = self.exact_sq_diff.value()
        self.sq_ref = self.exact_sq_ref.value()
        sketch, self.hist = self.sketch, None
        c = super().finish(min_cosine, min_agreement, max_rel_error)
        if sketch is not None and not self.diffs:
            c.p99_abs = sketch.quantile(0.99)
        return c


class MergeableComparator(Comparator):
    """A :class:`Comparator` whose state merges with others'. ``first_row`` is the global
    position of its first row (worst-element indices count from there)."""

    accumulator = _MergeableOutput

    def __init__(self, *args, first_row: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_row = first_row
        self.rows = first_row  # Comparator counts rows from here: the next batch's offset

    @property
    def row_count(self) -> int:
        return self.rows - self.first_row

    def shift_rows(self, offset: int) -> None:
        """Move this state ``offset`` rows further (a shard compared before its place was known)."""
        self.first_row += offset
        self.rows += offset
        for acc in self.acc.values():
            if acc.c.worst_index:
                acc.c.worst_index[0] += offset

    def merge(self, later: MergeableComparator) -> None:
        """Fold in a state whose rows come after this one's."""
        if later.pairs is None:
            return
        if self.pairs is None:
            later = copy.deepcopy(later)  # this state goes on growing: never alias the other's
            self.pairs, self.acc, self.notes = later.pairs, later.acc, list(later.notes)
            self.batches, self.rows = later.batches, self.rows + later.row_count
            return
        if later.pairs != self.pairs:
            raise InputError(f"outputs changed between batches: {self.pairs} then {later.pairs}")
        for name, acc in self.acc.items():
            acc.merge(later.acc[name])  # type: ignore[attr-defined]
        self.batches += later.batches
        self.rows += later.row_count


def merge_all(states: Iterable[MergeableComparator]) -> MergeableComparator:
    """Merge states in row order (whatever order they arrive in) into a new one."""
    ordered = sorted(states, key=lambda s: s.first_row)
    if not ordered:
        raise InputError("nothing was compared: no samples; refusing a vacuous pass")
    first = ordered[0]
    out = MergeableComparator(first.tol, label_outputs=first.label_outputs, score_outputs=first.score_outputs,
                              output_map=first.output_map, ordered_outputs=first.ordered_outputs,
                              first_row=first.first_row)
    for s in ordered:
        out.merge(s)
    return out
