"""Run a reference and a candidate on the same inputs and compare every output.

The reference is a source-framework model (``SourceModel.predict``) or another ONNX model;
the candidate is an ONNX model. Inputs are the user's data (streamed) or seeded random
inputs that vary every dynamic dimension, plus optional edge cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxkit.core.compare import Comparator, OutputComparison, Tolerance
from onnxkit.core.data import DataSource, Feeds, check_feeds, edge_case_feeds, feeds_rows, non_finite_inputs, random_feeds
from onnxkit.core.spec import InputSpec
from onnxkit.errors import InputError
from onnxkit.results import Result, Table, fmt_num

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
            loc = self.localization
            tables.append(Table("First divergent node", ["property", "value"], [[k, str(v)] for k, v in loc.items() if k != "trace"]))
        return tables


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
        batch = max(batch_sizes) if batch_sizes else 8
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


def validate_models(
    reference: Predict,
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
    keep: Callable[[Feeds, Feeds], None] | None = None,
) -> ValidationResult:
    """Compare ``candidate`` against ``reference`` on the same inputs, batch by batch.

    ``keep`` receives (inputs, reference outputs) of every batch, for saving references.
    """
    comp = Comparator(tolerance)
    labels: list[str] = []
    nonfinite: set[str] = set()
    for label, feeds in input_sets(
        specs, data=data, batch_sizes=batch_sizes, seq_lens=seq_lens, samples=samples,
        seed=seed, edge_cases=edge_cases, accepts_nan=accepts_nan,
    ):
        check_feeds(feeds, specs, where=label)
        nonfinite.update(non_finite_inputs(feeds))
        ref = reference(feeds)
        cand = candidate(feeds)
        if keep is not None:
            keep(feeds, ref)
        comp.add(ref, cand)
        labels.append(label)
        if progress is not None:
            progress(feeds_rows(feeds))
    if not comp.batches:
        raise InputError("no inputs to validate on; refusing a vacuous pass")
    outputs = comp.results()
    result = ValidationResult(
        command="validate",
        passed=all(o.passed for o in outputs),
        reference=reference_name,
        candidate=candidate_name,
        tolerance=tolerance.to_dict(),
        samples=comp.rows,
        batches=comp.batches,
        input_sets=_summarize(labels),
        outputs=outputs,
        non_finite_inputs=sorted(nonfinite),
    )
    if nonfinite:
        result.notes.append(f"inputs hold NaN/Inf values: {', '.join(sorted(nonfinite))}")
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
