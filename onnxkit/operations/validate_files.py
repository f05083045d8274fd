"""``onnxkit validate`` on files: SOURCE (a framework model, another ONNX file, or saved
reference outputs) against MODEL.onnx, each untrusted ONNX side in a contained worker.

The comparison itself is :func:`onnxkit.operations.validate.validate_models`; this module
decides what the two sides are, how their inputs and outputs pair, and what is localized.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.compare import Tolerance
from onnxkit.foundation.data import Feeds
from onnxkit.foundation.spec import InputSpec
from onnxkit.operations.validate import (
    DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENS, ValidationResult, input_sets, validate_models,
)

Predict = Callable[[Feeds], Feeds]


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


def _session(path, options, providers: list[str] | None, timeout: float | None, precision: str | None = None):
    """A session for an ONNX model the user gave: contained in a worker process (every batch
    under ``timeout`` and a memory limit) unless ``--trust``; ``--provider openvino``: the
    OpenVINO runtime, after a contained rehearsal."""
    from onnxkit.runtime import openvino_session
    from onnxkit.runtime.contained import open_session

    if openvino_session.wanted(providers):
        return openvino_session.open_openvino(path, trust=options.trust, first_feeds=openvino_session.sample_feeds(path),
                                              precision=precision)
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
    precision: str | None = None,
    tolerance_given: bool = True,
) -> ValidationResult:
    """``onnxkit validate``: SOURCE (any model export loads, or another ONNX file) or saved
    reference outputs, against MODEL.onnx.

    ``progress``, when given, has ``start(total_rows_or_None)``, ``advance(rows)`` and ``stop()``.
    ``precision``: OpenVINO's inference precision (default: its own pick, reported);
    ``tolerance_given=False`` lets a bf16/f16 run be held to the fp16 preset.
    """
    from onnxkit.foundation.files import check_output_path
    from onnxkit.foundation.onnx_io import load_onnx
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
        check_output_path(save_outputs, model, source, data, options.weights)
    from onnxkit.operations.validate_precision import check_openvino_use, deployed, same_path

    precision = check_openvino_use(precision, providers, reference_providers, localize)

    cand_graph = load_onnx(model, trust=options.trust, load_external=False).model  # safety checks before ORT sees it
    cand_session = _session(model, options, providers, timeout, precision)
    sessions = [cand_session]  # closed (their workers stopped) however this ends
    tolerance, precision_notes = deployed(cand_session, precision, tolerance, tolerance_given)
    try:
        result = _validate_with(cand_session, sessions, cand_graph, source, model, options=options, tolerance=tolerance,
                                data=data, samples=samples, batch_sizes=batch_sizes, seq_lens=seq_lens,
                                edge_cases=edge_cases, seed=seed, localize=localize, providers=providers,
                                reference_providers=reference_providers, save_outputs=save_outputs,
                                load_outputs=load_outputs, progress=progress, timeout=timeout,
                                input_map=input_map, output_map=output_map, precision=precision)
        result.precision = getattr(cand_session, "precision", None)
        if result.precision:
            result.candidate += f" in {result.precision}"
        result.notes.extend(precision_notes)
        result.notes.extend(f"the reference ran on OpenVINO in {s.precision}" for s in sessions
                            if s is not cand_session and getattr(s, "precision", None) and source is not None
                            and same_path(s.path, source))
        return result
    finally:
        for s in sessions:
            s.close()


def _validate_with(cand_session, sessions: list, cand_graph, source, model: Path, *, options, tolerance: Tolerance, data,
                   samples, batch_sizes, seq_lens, edge_cases: bool, seed: int, localize: bool, providers,
                   reference_providers, save_outputs, load_outputs, progress, timeout, input_map,
                   output_map, precision=None) -> ValidationResult:
    from onnxkit.foundation import mapping
    from onnxkit.foundation.data import open_data
    from onnxkit.foundation.spec import merge_specs
    from onnxkit.operations.validate_shapes import ShapeWatch, add_shape_warnings
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
        refs, reference_name, label_outputs = _saved_reference(load_outputs)
        reference: Predict | None = None
    elif _is_onnx_source(str(source), options):
        # Handed over in a list so that no name here keeps the candidate alive while the
        # two models of a large pair run one after the other.
        holder = [cand_session]
        del cand_session
        (cand_session, reference, pairing_note, reference_name, recorded) = _onnx_reference(
            holder, sessions, cand_graph, source, model, specs, options=options, localize=localize, data=data,
            batch_sizes=batch_sizes, seq_lens=seq_lens, samples=samples, seed=seed, edge_cases=edge_cases,
            providers=providers, reference_providers=reference_providers, timeout=timeout, input_map=input_map,
            precision=precision)
        reference_model = Path(source)
        ordered_outputs = False  # two ONNX files: only names, or types, say which output is which
    else:
        ref_source = _load_reference_source(source, options, specs)
        # A PyTorch module's arguments and returned tuple are positional: its order is the truth.
        ordered_outputs = ref_source.framework == "torch"
        reference, pairing_note = _paired(ref_source.predict, ref_source.input_specs, specs, input_map, ordered_outputs)
        label_outputs = tuple(ref_source.label_outputs or ())
        accepts_nan = bool(ref_source.accepts_nan)
        reference_name = f"{ref_source.framework} {Path(str(source)).name}"
    candidate_name = f"{model.name} on {cand_session.providers[0]}"

    failing: dict[str, Any] = {}

    def remember(label: str, feeds: Feeds) -> None:
        failing["label"] = label
        failing["feeds"] = {k: np.array(v) for k, v in feeds.items()}

    data_src = open_data(data, specs) if data is not None else None
    shapes = ShapeWatch(cand_session.run, cand_graph, model.name)
    ref_shapes = None
    if reference_model is not None and reference is not None:
        from onnxkit.foundation.onnx_io import load_onnx

        ref_graph = load_onnx(reference_model, trust=options.trust, load_external=False).model
        reference = ref_shapes = ShapeWatch(reference, ref_graph, reference_model.name)
    total = _total_rows(refs, data_src, specs, samples=samples, batch_sizes=batch_sizes, seq_lens=seq_lens,
                        edge_cases=edge_cases)

    writer = _reference_writer(save_outputs, source, reference_name, tolerance, label_outputs)
    try:
        if progress is not None:
            progress.start(total)
        with writer if writer is not None else _nullcontext():
            result = validate_models(
                reference, shapes, specs, tolerance=tolerance,
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
    add_shape_warnings(result, shapes, ref_shapes)
    if writer is not None:
        result.saved_outputs = str(save_outputs)
        result.notes.append(f"reference outputs and their inputs saved to {save_outputs}")
    if localize:
        _localize_failure(result, failing, pairing_note, reference_model, ref_source, options, model, tolerance,
                          select_providers(providers), select_providers(reference_providers))
    return result


def _onnx_reference(holder: list, sessions: list, cand_graph, source, model: Path, specs, *, options, localize: bool,
                    data, batch_sizes, seq_lens, samples, seed: int, edge_cases: bool, providers, reference_providers,
                    timeout, input_map, precision=None):
    """Another ONNX file as the reference, contained like the candidate. Returns the candidate
    session (reopened when the two models are run one after the other), the reference, the
    pairing note, the reference's name and the reference outputs recorded up front (or None)."""
    from onnxkit.foundation import mapping
    from onnxkit.foundation.data import open_data
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.passes.large import is_large

    cand_session = holder.pop()
    recorded = None
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
    # a reference on OpenVINO runs in float32: it is the yardstick (--precision is the candidate's)
    ref_session = _session(source, options, reference_providers, timeout, "f32")
    sessions.append(ref_session)
    mapping.check_user_spec_names(options.inputs, ref_session.input_specs, specs)
    reference, pairing_note = _paired(ref_session.run, ref_session.input_specs, specs, input_map, False)
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
        cand_session = _session(model, options, providers, timeout, precision)
        sessions.append(cand_session)
    return cand_session, reference, pairing_note, reference_name, recorded


def _saved_reference(load_outputs) -> tuple[Any, str, tuple[str, ...]]:
    """--load-outputs: the saved file, its name for the report, and its label outputs."""
    from onnxkit.foundation.references import load_references

    refs = load_references(load_outputs)
    origin = refs.meta.get("source")
    name = f"saved outputs {Path(load_outputs).name}" + (f" (from {origin})" if origin else "")
    return refs, name, tuple(refs.meta.get("label_outputs") or ())


def _load_reference_source(source, options, specs) -> Any:
    """A framework model to compare against, after checking --input names against both sides."""
    from onnxkit.foundation import mapping
    from onnxkit.frameworks.registry import load_source

    ref_source = load_source(source, options)
    mapping.check_user_spec_names(options.inputs, ref_source.input_specs, specs)
    return ref_source


def _paired(run: Predict, ref_specs, specs, input_map, ordered: bool) -> tuple[Predict, str | None]:
    """The reference fed under the model's input names (paired by name, then order or type),
    and the note that says how, when any pair was not made by name."""
    from onnxkit.foundation import mapping

    pairing = mapping.pair_ports([mapping.port_of_spec(s) for s in ref_specs], [mapping.port_of_spec(s) for s in specs],
                                 explicit=input_map, ordered=ordered)
    reference = mapping.reference_on_model_inputs(run, pairing, ref_specs) if pairing.renamed else run
    return reference, pairing.note("input")


def _total_rows(refs, data_src, specs, *, samples, batch_sizes, seq_lens, edge_cases: bool) -> int | None:
    """How many rows the comparison will see, for the progress bar (None: unknown)."""
    if refs is not None:
        return sum(int(b.get("rows", 0)) for b in refs.meta["batches"])
    if data_src is not None:
        total = data_src.count_rows()
        return min(total, samples) if total is not None and samples else total
    return _random_rows(specs, batch_sizes, seq_lens, samples, edge_cases)


def _reference_writer(save_outputs, source, reference_name: str, tolerance: Tolerance, label_outputs) -> Any:
    """The --save-outputs file, or None."""
    if save_outputs is None:
        return None
    from onnxkit import __version__
    from onnxkit.foundation.references import ReferenceWriter

    return ReferenceWriter(save_outputs, {
        "source": str(source), "reference": reference_name, "onnxkit_version": __version__,
        "tolerance": tolerance.to_dict(), "label_outputs": list(label_outputs),
    })


def _localize_failure(result: ValidationResult, failing: dict, pairing_note, reference_model, ref_source, options,
                      model: Path, tolerance: Tolerance, providers, reference_providers) -> None:
    """--localize: the first node where the two sides part, when there is a failure to explain."""
    if result.passed or not failing:
        result.notes.append("--localize: every output is within tolerance; nothing to localize")
    elif pairing_note:
        result.notes.append("--localize skipped: the two sides name their inputs differently, so their inner "
                            "tensors cannot be matched by name either")
    else:
        result.localization = _localize(reference_model, ref_source, options, model, failing, tolerance,
                                        providers, reference_providers)


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
        from onnxkit.foundation.onnx_io import load_onnx

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

    from onnxkit.operations.localize import localize
    from onnxkit.errors import OnnxkitError

    label = failing["label"]
    tmpdir = None
    note = ""
    try:
        if reference_model is None and ref_source is not None:
            # Only ONNX-vs-ONNX can be walked node by node: export the source to a temporary
            # ONNX reference with the same exporter, so tensor names line up with the candidate.
            from onnxkit.foundation.onnx_io import save_onnx

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
