"""Run a reference and a candidate on the same inputs and compare every output.

The reference is a source-framework model (``SourceModel.predict``) or another ONNX model;
the candidate is an ONNX model. Inputs are the user's data (streamed) or seeded random
inputs that vary every dynamic dimension, plus optional edge cases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    saved_outputs: str | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"code": ..., "output": ...}

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
            details = (
                f"reference output {o.reference_name}; shape {o.cand_shape}; dtype {o.ref_dtype} vs {o.cand_dtype}\n"
                f"max abs {o.max_abs:.6g}, max rel {o.max_rel:.6g}, mean abs {o.mean_abs:.6g}, p99 abs {o.p99_abs:.6g}\n"
                f"out of tolerance: {o.out_of_tol} of {o.elements} (atol={o.atol:g}, rtol={o.rtol:g})\n"
                f"worst element {o.worst_index}: reference {o.worst_ref}, candidate {o.worst_cand}"
            )
            if o.cosine is not None:
                details += f"\ncosine mean {o.cosine:.8f}, min {o.cosine_min:.8f}"
            if o.label_agreement is not None:
                details += f"\nlabel agreement {o.label_agreement:.6f}"
            if o.top1_agreement is not None:
                details += f"\ntop-1 agreement {o.top1_agreement:.6f}, top-{o.topk} agreement {o.topk_agreement:.6f}"
            if not o.passed and self.localization:
                details += "\nlocalization: " + "; ".join(f"{a}: {b}" for a, b in self.localization.get("rows", []))
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
    comp = Comparator(tolerance, label_outputs=label_outputs, output_map=output_map, ordered_outputs=ordered_outputs)
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
    result.notes.extend(comp.notes)
    result.warnings = comp.warning_records()
    if nonfinite:
        result.notes.append(f"inputs hold NaN/Inf values: {', '.join(sorted(nonfinite))}")
    if data is not None:
        result.notes.extend(data.notes)  # dtype casts done to fit the model's inputs
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


def _is_onnx_source(source: str, options) -> bool:
    if options.framework:
        return options.framework == "onnx"
    return str(source).lower().endswith(".onnx")


def _random_rows(specs: list[InputSpec], batch_sizes, seq_lens, samples, edge_cases) -> int:
    has_batch = any(s.shape and not isinstance(s.shape[0], int) for s in specs)
    has_seq = any(not isinstance(d, int) for s in specs for d in s.shape[1:])
    per_round = (sum(batch_sizes) if has_batch else 1) * (len(seq_lens) if has_seq else 1)
    rounds = 1 if not samples else max(1, -(-samples // max(per_round, 1)))
    edge = 5 * max(batch_sizes) if edge_cases else 0
    return per_round * rounds + edge


def _session(path, options, providers: list[str] | None, timeout: float | None):
    """A session for an ONNX model the user gave: contained in a worker process (every batch
    under ``timeout`` and a memory limit) unless ``--trust``."""
    from onnxkit.core.contained import open_session
    from onnxkit.runtime.providers import provider_options_for
    from onnxkit.runtime.session import select_providers

    chosen = select_providers(providers)
    return open_session(path, trust=options.trust, providers=chosen, provider_options=provider_options_for(chosen),
                        timeout_s=timeout)


def validate_files(
    source: str | None,
    model: str | Path,
    *,
    tolerance: Tolerance,
    options: Any = None,
    data: str | Path | None = None,
    samples: int | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS,
    edge_cases: bool = False,
    seed: int = 0,
    localize: bool = False,
    providers: list[str] | None = None,
    reference_providers: list[str] | None = None,
    save_outputs: str | Path | None = None,
    load_outputs: str | Path | None = None,
    progress: Any = None,
    timeout: float | None = None,
    input_map: dict[str, str] | None = None,
    output_map: dict[str, str] | None = None,
) -> ValidationResult:
    """``onnxkit validate``: SOURCE (any model export loads, or another ONNX file) or saved
    reference outputs, against MODEL.onnx.

    ``progress``, when given, has ``start(total_rows_or_None)``, ``advance(rows)`` and ``stop()``.
    """
    from onnxkit.core.files import check_output_path
    from onnxkit.core.onnx_io import load_onnx
    from onnxkit.errors import UsageError
    from onnxkit.frameworks.base import LoadOptions

    options = options or LoadOptions()
    model = Path(model)
    if source is None and load_outputs is None:
        raise UsageError("give a SOURCE model to compare against, or --load-outputs FILE with saved reference outputs")
    if source is not None and load_outputs is not None:
        raise UsageError("give either SOURCE or --load-outputs, not both: saved outputs are the reference")
    if load_outputs is not None and data is not None:
        raise UsageError("--data cannot be combined with --load-outputs: the saved file holds its own inputs")
    if load_outputs is not None and input_map:
        raise UsageError("--input-map pairs SOURCE's inputs with the model's; saved outputs come with the model's own inputs")
    if save_outputs is not None and load_outputs is not None:
        raise UsageError("--save-outputs and --load-outputs together would only copy the file")
    if samples is not None and samples <= 0:
        raise UsageError("--samples must be a positive integer")
    if not batch_sizes or any(b <= 0 for b in batch_sizes):
        raise UsageError("--batch-sizes must be positive integers")
    if not seq_lens or any(q <= 0 for q in seq_lens):
        raise UsageError("--seq-lens must be positive integers")
    if save_outputs is not None:
        check_output_path(save_outputs, model, source if source and Path(source).exists() else None)

    cand_graph = load_onnx(model, trust=options.trust, load_external=False).model  # safety checks before ORT sees it
    cand_session = _session(model, options, providers, timeout)
    sessions = [cand_session]  # closed (their workers stopped) however this ends
    try:
        return _validate_with(cand_session, sessions, cand_graph, source, model, options=options, tolerance=tolerance,
                              data=data, samples=samples, batch_sizes=batch_sizes, seq_lens=seq_lens,
                              edge_cases=edge_cases, seed=seed, localize=localize, providers=providers,
                              reference_providers=reference_providers, save_outputs=save_outputs,
                              load_outputs=load_outputs, progress=progress, timeout=timeout,
                              input_map=input_map, output_map=output_map)
    finally:
        for s in sessions:
            s.close()


def _validate_with(cand_session, sessions: list, cand_graph, source, model: Path, *, options, tolerance: Tolerance, data,
                   samples, batch_sizes, seq_lens, edge_cases: bool, seed: int, localize: bool, providers,
                   reference_providers, save_outputs, load_outputs, progress, timeout, input_map,
                   output_map) -> ValidationResult:
    from onnxkit.core import mapping
    from onnxkit.core.data import open_data
    from onnxkit.core.onnx_io import load_onnx
    from onnxkit.core.spec import merge_specs
    from onnxkit.passes.large import is_large
    from onnxkit.runtime.session import select_providers

    specs = merge_specs(cand_session.input_specs, mapping.user_specs_for_model(options.inputs, cand_session.input_specs, input_map))
    pairing_note = None
    ordered_outputs = True

    refs = None
    recorded: list | None = None  # reference outputs computed up front (large models)
    reference_model: Any = None  # an ONNX path for localization
    ref_source = None
    label_outputs: tuple[str, ...] = ()
    accepts_nan = False
    if load_outputs is not None:
        from onnxkit.core.references import load_references

        refs = load_references(load_outputs)
        reference: Predict | None = None
        origin = refs.meta.get("source")
        reference_name = f"saved outputs {Path(load_outputs).name}" + (f" (from {origin})" if origin else "")
        label_outputs = tuple(refs.meta.get("label_outputs") or ())
    elif _is_onnx_source(str(source), options):
        ref_graph = load_onnx(source, trust=options.trust, load_external=False).model
        # Two sessions of models over 2 GB would hold both sets of weights at once: then the
        # reference runs first over every batch and is closed before the candidate reopens.
        # (--localize needs both models side by side, so it keeps the concurrent way.)
        sequential = not localize and (is_large(cand_graph) or is_large(ref_graph))
        del cand_graph, ref_graph
        if sequential:
            import gc

            cand_session.close()
            sessions.remove(cand_session)
            del cand_session
            gc.collect()
        ref_session = _session(source, options, reference_providers, timeout)
        sessions.append(ref_session)
        mapping.check_user_spec_names(options.inputs, ref_session.input_specs, specs)
        pairing = mapping.pair_ports([mapping.port_of_spec(s) for s in ref_session.input_specs],
                                     [mapping.port_of_spec(s) for s in specs], explicit=input_map)
        pairing_note = pairing.note("input")
        ordered_outputs = False  # two ONNX files: only names, or types, say which output is which
        reference = mapping.reference_on_model_inputs(ref_session.run, pairing, ref_session.input_specs) \
            if pairing.renamed else ref_session.run
        reference_model = Path(source)
        reference_name = f"{Path(source).name} on {ref_session.providers[0]}"
        if sequential:
            recorded = [(label, feeds, reference(feeds)) for label, feeds in input_sets(
                specs, data=open_data(data, specs) if data is not None else None, batch_sizes=batch_sizes,
                seq_lens=seq_lens, samples=samples, seed=seed, edge_cases=edge_cases)]
            ref_session.close()
            sessions.remove(ref_session)
            del ref_session, reference
            gc.collect()
            reference = None
            cand_session = _session(model, options, providers, timeout)
            sessions.append(cand_session)
    else:
        from onnxkit.frameworks.registry import load_source

        ref_source = load_source(source, options)
        mapping.check_user_spec_names(options.inputs, ref_source.input_specs, specs)
        # A PyTorch module's arguments and returned tuple are positional: its order is the truth.
        ordered_outputs = ref_source.framework == "torch"
        pairing = mapping.pair_ports([mapping.port_of_spec(s) for s in ref_source.input_specs],
                                     [mapping.port_of_spec(s) for s in specs], explicit=input_map, ordered=ordered_outputs)
        pairing_note = pairing.note("input")
        reference = mapping.reference_on_model_inputs(ref_source.predict, pairing, ref_source.input_specs) \
            if pairing.renamed else ref_source.predict
        label_outputs = tuple(ref_source.label_outputs or ())
        accepts_nan = bool(ref_source.accepts_nan)
        reference_name = f"{ref_source.framework} {Path(str(source)).name}"
    candidate_name = f"{model.name} on {cand_session.providers[0]}"

    failing: dict[str, Any] = {}

    def remember(label: str, feeds: Feeds) -> None:
        failing["label"] = label
        failing["feeds"] = {k: np.array(v) for k, v in feeds.items()}

    data_src = open_data(data, specs) if data is not None else None
    if refs is not None:
        total: int | None = sum(int(b.get("rows", 0)) for b in refs.meta["batches"])
    elif data_src is not None:
        total = data_src.count_rows()
        if total is not None and samples:
            total = min(total, samples)
    else:
        total = _random_rows(specs, batch_sizes, seq_lens, samples, edge_cases)

    writer = None
    if save_outputs is not None:
        from onnxkit import __version__
        from onnxkit.core.references import ReferenceWriter

        writer = ReferenceWriter(save_outputs, {
            "source": str(source), "reference": reference_name, "onnxkit_version": __version__,
            "tolerance": tolerance.to_dict(), "label_outputs": list(label_outputs),
        })
    try:
        if progress is not None:
            progress.start(total)
        with writer if writer is not None else _nullcontext():
            result = validate_models(
                reference, cand_session.run, specs, tolerance=tolerance,
                reference_name=reference_name, candidate_name=candidate_name, data=data_src,
                batch_sizes=batch_sizes, seq_lens=seq_lens, samples=samples, seed=seed,
                edge_cases=edge_cases, accepts_nan=accepts_nan,
                progress=progress.advance if progress is not None else None,
                keep=writer.add if writer is not None else None,
                batches=refs.batches() if refs is not None else recorded,
                label_outputs=label_outputs,
                on_first_failure=remember if localize else None,
                output_map=output_map, ordered_outputs=ordered_outputs,
            )
    finally:
        if progress is not None:
            progress.stop()
        if refs is not None:
            refs.close()
    if pairing_note:
        result.notes.insert(0, pairing_note)
    if writer is not None:
        result.saved_outputs = str(save_outputs)
        result.notes.append(f"reference outputs and their inputs saved to {save_outputs}")
    if localize:
        if result.passed or not failing:
            result.notes.append("--localize: every output is within tolerance; nothing to localize")
        elif pairing_note:
            result.notes.append("--localize skipped: the two sides name their inputs differently, so their inner "
                                "tensors cannot be matched by name either")
        else:
            result.localization = _localize(
                reference_model, ref_source, options, model, failing, tolerance,
                select_providers(providers), select_providers(reference_providers),
            )
    return result


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _matching_exporter(options, model: Path):
    """Options that re-export with the exporter that made the candidate: tensor names only
    line up (and localization only works) between exports of the same kind."""
    import dataclasses

    if getattr(options, "exporter", "auto") != "auto":
        return options
    try:
        from onnxkit.core.onnx_io import load_onnx

        m = load_onnx(model, load_external=False, trust=options.trust).model
    except Exception:  # the candidate loaded fine a moment ago; never fail localization on this
        return options
    recorded = {p.key: p.value for p in m.metadata_props}.get("onnxkit.exporter", "").lower()
    if "torchscript" in recorded or (not recorded and m.producer_name == "pytorch" and any(n.name.startswith("/") for n in m.graph.node)):
        return dataclasses.replace(options, exporter="torchscript")
    if "dynamo" in recorded:
        return dataclasses.replace(options, exporter="dynamo")
    return options


def _localize(reference_model, ref_source, options, model: Path, failing: dict, tolerance: Tolerance,
              providers: list[str], reference_providers: list[str]) -> dict[str, Any]:
    import shutil
    import tempfile

    from onnxkit.core.localize import localize
    from onnxkit.errors import OnnxkitError

    label = failing["label"]
    tmpdir = None
    note = ""
    try:
        if reference_model is None and ref_source is not None:
            # Only ONNX-vs-ONNX can be walked node by node: export the source to a temporary
            # ONNX reference with the same exporter, so tensor names line up with the candidate.
            from onnxkit.core.onnx_io import save_onnx

            try:
                outcome = ref_source.export(_matching_exporter(options, model))
            except OnnxkitError as exc:
                return {"message": f"localization needs an ONNX reference and exporting the source failed: {exc.message}",
                        "rows": [["verdict", f"exporting the source for localization failed: {exc.message}"]]}
            tmpdir = Path(tempfile.mkdtemp(prefix="onnxkit-localize-"))
            reference_model = save_onnx(outcome.model, tmpdir / "reference.onnx")
            note = f"the source re-exported to ONNX ({outcome.exporter})"
        if reference_model is None:
            msg = "localization needs a reference model: give SOURCE (a framework model or an ONNX file) instead of --load-outputs"
            return {"message": msg, "rows": [["verdict", msg]]}
        loc = localize(
            reference_model, model, failing["feeds"], tolerance,
            providers=providers, reference_providers=reference_providers,
            reference_label=note or str(reference_model), trust=options.trust,
        )
        d = loc.to_dict()
        rows = loc.summary_rows()
        rows.append(["inputs used", label])
        if note:
            rows.append(["reference", note])
            if not loc.found:
                rows.append(["meaning", "the re-exported reference already matches the candidate: the difference "
                             "lies between the source framework and its ONNX export (an exporter or runtime issue)"])
        d["rows"] = rows
        d["inputs_used"] = label
        return d
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
