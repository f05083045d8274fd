"""``onnxkit export``: load a source model, convert it, check it, write it, validate it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit import __version__
from onnxkit.foundation.compare import Tolerance
from onnxkit.foundation.files import check_output_path, sha256_file
from onnxkit.operations.validate import DEFAULT_BATCH_SIZES, ValidationResult, validate_models
from onnxkit.errors import ConversionError, InputError, Interrupted, UsageError
from onnxkit.frameworks.base import LoadOptions, SourceModel
from onnxkit.results import Result, Table, fmt_bytes

log = logging.getLogger(__name__)


@dataclass
class ExportResult(Result):
    source: str = ""
    output: str = ""
    framework: str = ""
    framework_version: str = ""
    exporter: str = ""
    opset: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    file_size: int = 0
    source_sha256: str = ""
    weights: str = ""                     # factory sources: the state_dict file, or that none was asked for
    checker_ok: bool = True
    checker_problems: list[str] = field(default_factory=list)
    export_seconds: float = 0.0
    validation: ValidationResult | None = None

    def tables(self) -> list[Table]:
        def shape(d: dict) -> str:
            return f"{d['dtype']}[{', '.join('?' if x is None else str(x) for x in d['shape'])}]"

        rows = [
            ["source", f"{self.source} ({self.framework} {self.framework_version})"],
            *([["weights", self.weights]] if self.weights else []),
            ["exporter", self.exporter + (f", opset {self.opset}" if self.opset else "")],
            ["output", f"{self.output} ({fmt_bytes(self.file_size)})"],
            ["inputs", "; ".join(f"{d['name']}: {shape(d)}" for d in self.inputs)],
            ["outputs", "; ".join(f"{d['name']}: {shape(d)}" for d in self.outputs)],
            ["checker", "ok" if self.checker_ok else "; ".join(self.checker_problems)],
            ["time", f"{self.export_seconds:.2f} s"],
        ]
        tables = [Table("Export", ["property", "value"], rows)]
        if self.validation is not None:
            tables.extend(self.validation.tables())
        return tables


def source_digest(source: str | Path, options: LoadOptions) -> str:
    """sha256 of the source file (or directory, or factory file plus weights)."""
    s = str(source)
    p = Path(s)
    if not p.exists() and ":" in s:  # a factory reference: path/to/file.py:func
        target = Path(s.rsplit(":", 1)[0])
        parts = [sha256_file(target)] if target.exists() else []
        if options.weights:
            parts.append(sha256_file(options.weights))
        return ":".join(parts)
    return sha256_file(p)


def check_weights_options(source: str | Path, options: LoadOptions) -> None:
    """A factory builds its model with whatever weights its code gives it (a random
    initialization, usually): exporting that must be asked for, never a silent default.
    Checked before the factory's code runs."""
    from onnxkit.frameworks.registry import is_factory_ref

    factory = is_factory_ref(str(source))
    if not factory:
        for given, flag in ((options.weights is not None, "--weights"), (options.random_weights, "--random-weights")):
            if given:
                raise UsageError(f"{flag} applies to a PyTorch factory source (file.py:function); {Path(str(source)).name} is not one")
        return
    if options.weights is not None and options.random_weights:
        raise UsageError("--weights and --random-weights contradict each other; give one")
    if options.weights is None and not options.random_weights:
        raise UsageError(
            f"{source} builds its model in code: pass --weights STATE.pt with the trained state_dict, or "
            "--random-weights to export the model exactly as the factory builds it (its random initialization, "
            "or weights the factory loads itself)",
            hint="in a pipeline config: [source] weights = \"state.pt\", or [export] random_weights = true",
        )


def weights_label(source: str | Path, options: LoadOptions) -> str:
    """What the weights of an export came from, for reports; empty for sources that hold their own."""
    from onnxkit.frameworks.registry import is_factory_ref

    if not is_factory_ref(str(source)):
        return ""
    if options.weights is not None:
        return str(options.weights)
    return "as built by the factory (--random-weights)"


def _plausible_batches(model_src, batch_sizes, seed):
    """Batches a source draws itself where random normal rows are invalid for it (encoders,
    categorical naive Bayes, radius neighbours); None to use the usual random inputs."""
    draw = getattr(model_src, "plausible_feeds", None)
    if draw is None:
        return None
    drawn = [draw(b, seed + i) for i, b in enumerate(batch_sizes)]
    if not drawn or any(d is None for d in drawn):
        return None
    return [(f"{how} (batch={b})", feeds, None) for b, (feeds, how) in zip(batch_sizes, drawn)]


def add_metadata(model, entries: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        if key in existing:
            existing[key].value = value
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value


def _checker_problems(path: Path) -> list[str]:
    from onnxkit.operations.inspect import check_model_file

    return check_model_file(path, [f.name for f in path.parent.iterdir() if f != path])


def _io_dicts(specs) -> list[dict[str, Any]]:
    return [s.to_dict() for s in specs]


def _stamp(model: Any, model_src: SourceModel, outcome: Any, source: str | Path, options: LoadOptions) -> str:
    """Provenance in the model's own metadata; returns the source's digest."""
    digest = source_digest(source, options)
    add_metadata(model, {
        "onnxkit.version": __version__,
        "onnxkit.source_framework": model_src.framework,
        "onnxkit.source_framework_version": model_src.framework_version,
        "onnxkit.source_sha256": digest,
        "onnxkit.source_name": Path(str(source)).name,
        "onnxkit.exporter": outcome.exporter,
        "onnxkit.input_spec": json.dumps([s.to_dict() for s in (options.inputs or model_src.input_specs)]),
    })
    return digest


def _validate_staged(result: ExportResult, staged: Path, model_src: SourceModel, out: Path, *,
                     tolerance: Tolerance | None, batch_sizes: tuple[int, ...], seed: int, data: str | Path | None) -> None:
    """The staged file against its source, on random rows or the user's ``data``."""
    from onnxkit.foundation.data import open_data
    from onnxkit.foundation.spec import with_bounds
    from onnxkit.runtime.session import make_session

    session = make_session(staged)
    drawn = _plausible_batches(model_src, batch_sizes, seed) if data is None else None
    if drawn:
        result.notes.append(f"validated on {drawn[0][0].split(' (')[0]}: random normal rows are invalid for this model")
    # The source may know index ranges the exported graph hides (a Keras Embedding behind
    # tf2onnx's casts): random ids must stay inside both.
    known = {s.name: s.high for s in session.input_specs if s.high is not None}
    specs = with_bounds(session.input_specs, {s.name: min(s.high, known.get(s.name, s.high)) for s in model_src.input_specs
                                              if s.high is not None and s.dtype.kind in "iu"})
    def exported(feeds):
        # validate_models runs the source first: an error here is the exported graph's, on
        # inputs the source accepted, so a broken conversion, not a bad input.
        try:
            return session.run(feeds)
        except InputError as exc:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise ConversionError(
                f"the exported model does not run on inputs the {model_src.framework} model accepts ({shapes}): "
                f"{exc.message}", hint="the exporter likely fixed a size the model treats as dynamic; try another "
                "--exporter or --opset, or fixed sizes in --input; nothing was written") from exc

    result.validation = validate_models(
        model_src.predict,
        exported,
        specs,
        tolerance=tolerance or Tolerance(),
        reference_name=f"{model_src.framework} {Path(result.source).name}",
        candidate_name=out.name,
        batch_sizes=batch_sizes,
        seed=seed,
        data=open_data(data, session.input_specs) if data is not None else None,
        batches=drawn,
    )
    result.validation.command = "export"
    result.passed = result.validation.passed
    if not result.passed:
        result.notes.append(f"validation failed; {out} was written so you can inspect it")


def export_model(
    source: str | Path,
    output: str | Path,
    options: LoadOptions | None = None,
    *,
    validate: bool = True,
    tolerance: Tolerance | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seed: int = 0,
    loaded: SourceModel | None = None,
    data: str | Path | None = None,
) -> ExportResult:
    """Export ``source`` to ``output``; check and validate it; write it atomically.

    The file is written even when validation fails (the result says so); when anything
    raises, no file is left behind and a previous ``output`` stays as it was.
    """
    from onnxkit.foundation.onnx_io import save_onnx
    from onnxkit.foundation.spec import outputs_from_onnx, specs_from_onnx
    from onnxkit.frameworks.registry import load_source

    options = options or LoadOptions()
    from onnxkit.operations.hf_export import export_hf_folder, is_hf_source

    if is_hf_source(source, options):
        return export_hf_folder(source, output, options, validate=validate, tolerance=tolerance, loaded=loaded, data=data)
    if options.task or options.texts or options.generate is not None:
        raise UsageError("--task, --text and --generate apply to a Hugging Face model folder (config.json + safetensors)")
    check_weights_options(source, options)
    if data is not None and not validate:
        raise UsageError("--data gives the rows to validate on; it has no use with --no-validate")
    from onnxkit.foundation.files import preflight
    from onnxkit.frameworks.registry import is_factory_ref

    if not is_factory_ref(str(source)):  # a missing source says so before -o is judged
        preflight(source, what="source", allow_dir=True)
    out = check_output_path(output, source, options.weights, options.sample, data, onnx=True)
    t0 = time.perf_counter()
    model_src = loaded or load_source(source, options)
    if options.output_names and model_src.framework != "torch":
        raise UsageError(f"--output-names applies to PyTorch sources; this {model_src.framework} model names its outputs "
                         f"itself ({', '.join(model_src.output_names or []) or 'from the model'})")
    outcome = model_src.export(options)
    model = outcome.model
    if model is None:
        raise ConversionError(f"the {model_src.framework} exporter returned no model")
    opset = outcome.opset or next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    digest = _stamp(model, model_src, outcome, source, options)
    export_seconds = time.perf_counter() - t0

    # Stage in a hidden folder beside the destination so the model and any external data
    # are checked and validated under their final names, then moved into place together.
    staging = Path(tempfile.mkdtemp(prefix=".onnxkit-export-", dir=out.parent if str(out.parent) else "."))
    try:
        staged = staging / out.name
        save_onnx(model, staged)
        problems = _checker_problems(staged)
        specs = specs_from_onnx(model)
        result = ExportResult(
            command="export",
            source=str(source),
            output=str(out),
            framework=model_src.framework,
            framework_version=model_src.framework_version,
            exporter=outcome.exporter,
            opset=opset,
            inputs=_io_dicts(specs),
            outputs=_io_dicts(outputs_from_onnx(model)),
            source_sha256=digest,
            weights=weights_label(source, options),
            checker_ok=not problems,
            checker_problems=problems,
            export_seconds=export_seconds,
            notes=list(outcome.notes),
        )
        if problems:
            result.passed = False
            result.notes.append("onnx.checker rejected the exported model; it was written for inspection")
        elif validate:
            _validate_staged(result, staged, model_src, out, tolerance=tolerance, batch_sizes=batch_sizes, seed=seed,
                             data=data)
        else:
            result.notes.append("validation skipped (--no-validate)")
        # Data files first: a reader that sees the new .onnx always finds its data.
        moved = sorted(staging.iterdir(), key=lambda p: p.name == out.name)
        for f in moved:
            os.replace(f, out.parent / f.name)
        result.file_size = out.stat().st_size
        return result
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
