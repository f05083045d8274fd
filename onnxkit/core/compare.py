"""The one comparator: reference outputs vs candidate outputs, per output, aggregated over
batches so a data set of any size is compared in bounded memory.

Semantics are those of ``numpy.allclose`` (``|cand - ref| <= atol + rtol * |ref|``) but
never vacuous: empty arrays, broadcasting shapes and one-sided NaN/Inf all fail.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from onnxkit.errors import InputError, UsageError

# Presets chosen from measurements (docs/validation.md): fp32 exports of real models,
# BERT-class transformers included, differ by up to ~5e-5 absolute on outputs of
# magnitude ~10; a weight perturbed by 1e-2 moves outputs by >1e-2.
PRESETS: dict[str, dict[str, float | None]] = {
    "fp32": {"atol": 1e-4, "rtol": 1e-3, "min_cosine": None},
    "fp16": {"atol": 1e-2, "rtol": 1e-2, "min_cosine": 0.999},
    "int8": {"atol": 0.5, "rtol": 0.5, "min_cosine": 0.99},
    "int4": {"atol": 1.0, "rtol": 1.0, "min_cosine": 0.98},
}
DEFAULT_PRESET = "fp32"
# Beyond this many elements per output, p99 is estimated from a histogram instead of kept
# exactly; below it, streaming and one-batch runs give identical figures.
EXACT_P99_LIMIT = 20_000_000


@dataclass(frozen=True)
class Tolerance:
    atol: float = PRESETS[DEFAULT_PRESET]["atol"]  # type: ignore[assignment]
    rtol: float = PRESETS[DEFAULT_PRESET]["rtol"]  # type: ignore[assignment]
    min_cosine: float | None = None
    per_output: tuple[tuple[str, float, float | None], ...] = ()  # (glob, atol, rtol or None)
    preset: str = DEFAULT_PRESET

    def __post_init__(self) -> None:
        for name, v in (("atol", self.atol), ("rtol", self.rtol)):
            if not math.isfinite(v) or v < 0:
                raise UsageError(f"tolerance {name}={v} must be finite and non-negative")
        if self.min_cosine is not None and not (-1.0 <= self.min_cosine <= 1.0):
            raise UsageError(f"min cosine {self.min_cosine} must lie in [-1, 1]")
        for pat, a, r in self.per_output:
            if not math.isfinite(a) or a < 0 or (r is not None and (not math.isfinite(r) or r < 0)):
                raise UsageError(f"tolerance for {pat} must be finite and non-negative")

    def for_output(self, name: str) -> tuple[float, float]:
        for pat, a, r in self.per_output:
            if fnmatch.fnmatchcase(name, pat):
                return a, self.rtol if r is None else r
        return self.atol, self.rtol

    def to_dict(self) -> dict:
        return {
            "preset": self.preset, "atol": self.atol, "rtol": self.rtol, "min_cosine": self.min_cosine,
            "per_output": {p: {"atol": a, "rtol": r} for p, a, r in self.per_output},
        }


def _parse_float(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
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
    ``--tol logits=1e-3:1e-2`` (per output, glob allowed), ``--rtol``, ``--preset``."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise UsageError(f"unknown tolerance preset {name!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[name]
    atol = float(base["atol"])  # type: ignore[arg-type]
    rt = float(base["rtol"])  # type: ignore[arg-type]
    cos = base["min_cosine"] if min_cosine is None else min_cosine
    per: list[tuple[str, float, float | None]] = []
    for item in tol or []:
        if "=" in item:
            key, _, val = item.partition("=")
            if not key:
                raise UsageError(f"malformed --tol {item!r}; expected ATOL or OUTPUT=ATOL[:RTOL]")
            a_txt, _, r_txt = val.partition(":")
            per.append((key, _parse_float(a_txt, "tolerance"), _parse_float(r_txt, "tolerance") if r_txt else None))
        else:
            atol = _parse_float(item, "tolerance")
    if rtol is not None:
        rt = _parse_float(str(rtol), "--rtol")
    return Tolerance(atol=atol, rtol=rt, min_cosine=cos, per_output=tuple(per), preset=name)


@dataclass
class OutputComparison:
    """Everything measured about one output over all samples."""

    name: str
    reference_name: str
    ref_shape: list[int] | None = None
    cand_shape: list[int] | None = None
    ref_dtype: str = ""
    cand_dtype: str = ""
    atol: float = 0.0
    rtol: float = 0.0
    elements: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    p99_abs: float = 0.0
    out_of_tol: int = 0
    out_of_tol_share: float = 0.0
    worst_index: list[int] | None = None
    worst_ref: float | str | None = None
    worst_cand: float | str | None = None
    cosine: float | None = None
    cosine_min: float | None = None
    label_agreement: float | None = None
    top1_agreement: float | None = None
    topk_agreement: float | None = None
    topk: int | None = None
    nan_mismatch: int = 0
    passed: bool = True
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _OutputAccumulator:
    """Aggregates one output's metrics across batches."""

    def __init__(self, name: str, ref_name: str, atol: float, rtol: float) -> None:
        self.c = OutputComparison(name=name, reference_name=ref_name, atol=atol, rtol=rtol)
        self.sum_abs = 0.0
        self.worst_excess = -math.inf
        self.diffs: list[np.ndarray] = []
        self.diff_count = 0
        self.hist: np.ndarray | None = None
        self.row_cos: list[np.ndarray] = []
        self.rows = 0
        self.label_eq = 0
        self.label_n = 0
        self.top1 = 0
        self.topk = 0
        self.top_n = 0
        self.shape_tail: tuple[int, ...] | None = None

    def add(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        c = self.c
        ref = np.asarray(ref)
        cand = np.asarray(cand)
        c.ref_dtype = c.ref_dtype or ref.dtype.name
        c.cand_dtype = c.cand_dtype or cand.dtype.name
        if ref.shape != cand.shape:
            # Shapes must match exactly: allclose would broadcast and pass vacuously.
            c.passed = False
            msg = f"shape mismatch: reference {list(ref.shape)} vs candidate {list(cand.shape)}"
            if msg not in c.problems:
                c.problems.append(msg)
            c.ref_shape, c.cand_shape = list(ref.shape), list(cand.shape)
            return
        if ref.size == 0:
            c.passed = False
            if "empty output" not in c.problems:
                c.problems.append("empty output: nothing to compare")
            return
        tail = ref.shape[1:]
        if c.ref_shape is None:
            c.ref_shape = list(ref.shape)
            c.cand_shape = list(cand.shape)
        else:
            # Report the total row count and the per-row shape of the first batch.
            c.ref_shape[0] = c.ref_shape[0] + (ref.shape[0] if ref.ndim else 0) if ref.ndim else c.ref_shape
            c.cand_shape = list(c.ref_shape)
        if self.shape_tail is None:
            self.shape_tail = tail
        kinds = {ref.dtype.kind, cand.dtype.kind}
        if kinds & {"U", "S", "O"}:
            self._add_exact(ref.astype(str), cand.astype(str), row_offset)
            return
        if ref.dtype.kind != cand.dtype.kind and not ({ref.dtype.kind, cand.dtype.kind} <= {"f", "i", "u"} and "f" not in {ref.dtype.kind, cand.dtype.kind}):
            if not ({ref.dtype.kind, cand.dtype.kind} <= {"f"}):
                msg = f"dtype kind differs: reference {ref.dtype.name} vs candidate {cand.dtype.name}"
                if msg not in c.problems:
                    c.problems.append(msg)
                    c.passed = False
        self._add_numeric(ref, cand, row_offset)

    def _add_exact(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        c = self.c
        neq = ref != cand
        n = ref.size
        c.elements += n
        bad = int(neq.sum())
        c.out_of_tol += bad
        self.label_eq += n - bad
        self.label_n += n
        if bad and c.worst_index is None:
            idx = np.unravel_index(int(np.argmax(neq)), ref.shape)
            c.worst_index = [int(idx[0]) + row_offset, *map(int, idx[1:])]
            c.worst_ref, c.worst_cand = str(ref[idx]), str(cand[idx])

    def _add_numeric(self, ref: np.ndarray, cand: np.ndarray, row_offset: int) -> None:
        c = self.c
        atol, rtol = c.atol, c.rtol
        r = ref.astype(np.float64)
        k = cand.astype(np.float64)
        n = r.size
        c.elements += n
        rf, kf = np.isfinite(r), np.isfinite(k)
        # Non-finite values must sit at the same positions with the same value.
        nonfinite_mismatch = (rf != kf) | (~rf & ~kf & ~((np.isnan(r) & np.isnan(k)) | (r == k)))
        nm = int(nonfinite_mismatch.sum())
        c.nan_mismatch += nm
        both = rf & kf
        diff = np.zeros_like(r)
        diff[both] = np.abs(k[both] - r[both])
        rel = np.zeros_like(r)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel[both] = diff[both] / np.maximum(np.abs(r[both]), np.finfo(np.float64).tiny)
        limit = atol + rtol * np.abs(np.where(both, r, 0.0))
        excess = np.where(both, diff - limit, 0.0)
        bad = (both & (diff > limit)) | nonfinite_mismatch
        c.out_of_tol += int(bad.sum())
        fin_diff = diff[both]
        if fin_diff.size:
            c.max_abs = max(c.max_abs, float(fin_diff.max()))
            c.max_rel = max(c.max_rel, float(rel[both].max()))
            self.sum_abs += float(fin_diff.sum())
            self._keep_for_p99(fin_diff)
        # The worst element: a non-finite mismatch first, else the largest excess over tolerance.
        score = np.where(nonfinite_mismatch, np.inf, excess)
        flat = int(np.argmax(score))
        if score.flat[flat] > self.worst_excess:
            self.worst_excess = float(score.flat[flat])
            idx = np.unravel_index(flat, r.shape)
            c.worst_index = [int(idx[0]) + row_offset, *map(int, idx[1:])] if r.ndim else []
            c.worst_ref, c.worst_cand = _scalar(ref[idx]), _scalar(cand[idx])
        if ref.dtype.kind in "iub" and cand.dtype.kind in "iub":
            self.label_eq += int((ref == cand).sum())
            self.label_n += ref.size
        if ref.dtype.kind == "f" and r.ndim >= 1:
            rows = r.reshape(r.shape[0], -1) if r.ndim >= 2 else r.reshape(1, -1)
            krows = k.reshape(rows.shape)
            ok = np.isfinite(rows).all(axis=1) & np.isfinite(krows).all(axis=1)
            num = (rows * krows).sum(axis=1)
            den = np.linalg.norm(rows, axis=1) * np.linalg.norm(krows, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(np.abs(rows).sum(axis=1) + np.abs(krows).sum(axis=1) == 0, 1.0, 0.0))
            self.row_cos.append(np.where(ok, cos, np.nan))
            if r.ndim == 2 and 2 <= r.shape[1]:
                kk = min(5, r.shape[1] - 1) or 1
                ra = np.argmax(np.nan_to_num(r, nan=-np.inf), axis=1)
                ka = np.argmax(np.nan_to_num(k, nan=-np.inf), axis=1)
                self.top1 += int((ra == ka).sum())
                topk = np.argsort(-np.nan_to_num(k, nan=-np.inf), axis=1)[:, :kk]
                self.topk += int((topk == ra[:, None]).any(axis=1).sum())
                self.top_n += r.shape[0]
                c.topk = kk

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

    def finish(self, min_cosine: float | None) -> OutputComparison:
        c = self.c
        if c.elements == 0 and c.passed:
            c.passed = False
            c.problems.append("no elements compared")
        finite_n = self.diff_count
        c.mean_abs = self.sum_abs / finite_n if finite_n else 0.0
        if self.diffs:
            c.p99_abs = float(np.percentile(np.concatenate(self.diffs), 99))
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
        if c.nan_mismatch:
            c.passed = False
            c.problems.append(f"{c.nan_mismatch} NaN/Inf value(s) on one side only")
        if min_cosine is not None:
            # With a cosine floor (quantized/fp16 comparisons), the cosine decides for float
            # outputs; element-wise tolerance still applies to the rest.
            if c.cosine is not None:
                if c.cosine < min_cosine:
                    c.passed = False
                    c.problems.append(f"mean cosine {c.cosine:.5f} below {min_cosine}")
            elif c.out_of_tol:
                c.passed = False
                c.problems.append(f"{c.out_of_tol} element(s) out of tolerance")
        elif c.out_of_tol > c.nan_mismatch:
            c.passed = False
            c.problems.append(f"{c.out_of_tol - c.nan_mismatch} element(s) out of tolerance (atol={c.atol:g}, rtol={c.rtol:g})")
        return c


def _hist_edges() -> np.ndarray:
    return np.concatenate([[0.0], np.logspace(-12, 6, 1800)])


def _scalar(v) -> float | str:
    v = np.asarray(v).item()
    if isinstance(v, (bytes, str)):
        return str(v)
    return float(v)


def match_outputs(ref_names: list[str], cand_names: list[str]) -> list[tuple[str, str]]:
    """Pair outputs by name where both sides name them all, else by position."""
    if len(ref_names) != len(cand_names):
        raise InputError(
            f"output count differs: reference has {len(ref_names)} ({', '.join(ref_names)}), "
            f"candidate has {len(cand_names)} ({', '.join(cand_names)})",
        )
    if set(ref_names) == set(cand_names):
        return [(n, n) for n in cand_names]
    return list(zip(ref_names, cand_names))


class Comparator:
    """Feed it batches of (reference outputs, candidate outputs); ask for the result."""

    def __init__(self, tolerance: Tolerance) -> None:
        self.tol = tolerance
        self.pairs: list[tuple[str, str]] | None = None
        self.acc: dict[str, _OutputAccumulator] = {}
        self.rows = 0
        self.batches = 0

    def add(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> None:
        if self.pairs is None:
            self.pairs = match_outputs(list(ref), list(cand))
            for rname, cname in self.pairs:
                a, r = self.tol.for_output(cname)
                self.acc[cname] = _OutputAccumulator(cname, rname, a, r)
        elif set(cand) != {c for _, c in self.pairs}:
            raise InputError(f"candidate outputs changed between batches: {sorted(cand)}")
        rows = 0
        for rname, cname in self.pairs:
            r = np.asarray(ref[rname])
            k = np.asarray(cand[cname])
            self.acc[cname].add(r, k, self.rows)
            rows = max(rows, int(r.shape[0]) if r.ndim else 1)
        self.rows += rows
        self.batches += 1

    def results(self) -> list[OutputComparison]:
        if not self.batches:
            raise InputError("nothing was compared: no samples; refusing a vacuous pass")
        return [acc.finish(self.tol.min_cosine) for acc in self.acc.values()]


def compare_once(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], tolerance: Tolerance | None = None) -> list[OutputComparison]:
    comp = Comparator(tolerance or Tolerance())
    comp.add(ref, cand)
    return comp.results()
