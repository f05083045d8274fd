"""``onnxkit optimize``: graph passes, transformer fusions, ORT offline optimization, fp16,
opset conversion; then a report with node counts, sizes, latency and a validation of the
result against the input model."""

from __future__ import annotations

import collections
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.foundation.files import check_output_path
from onnxkit.foundation.onnx_io import load_onnx, save_onnx
from onnxkit.errors import ConversionError, UsageError
from onnxkit.results import Result, Table, fmt_bytes, fmt_num

log = logging.getLogger(__name__)

LEVELS = ("basic", "extended", "all")


# ---------------------------------------------------------------- shared helpers (quantize uses them)

def op_histogram(model: Any) -> dict[str, int]:
    c = collections.Counter((f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def file_size(path: str | os.PathLike[str], external: list[str] | None = None) -> int:
    p = Path(path)
    total = p.stat().st_size
    for name in external or []:
        f = p.parent / name
        if f.exists():
            total += f.stat().st_size
    data = p.parent / (p.name + ".data")
    if not external and data.exists():
        total += data.stat().st_size
    return total


def interleaved_latency(models: list[Any], feeds: dict, *, rounds: int = 10, warmup: int = 2, threads: int | None = None) -> list[float]:
    """Median milliseconds per run of each model, timed interleaved by the bench core so
    that load from other processes hits every model alike."""
    from onnxkit.foundation.data import feeds_rows
    from onnxkit.runtime.bench import bench_models

    batch = feeds_rows(feeds)
    names = [f"model{i}" for i in range(len(models))]
    res = bench_models(list(models), {batch: feeds}, iterations=rounds, warmup=warmup, threads=threads, names=names)
    return [res.entry(n, batch).stats.p50_ms for n in names]


def latency_feeds(specs: list, *, batch: int = 1, seq: int = 32, seed: int = 0) -> dict:
    from onnxkit.foundation.data import random_feeds

    return random_feeds(specs, batch=batch, seq=seq, seed=seed)


def feeds_label(feeds: dict) -> str:
    """What was timed, from the arrays themselves: a CNN has no sequence length to quote.
    ``random image 1x3x32x32``; inputs of one shape share it: ``random a, b 1x32``."""
    shapes: dict[str, list[str]] = {}
    for name, arr in feeds.items():
        shapes.setdefault("x".join(str(d) for d in getattr(arr, "shape", ())) or "scalar", []).append(name)
    return "random " + "; ".join(f"{', '.join(names)} {shape}" for shape, names in shapes.items())


def validate_pair(reference: Any, candidate: Any, specs: list, tolerance: Any, *, data: Any = None,
                  ref_name: str = "input", cand_name: str = "output") -> Any:
    """Run both models on the same batches (the user's data, else seeded random inputs at two
    batch sizes) through the shared validator."""
    from onnxkit.operations.validate import onnx_predict, validate_models
    from onnxkit.runtime.session import make_session

    from onnxkit.operations.validate_shapes import add_shape_warnings, watch_file

    ref = make_session(reference)
    cand = make_session(candidate)
    # The input's annotation only: the output inherits it, one note is enough.
    watch = watch_file(onnx_predict(ref), reference)
    v = validate_models(watch or onnx_predict(ref), onnx_predict(cand), specs, tolerance=tolerance,
                        reference_name=ref_name, candidate_name=cand_name, data=data,
                        batch_sizes=(1, 4), seq_lens=(16, 32))
    add_shape_warnings(v, watch)
    return v


def histogram_table(title: str, before: dict[str, int], after: dict[str, int]) -> Table:
    ops = sorted(set(before) | set(after), key=lambda o: (-(after.get(o, 0) + before.get(o, 0)), o))
    rows = [[o, before.get(o, 0), after.get(o, 0), f"{after.get(o, 0) - before.get(o, 0):+d}"] for o in ops]
    return Table(title, ["op", "before", "after", "change"], rows)


def validation_rows(outputs: list) -> list[list[Any]]:
    return [[o.name, o.max_abs, o.mean_abs, o.cosine, "pass" if o.passed else "FAIL", "; ".join(o.problems) or "-"] for o in outputs]


# ---------------------------------------------------------------- result

@dataclass
class OptimizeResult(Result):
    model: str = ""
    output: str = ""
    passes: list[dict[str, Any]] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    size_before: int = 0
    size_after: int = 0
    opset_before: int | None = None
    opset_after: int | None = None
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency_feeds: str = ""
    transformer: dict[str, Any] | None = None
    fp16: bool = False
    ort_level: str | None = None
    validated: bool = False
    validation: dict[str, Any] | None = None
    ort: dict[str, Any] | None = None  # -o model.ort: the ORT-format file and its config (optimize_ort.py)

    def tables(self) -> list[Table]:
        speed = (self.latency_ms_before / self.latency_ms_after) if self.latency_ms_before and self.latency_ms_after else None
        summary = Table(f"optimize {Path(self.model).name} -> {Path(self.output).name}", ["", "before", "after"], [
            ["nodes", self.nodes_before, self.nodes_after],
            ["file size", fmt_bytes(self.size_before), fmt_bytes(self.size_after)],
            ["opset", fmt_num(self.opset_before), fmt_num(self.opset_after)],
            [f"latency CPU ({self.latency_feeds})", f"{fmt_num(self.latency_ms_before)} ms", f"{fmt_num(self.latency_ms_after)} ms" + (f" ({speed:.2f}x)" if speed else "")],
        ])
        tables = [summary]
        if self.passes:
            tables.append(Table("Passes", ["pass", "changed", "nodes", "seconds"], [
                [p["name"], p["changed"], f"{p['nodes_before']} -> {p['nodes_after']}", f"{p['seconds']:.2f}"] for p in self.passes]))
        tables.append(histogram_table("Operators", self.ops_before, self.ops_after))
        if self.transformer:
            t = self.transformer
            rows = [["model type", t.get("model_type")], ["heads / hidden", f"{t.get('num_heads')} / {t.get('hidden_size')}"],
                    ["fuser kept", t.get("fuser")], ["node counts", ", ".join(f"{k}: {v}" for k, v in t.get("candidates", {}).items())],
                    ["fused ops", ", ".join(f"{k} x{v}" for k, v in t.get("fused_ops", {}).items()) or "none"]]
            rows += [["not fused", m] for m in t.get("missing", [])]
            tables.append(Table("Transformer fusions", ["", ""], rows))
        if self.validation:
            v = self.validation
            tables.append(Table(f"Validation against the input ({v.get('samples')} samples, {v.get('tolerance', {}).get('preset')} tolerance)",
                                ["output", "max abs", "mean abs", "cosine", "verdict", "why"], v.get("rows", [])))
        if self.ort:
            from onnxkit.operations.optimize_ort import ort_table

            tables.append(ort_table(self))
        return tables


# ---------------------------------------------------------------- the command

def _opset_of(model: Any) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _new_result(loaded: Any, output: str | os.PathLike[str], *, fp16: bool, level: str | None) -> OptimizeResult:
    """The result with everything known about the input model filled in."""
    model = loaded.model
    res = OptimizeResult(command="optimize", model=str(loaded.path), output=str(output), fp16=fp16, ort_level=level)
    res.notes.extend(loaded.warnings)
    res.nodes_before = len(model.graph.node)
    res.ops_before = op_histogram(model)
    res.size_before = file_size(loaded.path, loaded.external_files)
    res.opset_before = _opset_of(model)
    return res


def convert_opset(model: Any, opset: int) -> Any:
    import onnx
    from onnx import version_converter

    top = onnx.defs.onnx_opset_version()
    if opset < 7 or opset > top:
        raise UsageError(f"--opset {opset} out of range; the installed onnx supports 7..{top}")
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:
        from onnxkit.operations.optimize_opset import opset_failure

        message, hint = opset_failure(exc, _opset_of(model), opset)
        raise ConversionError(message, hint=hint) from exc


def _record_outcome(res: Any, records: list, model: Any, level: str | None) -> None:
    """What the passes did, for the report: the same whether the graph was optimized in memory
    or by path (over 2 GB)."""
    if level == "all":
        res.notes.append("ORT level 'all' adds layout- and hardware-specific ops: the file now runs only with "
                         "the CPU execution provider of this onnxruntime version")
    res.passes = [vars(r) | {"detail": r.detail} for r in records]
    res.nodes_after = len(model.graph.node)
    res.ops_after = op_histogram(model)
    res.opset_after = _opset_of(model)


def optimize_model(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    preset: str | None = "default",
    passes: list[str] | None = None,
    level: str | None = None,
    transformer: str | None = None,
    num_heads: int = 0,
    hidden_size: int = 0,
    fp16: bool = False,
    opset: int | None = None,
    tol: list[str] | None = None,
    rtol: float | None = None,
    validate: bool = True,
    latency: bool = True,
    trust: bool = False,
    after_fusion: list[str] | None = None,
    probe: bool = False,
) -> OptimizeResult:
    if Path(model_path).is_dir():  # an exported Hugging Face folder: every ONNX file in it, side files copied
        arguments = dict(locals())
        from onnxkit.operations.hf_folder_ops import optimize_folder
        return optimize_folder(**arguments)
    from onnxkit import passes as P
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.foundation.spec import specs_from_onnx

    if level is not None and level not in LEVELS:
        raise UsageError(f"unknown --level {level!r}; choose from {', '.join(LEVELS)}")
    if transformer is not None:
        from onnxkit.passes.transformer import MODEL_TYPES

        if transformer not in MODEL_TYPES:
            raise UsageError(f"unknown --transformer {transformer!r}; choose from {', '.join(MODEL_TYPES)}")
    chosen = P.resolve(preset, passes)  # unknown names fail here, before any work
    post = P.resolve(None, after_fusion) if after_fusion else []
    tolerance = make_tolerance(tol, rtol, preset="fp16" if fp16 else "fp32")
    check_output_path(output, model_path, onnx=True)
    from onnxkit.passes.large import is_large

    # Graph first: whether the weights may be loaded at all depends on their size.
    loaded = load_onnx(model_path, trust=trust, load_external=False)
    if probe:  # an untrusted input runs once in a contained child before ORT loads it here
        from onnxkit.operations.rehearse import probe_model_file

        probe_model_file(model_path, loaded.model)
    if is_large(loaded.model):
        if post:
            raise UsageError("passes after transformer fusion are not available for models over 2 GB")
        return _optimize_large(loaded, output, chosen, level=level, transformer=transformer, fp16=fp16, opset=opset,
                               tolerance=tolerance, validate=validate, latency=latency)
    if loaded.external_files:
        loaded = load_onnx(model_path, trust=trust)
    original = loaded.model
    res = _new_result(loaded, output, fp16=fp16, level=level)

    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(original)
    records: list[P.PassRecord] = []
    if opset is not None and opset != res.opset_before:
        t0 = time.perf_counter()
        n0 = len(model.graph.node)
        model = convert_opset(model, opset)
        records.append(P.PassRecord(f"opset {res.opset_before} -> {opset}", True, n0, len(model.graph.node), time.perf_counter() - t0))
    model, recs = P.run_passes(model, chosen)
    records.extend(recs)
    if transformer:
        from onnxkit.passes.transformer import fuse_transformer

        t0 = time.perf_counter()
        n0 = len(model.graph.node)
        model, trep = fuse_transformer(model, transformer, num_heads, hidden_size)
        records.append(P.PassRecord(f"transformer ({trep.model_type}, {trep.fuser})", n0 != len(model.graph.node), n0, len(model.graph.node), time.perf_counter() - t0))
        from dataclasses import asdict

        res.transformer = asdict(trep)
        for m in trep.missing:
            res.notes.append(f"transformer: {m}")
    if post:
        model, recs = P.run_passes(model, post)
        records.extend(recs)
    if fp16:
        from onnxkit.passes.fp16 import fp16_pass

        model, rec = P.apply_pass(P.Pass("fp16", "onnxruntime.transformers", "float16 conversion", fp16_pass), model)
        records.append(rec)
    if level:
        model, rec = P.apply_pass(f"ort_{level}", model)
        records.append(rec)
    _record_outcome(res, records, model, level)
    save_onnx(model, output)
    res.size_after = file_size(output)

    _measure_and_validate(res, model_path, output, specs_from_onnx(original), tolerance,
                          latency=latency, validate=validate, large=False)
    return res


def _measure_and_validate(res: OptimizeResult, model_path, output, specs: list, tolerance: Any, *,
                          latency: bool, validate: bool, large: bool) -> None:
    """Latency before/after and validation of the output against the input. A large model
    is measured one session at a time: two sessions would hold its weights twice."""
    if latency:
        try:
            feeds = latency_feeds(specs)
            if large:
                from onnxkit.passes.large import sequential_latency

                res.latency_ms_before, res.latency_ms_after = sequential_latency([str(model_path), str(output)], feeds, rounds=10)
                res.latency_feeds = f"{feeds_label(feeds)}, one model after the other"
            else:
                res.latency_ms_before, res.latency_ms_after = interleaved_latency([str(model_path), str(output)], feeds, rounds=10)
                res.latency_feeds = feeds_label(feeds)
        except Exception as exc:  # latency is informative; a failure here must not hide the result
            res.notes.append(f"latency not measured: {exc}")
    if not validate:
        res.notes.append("validation skipped (--no-validate): the result was not compared with the input")
        return
    compare = validate_pair_sequential if large else validate_pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = compare(str(model_path), str(output), specs, tolerance)
    res.validated = True
    from onnxkit.operations.validate_shapes import declared_shape_notes

    res.notes.extend(declared_shape_notes(v))
    res.validation = {"passed": v.passed, "samples": v.samples, "tolerance": v.tolerance,
                      "outputs": [o.to_dict() for o in v.outputs], "rows": validation_rows(v.outputs)}
    if not v.passed:
        res.passed = False
        res.notes.append(f"the optimized model differs from the input beyond tolerance; {output} was written anyway")


# ---------------------------------------------------------------- models over the protobuf limit

# Passes that only read or annotate the graph: they run on the graph-only proto.
_GRAPH_ONLY_PASSES = {"shape_inference"}
# Passes that need the whole model in one protobuf; on a large model ORT's basic level
# (constant folding, redundant-node elimination, standard-op fusions) stands in for them.
_REPLACED_BY_ORT_BASIC = {"constant_folding", "onnxscript_optimize", "fuse_and_eliminate"}


def _optimize_large(loaded: Any, output: str | os.PathLike[str], chosen: list, *, level: str | None, transformer: str | None,
                    fp16: bool, opset: int | None, tolerance: Any, validate: bool, latency: bool) -> OptimizeResult:
    """optimize for a model whose weights exceed the protobuf limit: the weights never enter
    this process; ONNX Runtime reads them by path, and the writer copies them in chunks.

    Peak memory is then what ONNX Runtime needs for one session (it maps the external data)
    plus the graph, instead of several in-memory copies of the weights."""
    import gc
    import tempfile

    from onnxkit import passes as P
    from onnxkit.foundation.spec import specs_from_onnx
    from onnxkit.passes.large import load_graph, ort_optimize_file, save_streaming

    if fp16 or transformer:
        what = "--fp16" if fp16 else "--transformer"
        raise UsageError(f"{what} is not supported on models over 2 GB: it needs every weight in memory at once",
                         hint="run the other passes here, or convert a smaller export")
    model_path = loaded.path
    model = loaded.model
    res = _new_result(loaded, output, fp16=False, level=level)
    specs = specs_from_onnx(model)
    res.notes.append("model over 2 GB: weights stay on disk; ONNX Runtime reads them by path and they are copied "
                     "to the output in chunks")
    records: list[P.PassRecord] = []
    out_dir = Path(output).parent
    # Scratch beside the output: it holds full copies of the weights, which /tmp may not fit.
    with tempfile.TemporaryDirectory(prefix=".onnxkit-opt-", dir=out_dir) as tmp:
        work = Path(tmp)
        base_dir = model_path.parent  # where the proto's external references resolve
        on_disk: Path | None = model_path  # a file equal to ``model`` in meaning, if there is one
        step = 0

        def materialize() -> Path:
            nonlocal on_disk, base_dir, step
            if on_disk is None:
                step += 1
                dest = work / f"step{step}.onnx"
                save_streaming(model, base_dir, dest)
                on_disk, base_dir = dest, work
            return on_disk

        def run_ort(name: str, lvl: str) -> None:
            nonlocal model, on_disk, base_dir, step
            src = materialize()
            step += 1
            dest = work / f"step{step}.onnx"
            t0 = time.perf_counter()
            n0 = len(model.graph.node)
            before = P._fingerprint(model)
            ort_optimize_file(src, dest, lvl)
            del model
            gc.collect()
            model = load_graph(dest)
            on_disk, base_dir = dest, work
            records.append(P.PassRecord(name, P._fingerprint(model) != before, n0, len(model.graph.node),
                                        time.perf_counter() - t0))

        if opset is not None and opset != res.opset_before:
            t0 = time.perf_counter()
            n0 = len(model.graph.node)
            model = convert_opset(model, opset)
            on_disk = None
            records.append(P.PassRecord(f"opset {res.opset_before} -> {opset}", True, n0, len(model.graph.node), time.perf_counter() - t0))
        replaced: list[str] = []
        skipped: list[str] = []
        for p in chosen:
            if p.name in _GRAPH_ONLY_PASSES:
                model, rec = P.apply_pass(p, model)  # value_info only: the file on disk still means the same
                records.append(rec)
            elif p.group == "onnxruntime":
                run_ort(p.name, p.name.removeprefix("ort_"))
            elif p.name in _REPLACED_BY_ORT_BASIC:
                if not replaced:
                    run_ort(f"ort_basic (in place of {p.name})", "basic")
                replaced.append(p.name)
            else:
                skipped.append(p.name)
        if replaced:
            res.notes.append(f"{', '.join(sorted(set(replaced)))}: replaced by ONNX Runtime's basic level (constant folding, "
                             "redundant-node elimination, standard-op fusions): onnxscript and onnxoptimizer serialize the "
                             "whole model into one protobuf, which cannot exceed 2 GB")
        if skipped:
            res.notes.append(f"skipped on a model over 2 GB: {', '.join(skipped)} (onnxoptimizer/onnxscript serialize "
                             "the whole model into one protobuf, which cannot exceed 2 GB)")
        if level:
            run_ort(f"ort_{level}", level)
        _record_outcome(res, records, model, level)
        save_streaming(model, base_dir, output)
        del model
        gc.collect()
    res.size_after = file_size(output)

    _measure_and_validate(res, model_path, output, specs, tolerance, latency=latency, validate=validate, large=True)
    return res


def validate_pair_sequential(reference: str, candidate: str, specs: list, tolerance: Any, *, data: Any = None,
                             ref_name: str = "input", cand_name: str = "output",
                             batch_sizes: tuple[int, ...] = (1, 4), seq_lens: tuple[int, ...] = (16, 32)) -> Any:
    """validate_pair with one session alive at a time: the reference runs over every batch
    first and its outputs (small) are kept; its session is closed before the candidate's
    opens, so two large models never hold their weights side by side."""
    import gc

    from onnxkit.operations.validate import input_sets, validate_models
    from onnxkit.runtime.session import make_session

    ref = make_session(reference)
    recorded = [(label, feeds, ref.run(feeds))
                for label, feeds in input_sets(specs, data=data, batch_sizes=batch_sizes, seq_lens=seq_lens)]
    del ref
    gc.collect()
    cand = make_session(candidate)
    return validate_models(None, cand.run, specs, tolerance=tolerance, reference_name=ref_name, candidate_name=cand_name,
                           batches=recorded)
