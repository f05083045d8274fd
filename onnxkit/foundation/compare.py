"""The one comparator: reference outputs vs candidate outputs, per output, aggregated over
batches so a data set of any size is compared in bounded memory.

Semantics are those of ``numpy.allclose`` (``|cand - ref| <= atol + rtol * |ref|``) but
never vacuous: empty arrays, differing shapes and one-sided NaN/Inf all fail. Integer,
boolean and string outputs (class labels, ids) are compared exactly, as agreement.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

import numpy as np

from onnxkit.errors import InputError, UsageError

# Presets chosen from measurements (docs/validation.md). fp32: a correct torch.onnx export
# of all-MiniLM-L6-v2 run by ONNX Runtime differs from torch by at most 3.5e-6 absolute, which
# uses 10% of (atol=2e-5, rtol=1e-4); one weight element moved by 1e-2 exceeds it 5-7x, where
# the looser (1e-4, 1e-3) would let a perturbed attention weight pass.
# ``min_agreement`` is the share of label elements (integer/bool/string outputs) that must agree.
# ``max_rel_error`` bounds ||cand - ref|| / ||ref|| where a cosine floor decides: cosine is blind
# to scale (a candidate x10 has cosine 1), so the norm of the error must be bounded too.
PRESETS: dict[str, dict[str, float | None]] = {
    "fp32": {"atol": 2e-5, "rtol": 1e-4, "min_cosine": None, "min_agreement": 1.0, "max_rel_error": None},
    "fp16": {"atol": 1e-2, "rtol": 1e-2, "min_cosine": 0.999, "min_agreement": 0.99, "max_rel_error": 0.05},
    "int8": {"atol": 0.5, "rtol": 0.5, "min_cosine": 0.99, "min_agreement": 0.95, "max_rel_error": 0.2},
    "int4": {"atol": 1.0, "rtol": 1.0, "min_cosine": 0.98, "min_agreement": 0.9, "max_rel_error": 0.3},
}
# A row this narrow (elements per sample) has no direction worth a cosine: for one value the
# cosine is the sign, for two or three it barely constrains. Such outputs (regressors, binary
# probabilities, box coordinates) are judged element-wise by atol/rtol in every preset.
NARROW_ROW = 4
DEFAULT_PRESET = "fp32"
# Up to this many elements per output, p99 is exact (the differences are kept as float32,
# 16 MB at most); beyond it a log-spaced histogram estimates it in constant memory. Below
# the limit, streamed and one-batch runs give identical figures.
EXACT_P99_LIMIT = 4_000_000
TOPK = 5
# A reference whose values spread less than this (relative to their magnitude) is constant:
# any candidate that outputs the same constant matches it, so the match proves little.
CONSTANT_SPREAD = 1e-6
REFERENCE_CONSTANT = "reference_constant"


@dataclass(frozen=True)
class Tolerance:
    atol: float = PRESETS[DEFAULT_PRESET]["atol"]  # type: ignore[assignment]
    rtol: float = PRESETS[DEFAULT_PRESET]["rtol"]  # type: ignore[assignment]
    min_cosine: float | None = None
    per_output: tuple[tuple[str, float, float | None], ...] = ()  # (glob, atol, rtol or None)
    preset: str = DEFAULT_PRESET
    min_agreement: float = 1.0
    max_rel_error: float | None = None

    def __post_init__(self) -> None:
        for name, v in (("atol", self.atol), ("rtol", self.rtol)):
            if not math.isfinite(v) or v < 0:
                raise UsageError(f"tolerance {name}={v} must be finite and non-negative")
        if self.min_cosine is not None and not (-1.0 <= self.min_cosine <= 1.0):
            raise UsageError(f"min cosine {self.min_cosine} must lie in [-1, 1]")
        if self.max_rel_error is not None and not (math.isfinite(self.max_rel_error) and self.max_rel_error >= 0):
            raise UsageError(f"max relative error {self.max_rel_error} must be finite and non-negative")
        if not (0.0 <= self.min_agreement <= 1.0):
            raise UsageError(f"min agreement {self.min_agreement} must lie in [0, 1]")
        for pat, a, r in self.per_output:
            if not math.isfinite(a) or a < 0 or (r is not None and (not math.isfinite(r) or r < 0)):
                raise UsageError(f"tolerance for {pat} must be finite and non-negative")

    def for_output(self, name: str, *aliases: str) -> tuple[float, float]:
        """(atol, rtol) for an output; a per-output glob may name either side's output."""
        for pat, a, r in self.per_output:
            if any(fnmatch.fnmatchcase(n, pat) for n in (name, *aliases)):
                return a, self.rtol if r is None else r
        return self.atol, self.rtol

    def to_dict(self) -> dict:
        return {
            "preset": self.preset, "atol": self.atol, "rtol": self.rtol, "min_cosine": self.min_cosine,
            "min_agreement": self.min_agreement, "max_rel_error": self.max_rel_error,
            "per_output": {p: {"atol": a, "rtol": r} for p, a, r in self.per_output},
        }


def _parse_float(text: str, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise UsageError(f"{what} {text!r} must be finite and non-negative")
    return v


def make_tolerance(
    tol: list[str] | None = None,
    rtol: str | float | None = None,
    preset: str | None = None,
    min_cosine: float | None = None,
) -> Tolerance:
    """Build a Tolerance from CLI values: ``--tol 1e-4`` (atol), ``--tol logits=1e-3`` or
    ``--tol logits=1e-3:1e-2`` (per output, glob allowed), ``--rtol``, ``--preset-tol``.

    Explicit values override the preset's; the preset (default fp32) fills the rest."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise UsageError(f"unknown tolerance preset {name!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[name]
    atol = float(base["atol"])  # type: ignore[arg-type]
    rt = float(base["rtol"])  # type: ignore[arg-type]
    cos = base["min_cosine"] if min_cosine is None else min_cosine
    per: list[tuple[str, float, float | None]] = []
    for item in tol or []:
        item = item.strip()
        if "=" in item:
            key, _, val = item.partition("=")
            key = key.strip()
            a_txt, sep, r_txt = val.partition(":")
            if not key or not a_txt.strip() or (sep and not r_txt.strip()):
                raise UsageError(f"malformed --tol {item!r}; expected ATOL or OUTPUT=ATOL[:RTOL]")
            per.append((key, _parse_float(a_txt.strip(), "tolerance"), _parse_float(r_txt.strip(), "relative tolerance") if sep else None))
        elif not item:
            raise UsageError("malformed --tol ''; expected ATOL or OUTPUT=ATOL[:RTOL]")
        else:
            atol = _parse_float(item, "tolerance")
    if rtol is not None:
        rt = _parse_float(str(rtol), "--rtol")
    return Tolerance(
        atol=atol, rtol=rt, min_cosine=cos, per_output=tuple(per), preset=name,
        min_agreement=float(base["min_agreement"]),  # type: ignore[arg-type]
        max_rel_error=_rel_error_bound(base["max_rel_error"], cos),
    )


def _rel_error_bound(preset_bound: float | None, min_cosine: float | None) -> float | None:
    """The preset's relative-error bound, loosened to what a looser cosine floor admits.

    An error orthogonal to the output gives cosine 1/sqrt(1 + e^2), so a floor c lets
    e = sqrt(1/c^2 - 1) through; a relaxed floor (a config's min_cosine = 0.95) must not be
    overruled by a bound meant for the preset's own floor."""
    if min_cosine is None:
        return None
    if min_cosine <= 0:
        return None  # a floor at or below 0 admits any error: no bound to derive
    admitted = math.sqrt(1.0 / min_cosine**2 - 1.0)
    return admitted if preset_bound is None else max(float(preset_bound), admitted)


@dataclass
class OutputComparison:
    """Everything measured about one output over all samples."""

    name: str
    reference_name: str
    ref_shape: list[int] | None = None
    cand_shape: list[int] | None = None
    ref_dtype: str = ""
    cand_dtype: str = ""
    kind: str = "numeric"  # numeric (tolerance) or label (exact agreement)
    atol: float = 0.0
    rtol: float = 0.0
    elements: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0  # over elements whose reference is non-zero
    rel_error: float | None = None  # ||cand - ref|| / ||ref|| over all finite elements (None: ref all zero)
    mean_abs: float = 0.0
    p99_abs: float = 0.0
    out_of_tol: int = 0
    out_of_tol_share: float = 0.0
    worst_index: list[int] | None = None
    worst_ref: float | str | None = None
    worst_cand: float | str | None = None
    cosine: float | None = None  # mean over rows (samples)
    cosine_min: float | None = None
    label_agreement: float | None = None
    top1_agreement: float | None = None
    topk_agreement: float | None = None  # reference's top-1 among the candidate's top-k
    topk: int | None = None
    nan_mismatch: int = 0
    passed: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    warning_codes: list[str] = field(default_factory=list)  # machine-readable: reference_constant

    def to_dict(self) -> dict:
        return asdict(self)


def _index(flat: int, shape: tuple[int, ...], row_offset: int) -> list[int]:
    if not shape:
        return []
    idx = np.unravel_index(flat, shape)
    return [int(idx[0]) + row_offset, *map(int, idx[1:])]


class _OutputAccumulator:
    """Aggregates one output's metrics across batches."""

    def __init__(self, name: str, ref_name: str, atol: float, rtol: float, *, label: bool, scores: bool | None) -> None:
        self.c = OutputComparison(name=name, reference_name=ref_name, atol=atol, rtol=rtol)
        self.force_label = label
        self.scores = scores
        self.sum_abs = 0.0
        self.worst_excess = -math.inf
        self.diffs: list[np.ndarray] = []
        self.diff_count = 0
        self.hist: np.ndarray | None = None
        self.row_cos: list[np.ndarray] = []
        self.label_eq = 0
        self.label_n = 0
        self.top1 = 0
        self.topk = 0
        self.top_n = 0
        self.sq_diff = 0.0
        self.sq_ref = 0.0
        self.ref_min = math.inf
        self.ref_max = -math.inf
        self.row_width: int | None = None  # elements per sample; 1 for a 1-D or scalar output

    def _problem(self, msg: str) -> None:
        self.c.passed = False
        if msg not in self.c.problems:
            self.c.problems.append(msg)

    def _warn(self, msg: str) -> None:
        if msg not in self.c.warnings:
            self.c.warnings.append(msg)

    def bad(self) -> int:
        """Failing elements so far (a shape mismatch counts as one)."""
        return self.c.out_of_tol + (0 if self.c.passed or self.c.out_of_tol else 1)

    def add(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        c = self.c
        ref = np.asarray(ref)
        cand = np.asarray(cand)
        c.ref_dtype = c.ref_dtype or ref.dtype.name
        c.cand_dtype = c.cand_dtype or cand.dtype.name
        if ref.shape != cand.shape:
            # Shapes must match exactly: allclose would broadcast and pass vacuously.
            self._problem(f"shape mismatch: reference {list(ref.shape)} vs candidate {list(cand.shape)}")
            if c.ref_shape is None:
                c.ref_shape, c.cand_shape = list(ref.shape), list(cand.shape)
            return
        if ref.size == 0:
            self._problem("empty output: nothing to compare")
            return
        if c.ref_shape is None:
            c.ref_shape, c.cand_shape = list(ref.shape), list(cand.shape)
        elif ref.ndim and len(c.ref_shape) == ref.ndim:
            # Rows add up over batches; the other dims are those of the first batch.
            c.ref_shape[0] += int(ref.shape[0])
            c.cand_shape = list(c.ref_shape)
        rk, ck = ref.dtype.kind, cand.dtype.kind
        group = {"f": "float", "c": "float", "i": "integer", "u": "integer", "b": "integer", "U": "text", "S": "text", "O": "text"}
        rg, cg = group.get(rk, rk), group.get(ck, ck)
        if rg != cg:
            self._problem(f"dtype differs: reference {ref.dtype.name} vs candidate {cand.dtype.name}")
        elif ref.dtype != cand.dtype and rg != "text":
            # float64 from sklearn vs float32 from ONNX is expected; say so, do not fail.
            self._warn(f"dtype width differs: reference {ref.dtype.name} vs candidate {cand.dtype.name}")
        if "text" in (rg, cg) or self.force_label or (rg == cg == "integer"):
            c.kind = "label"
            if "text" in (rg, cg):
                self._add_exact(ref.astype(str), cand.astype(str), row_offset)
            else:
                self._add_exact(ref, cand, row_offset)
            return
        self._add_numeric(ref, cand, row_offset)

    def _add_exact(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        c = self.c
        neq = ref != cand
        if ref.dtype.kind == "f" and cand.dtype.kind == "f":
            neq &= ~(np.isnan(ref) & np.isnan(cand))
        n = ref.size
        c.elements += n
        bad = int(neq.sum())
        c.out_of_tol += bad
        self.label_eq += n - bad
        self.label_n += n
        if bad and c.worst_index is None:
            flat = int(np.argmax(neq))
            c.worst_index = _index(flat, ref.shape, row_offset)
            c.worst_ref, c.worst_cand = _scalar(ref.flat[flat]), _scalar(cand.flat[flat])

    def _add_numeric(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        c = self.c
        atol, rtol = c.atol, c.rtol
        r = ref.astype(np.float64)
        k = cand.astype(np.float64)
        c.elements += r.size
        rf, kf = np.isfinite(r), np.isfinite(k)
        # Non-finite values must sit at the same positions with the same value.
        same_nonfinite = (np.isnan(r) & np.isnan(k)) | (r == k)
        nonfinite_mismatch = (rf != kf) | (~rf & ~kf & ~same_nonfinite)
        c.nan_mismatch += int(nonfinite_mismatch.sum())
        both = rf & kf
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(both, np.abs(k - r), 0.0)
        abs_r = np.where(both, np.abs(r), 0.0)
        limit = atol + rtol * abs_r
        bad = (both & (diff > limit)) | nonfinite_mismatch
        c.out_of_tol += int(bad.sum())
        fin_diff = diff[both]
        if fin_diff.size:
            c.max_abs = max(c.max_abs, float(fin_diff.max()))
            nz = both & (abs_r > 0)
            if nz.any():
                c.max_rel = max(c.max_rel, float((diff[nz] / abs_r[nz]).max()))
            self.sum_abs += float(fin_diff.sum())
            self._keep_for_p99(fin_diff)
            fin_ref = r[both]
            self.sq_diff += float(np.square(fin_diff).sum())
            self.sq_ref += float(np.square(fin_ref).sum())
            self.ref_min = min(self.ref_min, float(fin_ref.min()))
            self.ref_max = max(self.ref_max, float(fin_ref.max()))
        # The worst element: a non-finite mismatch first, else the largest excess over the
        # element's own tolerance (the one allclose would complain about most).
        score = np.where(nonfinite_mismatch, np.inf, np.where(both, diff - limit, -np.inf))
        flat = int(np.argmax(score))
        if score.flat[flat] > self.worst_excess:
            self.worst_excess = float(score.flat[flat])
            c.worst_index = _index(flat, r.shape, row_offset)
            c.worst_ref, c.worst_cand = _scalar(ref.flat[flat]), _scalar(cand.flat[flat])
        width = int(np.prod(r.shape[1:])) if r.ndim >= 2 else 1
        self.row_width = width if self.row_width is None else min(self.row_width, width)
        if r.ndim >= 1 and r.size:
            self._add_cosine(r, k)
            if r.ndim == 2 and r.shape[1] >= 2 and self.scores is not False:
                # [batch, classes] floats are scores whatever their name (issue 21: a
                # default output name turned agreement off); top-1 is reported, not gated.
                self._add_topk(r, k)

    def _add_cosine(self, r: np.ndarray, k: np.ndarray) -> None:
        rows = r.reshape(r.shape[0], -1) if r.ndim >= 2 else r.reshape(1, -1)
        krows = k.reshape(rows.shape)
        # The cosine of a row is taken over its finite pairs: dropping a whole row for one
        # NaN (even a NaN both sides share, which is no mismatch) would hide every other
        # value of that row from the cosine floor. A row with no finite pair has no cosine.
        finite = np.isfinite(rows) & np.isfinite(krows)
        ok = finite.any(axis=1)
        rows = np.where(finite, rows, 0.0)
        krows = np.where(finite, krows, 0.0)
        num = (rows * krows).sum(axis=1)
        den = np.linalg.norm(rows, axis=1) * np.linalg.norm(krows, axis=1)
        both_zero = (np.abs(rows).sum(axis=1) == 0) & (np.abs(krows).sum(axis=1) == 0)
        safe = np.where(den > 0, den, 1.0)
        # Two all-zero rows agree perfectly; one all-zero row against another does not.
        cos = np.where(den > 0, num / safe, np.where(both_zero, 1.0, 0.0))
        self.row_cos.append(np.where(ok, np.clip(cos, -1.0, 1.0), np.nan))

    def _add_topk(self, r: np.ndarray, k: np.ndarray) -> None:
        kk = max(1, min(TOPK, r.shape[1] - 1))
        rn = np.nan_to_num(r, nan=-np.inf)
        kn = np.nan_to_num(k, nan=-np.inf)
        ra = np.argmax(rn, axis=1)
        ka = np.argmax(kn, axis=1)
        self.top1 += int((ra == ka).sum())
        top = np.argsort(-kn, axis=1, kind="stable")[:, :kk]
        self.topk += int((top == ra[:, None]).any(axis=1).sum())
        self.top_n += r.shape[0]
        self.c.topk = kk

    def _keep_for_p99(self, d: np.ndarray) -> None:
        self.diff_count += d.size
        if self.hist is None and self.diff_count <= EXACT_P99_LIMIT:
            self.diffs.append(d.astype(np.float32))
            return
        edges = _hist_edges()
        if self.hist is None:
            self.hist = np.zeros(len(edges) + 1, dtype=np.int64)
            for old in self.diffs:
                self.hist += np.bincount(np.searchsorted(edges, old), minlength=len(edges) + 1)
            self.diffs = []
        self.hist += np.bincount(np.searchsorted(edges, d), minlength=len(edges) + 1)

    def _check_spread(self) -> None:
        c = self.c
        if c.kind != "numeric" or self.ref_min > self.ref_max or c.elements < 2:
            return
        spread = self.ref_max - self.ref_min
        scale = max(abs(self.ref_min), abs(self.ref_max))
        if spread <= CONSTANT_SPREAD * scale or scale == 0.0:
            value = "0" if scale == 0.0 else f"{self.ref_max:.6g}"
            self._warn(
                f"the reference output is constant ({value} everywhere, spread {spread:.3g}): a candidate that "
                "outputs the same constant matches it, so this comparison proves little; validate on real --data "
                "or a trained model",
            )
            if REFERENCE_CONSTANT not in c.warning_codes:
                c.warning_codes.append(REFERENCE_CONSTANT)

    def finish(self, min_cosine: float | None, min_agreement: float, max_rel_error: float | None = None) -> OutputComparison:
        c = self.c
        if c.elements == 0 and c.passed:
            self._problem("no elements compared")
        c.mean_abs = self.sum_abs / self.diff_count if self.diff_count else 0.0
        if self.diffs:
            c.p99_abs = float(np.percentile(np.concatenate(self.diffs).astype(np.float64), 99))
        elif self.hist is not None:
            cum = np.cumsum(self.hist)
            i = int(np.searchsorted(cum, 0.99 * cum[-1]))
            edges = _hist_edges()
            c.p99_abs = float(edges[min(i, len(edges) - 1)])
        c.out_of_tol_share = c.out_of_tol / c.elements if c.elements else 0.0
        if self.row_cos:
            cos = np.concatenate(self.row_cos)
            good = cos[np.isfinite(cos)]
            if good.size:
                c.cosine = float(good.mean())
                c.cosine_min = float(good.min())
        if self.label_n:
            c.label_agreement = self.label_eq / self.label_n
        if self.top_n:
            c.top1_agreement = self.top1 / self.top_n
            c.topk_agreement = self.topk / self.top_n
        if self.sq_ref > 0:
            c.rel_error = math.sqrt(self.sq_diff / self.sq_ref)
        self._check_spread()
        if c.nan_mismatch:
            self._problem(f"{c.nan_mismatch} NaN/Inf value(s) on one side only")
        elif c.kind == "numeric" and c.elements and not self.diff_count:
            # Equal NaN/Inf pairs are accepted one by one, but when nothing else exists the
            # comparison checked no value at all: a pass would be vacuous.
            self._problem("no finite values to compare: both sides are NaN/Inf everywhere")
        if c.kind == "label":
            if c.label_agreement is not None and c.label_agreement < min_agreement:
                self._problem(f"labels agree on {100 * c.label_agreement:.4g}% of elements (need {100 * min_agreement:.4g}%)")
        elif min_cosine is not None and c.cosine is not None and (self.row_width or 0) > NARROW_ROW:
            # With a cosine floor (quantized/fp16 comparisons) the cosine judges the direction
            # of wide rows, where element-wise drift is expected; the relative norm of the
            # error judges the scale, which cosine cannot see.
            if c.cosine_min is not None and c.cosine_min < min_cosine:
                self._problem(f"cosine {c.cosine_min:.5f} (worst sample) below {min_cosine}")
            if max_rel_error is not None and c.rel_error is not None and c.rel_error > max_rel_error:
                self._problem(f"relative error ||cand - ref|| / ||ref|| = {c.rel_error:.4g} above {max_rel_error:g} (a scale or offset change)")
        else:
            if c.out_of_tol > c.nan_mismatch:
                self._problem(f"{c.out_of_tol - c.nan_mismatch} element(s) out of tolerance (atol={c.atol:g}, rtol={c.rtol:g})")
            if (c.kind == "numeric" and min_cosine is not None and max_rel_error is not None and c.rel_error is not None
                    and c.rel_error > max_rel_error):
                # A narrow output under a loose preset (int8: atol 0.5, rtol 0.5) passes element-wise
                # whatever its scale up to x1.5 (a regressor 40% off, a probability pair swapped);
                # the preset's bound on the relative error still holds for it.
                self._problem(f"relative error ||cand - ref|| / ||ref|| = {c.rel_error:.4g} above {max_rel_error:g} "
                              "(a scale or offset change)")
        return c


def judged_cosine(o: OutputComparison) -> float | None:
    """The cosine a verdict reads for one output. A row of at most NARROW_ROW values (a
    regressor's [N, 1]) has a cosine that is only its sign: 1.0 for a prediction 40% off. There
    the cosine that an error of that relative size admits, 1 / sqrt(1 + e^2), stands in when lower."""
    shape = o.ref_shape or []
    width = int(np.prod(shape[1:])) if len(shape) >= 2 else 1
    if o.cosine is None or o.rel_error is None or width > NARROW_ROW:
        return o.cosine
    return min(o.cosine, 1.0 / math.sqrt(1.0 + o.rel_error ** 2))


def _hist_edges() -> np.ndarray:
    return np.concatenate([[0.0], np.logspace(-12, 6, 1800)])


def _scalar(v) -> float | str:
    v = np.asarray(v).item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    return float(v)


def match_outputs(ref_names: list[str], cand_names: list[str]) -> list[tuple[str, str]]:
    """Pair outputs: by name where both sides name an output alike, the rest by position
    (among the unpaired ones, in order). Counts must agree."""
    if len(ref_names) != len(cand_names):
        raise InputError(
            f"output count differs: reference has {len(ref_names)} ({', '.join(ref_names) or 'none'}), "
            f"candidate has {len(cand_names)} ({', '.join(cand_names) or 'none'})",
        )
    common = set(ref_names) & set(cand_names)
    rest_ref = iter([n for n in ref_names if n not in common])
    pairs = []
    for n in cand_names:
        pairs.append((n, n) if n in common else (next(rest_ref), n))
    return pairs


class Comparator:
    """Feed it batches of (reference outputs, candidate outputs); ask for the result.

    ``label_outputs`` (names on either side) are compared exactly as labels whatever their
    dtype; ``score_outputs`` get top-1/top-k agreement (default: every [batch, classes>1]
    float output, whatever its name). Outputs pair by name, else as ``mapping.pair_ports``
    says (``output_map`` first; by position where ``ordered_outputs``, else by rank/dtype);
    ``notes`` then names the pairs.
    """

    accumulator: type[_OutputAccumulator] = _OutputAccumulator  # compare_merge swaps in a mergeable one

    def __init__(
        self,
        tolerance: Tolerance,
        *,
        label_outputs: Collection[str] = (),
        score_outputs: Collection[str] | None = None,
        output_map: dict[str, str] | None = None,
        ordered_outputs: bool = True,
    ) -> None:
        self.tol = tolerance
        self.output_map = dict(output_map or {})
        self.ordered_outputs = ordered_outputs
        self.notes: list[str] = []
        self.label_outputs = set(label_outputs)
        self.score_outputs = None if score_outputs is None else set(score_outputs)
        self.pairs: list[tuple[str, str]] | None = None
        self.acc: dict[str, _OutputAccumulator] = {}
        self.rows = 0
        self.batches = 0

    def _is_scores(self, rname: str, cname: str) -> bool | None:
        if self.score_outputs is not None:
            return bool({rname, cname} & self.score_outputs)
        return None  # the output's shape and dtype decide

    def _pair(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        from onnxkit.foundation.mapping import pair_ports, port_of_array

        if len(ref) != len(cand) and not self.output_map:
            raise InputError(
                f"output count differs: reference has {len(ref)} ({', '.join(ref) or 'none'}), "
                f"candidate has {len(cand)} ({', '.join(cand) or 'none'})",
            )
        pairing = pair_ports(
            [port_of_array(n, v) for n, v in ref.items()], [port_of_array(n, v) for n, v in cand.items()],
            what="output", explicit=self.output_map, ordered=self.ordered_outputs,
        )
        note = pairing.note("output")
        if note:
            self.notes.append(note)
        return pairing.pairs

    def warning_records(self) -> list[dict[str, str]]:
        """Machine-readable warnings, one per (code, output), for --json."""
        return [{"code": code, "output": acc.c.name} for acc in self.acc.values() for code in acc.c.warning_codes]

    def add(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> None:
        if self.pairs is None:
            self.pairs = self._pair(ref, cand)
            for rname, cname in self.pairs:
                a, r = self.tol.for_output(cname, rname)
                label = bool({rname, cname} & self.label_outputs)
                self.acc[cname] = self.accumulator(cname, rname, a, r, label=label, scores=self._is_scores(rname, cname))
        else:
            if set(cand) != {c for _, c in self.pairs} or set(ref) != {r for r, _ in self.pairs}:
                raise InputError(
                    f"outputs changed between batches: reference {sorted(ref)}, candidate {sorted(cand)}",
                )
        rows = 0
        for rname, cname in self.pairs:
            r = np.asarray(ref[rname])
            k = np.asarray(cand[cname])
            self.acc[cname].add(r, k, self.rows)
            rows = max(rows, int(r.shape[0]) if r.ndim else 1)
        self.rows += rows
        self.batches += 1

    def bad_elements(self) -> int:
        """Failing elements so far over all outputs: lets a caller spot the first bad batch."""
        return sum(a.bad() for a in self.acc.values())

    def results(self) -> list[OutputComparison]:
        if not self.batches:
            raise InputError("nothing was compared: no samples; refusing a vacuous pass")
        return [acc.finish(self.tol.min_cosine, self.tol.min_agreement, self.tol.max_rel_error) for acc in self.acc.values()]


def compare_once(
    ref: dict[str, np.ndarray],
    cand: dict[str, np.ndarray],
    tolerance: Tolerance | None = None,
    **kwargs,
) -> list[OutputComparison]:
    comp = Comparator(tolerance or Tolerance(), **kwargs)
    comp.add(ref, cand)
    return comp.results()
