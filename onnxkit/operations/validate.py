"""Run a reference and a candidate on the same inputs and compare every output.

The reference is a source-framework model (``SourceModel.predict``) or another ONNX model;
the candidate is an ONNX model. Inputs are the user's data (streamed) or seeded random
inputs that vary every dynamic dimension, plus optional edge cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from typing import Any

import numpy as np

from onnxkit.foundation.compare import OutputComparison, Tolerance
from onnxkit.foundation.compare_merge import MergeableComparator
from onnxkit.foundation.data import DataSource, Feeds, check_feeds, edge_case_feeds, feeds_rows, non_finite_inputs, random_feeds
from onnxkit.foundation.spec import InputSpec
from onnxkit.errors import InputError
from onnxkit.results import Result, Table, fmt_num, shown

log = logging.getLogger(__name__)

Predict = Callable[[Feeds], Feeds]
DEFAULT_BATCH_SIZES = (1, 8)
DEFAULT_SEQ_LENS = (16, 48)


@dataclass
class ValidationResult(Result):
    reference: str = ""
    candidate: str = ""
    tolerance: dict[str, Any] = field(default_factory=dict)
    samples: int = 0
    batches: int = 0
    input_sets: list[str] = field(default_factory=list)
    outputs: list[OutputComparison] = field(default_factory=list)
    non_finite_inputs: list[str] = field(default_factory=list)
    localization: dict[str, Any] | None = None
    saved_outputs: str | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"code": ..., "output": ...}
    precision: str | None = None  # the inference precision OpenVINO used (None: ONNX Runtime, the graph's types)

    def tables(self) -> list[Table]:
        rows = []
        for o in self.outputs:
            agree = o.label_agreement if o.label_agreement is not None else o.top1_agreement
            rows.append([
                o.name,
                "x".join(map(str, o.cand_shape or [])) or "-",
                o.max_abs, o.max_rel, o.mean_abs, o.p99_abs,
                f"{100 * o.out_of_tol_share:.3g}%",
                o.cosine, agree,
                "pass" if o.passed else "FAIL",
            ])
        main = Table(
            f"{self.candidate} vs {self.reference} ({self.samples} samples; atol={fmt_num(self.tolerance.get('atol'))}, rtol={fmt_num(self.tolerance.get('rtol'))})",
            ["output", "shape", "max abs", "max rel", "mean abs", "p99 abs", "out of tol", "cosine", "agreement", "verdict"],
            rows,
        )
        tables = [main]
        worst = [
            [o.name, str(o.worst_index), fmt_num(o.worst_ref), fmt_num(o.worst_cand), "; ".join(o.problems) or "-"]
            for o in self.outputs if not o.passed
        ]
        if worst:
            tables.append(Table("Where it differs", ["output", "worst index", "reference", "candidate", "why"], worst))
        if self.localization:
            tables.append(Table("Localization: first divergent node", ["property", "value"], self.localization.get("rows") or [
                [k, str(v)] for k, v in self.localization.items() if not isinstance(v, (list, dict))
            ]))
        return tables

    def junit_cases(self) -> list[tuple[str, bool, str, str]]:
        """One JUnit testcase per output: (name, passed, message, details)."""
        cases = []
        for o in self.outputs:
            # Names and label values come from the model: escaped so none forges a line.
            details = (
                f"reference output {shown(o.reference_name)}; shape {o.cand_shape}; dtype {o.ref_dtype} vs {o.cand_dtype}\n"
                f"max abs {o.max_abs:.6g}, max rel {o.max_rel:.6g}, mean abs {o.mean_abs:.6g}, p99 abs {o.p99_abs:.6g}\n"
                f"out of tolerance: {o.out_of_tol} of {o.elements} (atol={o.atol:g}, rtol={o.rtol:g})\n"
                f"worst element {o.worst_index}: reference {shown(o.worst_ref)}, candidate {shown(o.worst_cand)}"
            )
            if o.cosine is not None:
                details += f"\ncosine mean {o.cosine:.8f}, min {o.cosine_min:.8f}"
            if o.label_agreement is not None:
                details += f"\nlabel agreement {o.label_agreement:.6f}"
            if o.top1_agreement is not None:
                details += f"\ntop-1 agreement {o.top1_agreement:.6f}, top-{o.topk} agreement {o.topk_agreement:.6f}"
            if not o.passed and self.localization:
                details += "\nlocalization: " + "; ".join(f"{shown(a)}: {shown(b)}" for a, b in self.localization.get("rows", []))
            cases.append((f"output {o.name}", o.passed, "; ".join(o.problems), details))
        return cases


def fixed_batch(specs: list[InputSpec]) -> int | None:
    """The rows per batch a model without a batch dimension takes (every input's first
    dimension fixed, and the same): data is cut into batches of exactly that size."""
    firsts = {s.shape[0] if s.shape and isinstance(s.shape[0], int) else None for s in specs}
    return firsts.pop() if len(firsts) == 1 and None not in firsts else None


def input_sets(
    specs: list[InputSpec],
    *,
    data: DataSource | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS,
    samples: int | None = None,
    seed: int = 0,
    edge_cases: bool = False,
    accepts_nan: bool = False,
) -> Iterator[tuple[str, Feeds]]:
    """The batches to validate on, each with a label saying where it came from."""
    if data is not None:
        batch = fixed_batch(specs) or (max(batch_sizes) if batch_sizes else 8)
        seen = 0
        for i, feeds in enumerate(data.batches(batch)):
            if samples is not None:
                left = samples - seen
                if left <= 0:
                    break
                feeds = {k: v[:left] for k, v in feeds.items()}
            seen += feeds_rows(feeds)
            yield f"{data.path.name} batch {i}", feeds
    else:
        has_seq = any(not isinstance(d, int) for s in specs for d in s.shape[1:])
        seqs = seq_lens if has_seq else (seq_lens[0],)
        has_batch = any(s.shape and not isinstance(s.shape[0], int) for s in specs)
        sizes = batch_sizes if has_batch else (None,)
        n = 0
        total = 0
        # One batch per (batch size, sequence length); repeat until ``samples`` rows if asked.
        while True:
            for b in sizes:
                for s in seqs:
                    label = f"random batch={b if b else 'fixed'}" + (f" seq={s}" if has_seq else "")
                    feeds = random_feeds(specs, batch=b or 1, seq=s, seed=seed + n)
                    n += 1
                    total += feeds_rows(feeds)
                    yield label, feeds
            if samples is None or total >= samples:
                break
    if edge_cases:
        b = max(batch_sizes) if batch_sizes else 4
        for name, feeds in edge_case_feeds(specs, batch=b, seq=seq_lens[0], with_nan=accepts_nan):
            yield f"edge case: {name}", feeds

Batch = tuple[str, Feeds, "Feeds | None"]  # (label, inputs, stored reference outputs or None)


def validate_models(
    reference: Predict | None,
    candidate: Predict,
    specs: list[InputSpec],
    *,
    tolerance: Tolerance,
    reference_name: str = "reference",
    candidate_name: str = "candidate",
    data: DataSource | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS,
    samples: int | None = None,
    seed: int = 0,
    edge_cases: bool = False,
    accepts_nan: bool = False,
    progress: Callable[[int], None] | None = None,
    keep: Callable[[str, Feeds, Feeds], None] | None = None,
    batches: Iterable[Batch] | None = None,
    label_outputs: tuple[str, ...] = (),
    on_first_failure: Callable[[str, Feeds], None] | None = None,
    output_map: dict[str, str] | None = None,
    ordered_outputs: bool = True,
) -> ValidationResult:
    """Compare ``candidate`` against ``reference`` on the same inputs, batch by batch.

    ``batches`` replaces the generated inputs (saved references carry their outputs, and
    then ``reference`` may be None). ``keep`` receives (label, inputs, reference outputs) of
    every batch, for saving references. ``on_first_failure`` receives the first batch on
    which an output goes out of tolerance (for localization).
    """
    comp = MergeableComparator(tolerance, label_outputs=label_outputs, output_map=output_map, ordered_outputs=ordered_outputs)
    labels: list[str] = []
    nonfinite: set[str] = set()
    if batches is None:
        batches = (
            (label, feeds, None)
            for label, feeds in input_sets(
                specs, data=data, batch_sizes=batch_sizes, seq_lens=seq_lens, samples=samples,
                seed=seed, edge_cases=edge_cases, accepts_nan=accepts_nan,
            )
        )
    failed_seen = False
    for label, feeds, stored in batches:
        check_feeds(feeds, specs, where=label)
        nonfinite.update(non_finite_inputs(feeds))
        if stored is not None:
            ref = stored
        elif reference is not None:
            ref = reference(feeds)
        else:
            raise InputError(f"{label}: no reference outputs and no reference model")
        cand = candidate(feeds)
        if keep is not None:
            keep(label, feeds, ref)
        comp.add(ref, cand)
        labels.append(label)
        if not failed_seen and on_first_failure is not None and comp.bad_elements():
            failed_seen = True
            on_first_failure(label, feeds)
        if progress is not None:
            progress(feeds_rows(feeds))
    if not comp.batches:
        raise InputError("no inputs to validate on; refusing a vacuous pass")
    return build_result(comp, tolerance, reference_name, candidate_name, labels, nonfinite,
                        data.notes if data is not None else [])


def build_result(comp: MergeableComparator, tolerance: Tolerance, reference_name: str, candidate_name: str,
                 labels: list[str], nonfinite: set[str], data_notes: list[str]) -> ValidationResult:
    """The verdict and report of a finished comparison (local or merged from Ray workers)."""
    outputs = comp.results()
    result = ValidationResult(
        command="validate",
        passed=all(o.passed for o in outputs),
        reference=reference_name,
        candidate=candidate_name,
        tolerance=tolerance.to_dict(),
        samples=comp.row_count,
        batches=comp.batches,
        input_sets=_summarize(labels),
        outputs=outputs,
        non_finite_inputs=sorted(nonfinite),
    )
    result.notes.extend(comp.notes)
    result.warnings = comp.warning_records()
    if nonfinite:
        result.notes.append(f"inputs hold NaN/Inf values: {', '.join(sorted(nonfinite))}")
    result.notes.extend(data_notes)  # dtype casts done to fit the model's inputs
    for o in outputs:
        for w in o.warnings:
            result.notes.append(f"{o.name}: {w}")
    import fnmatch

    for pat, _, _ in tolerance.per_output:
        if not any(fnmatch.fnmatchcase(n, pat) for o in outputs for n in (o.name, o.reference_name)):
            # A typo in an output name would otherwise silently keep the default tolerance.
            result.notes.append(f"--tol {pat}=...: no output matches {pat!r} (outputs: {', '.join(o.name for o in outputs)})")
    return result


def _summarize(labels: list[str]) -> list[str]:
    out: list[str] = []
    for lab in labels:
        if lab not in out:
            out.append(lab)
    return out if len(out) <= 12 else out[:11] + [f"... {len(out) - 11} more"]


def onnx_predict(session) -> Predict:
    return lambda feeds: session.run(feeds)


def as_float_feeds(feeds: Feeds) -> Feeds:
    return {k: np.asarray(v) for k, v in feeds.items()}

# ---------------------------------------------------------------- the command's core
