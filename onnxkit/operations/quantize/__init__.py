"""``onnxkit quantize``: dynamic / static int8, weight-only int4 and fp16, with an accuracy
budget enforced by excluding the most sensitive nodes until the quantized model is within it.

Defaults come from measurements on all-MiniLM-L6-v2 (sentence-embedding cosine vs fp32):
per-tensor dynamic int8 (the library default) 0.957; per-channel 0.989; per-channel with
the single most sensitive MatMul kept in float 0.992. Hence per-channel on, and a budget
of cosine >= 0.99 that the loop below enforces.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import UsageError
from onnxkit.foundation.data import feeds_rows
from onnxkit.foundation.files import check_output_path
from onnxkit.foundation.onnx_io import load_onnx, save_onnx
from onnxkit.operations.optimize import file_size, interleaved_latency, latency_feeds, op_histogram
from onnxkit.operations.quantize.budget import (
    ErrorMeasure,
    measure_error,
    ignore_padding,
    rank_sensitivity,
    FUSION_TOLERANCE,
    _keep_if_faithful,
    _budget_loop,
)
from onnxkit.operations.quantize.calibration import (
    _Batches,
)
from onnxkit.operations.quantize.checks import check_finite_weights, check_quantizable, check_something_quantized, conv_hint
from onnxkit.operations.quantize.engines import (
    preprocess,
    _prepare_large,
    cpu_has_vnni,
    default_reduce_range,
    prune_unused_opsets,
    run_quantizer,
)
from onnxkit.operations.quantize.options import (
    MODES,
    METRICS,
    CALIB_METHODS,
    DEFAULT_BUDGET,
    RANDOM_DATA_BUDGET_FACTOR,
    default_budget,
    random_budget_note,
    FUSED_MODES,
    WEIGHTED_OPS,
    QUANT_OPS,
    MAX_BUDGET_ROUNDS,
    QuantConfig,
)
from onnxkit.operations.quantize.result import (
    QuantizeResult,
    _quantized_count,
    _fp16_count,
)
from onnxkit.operations.quantize.selection import (
    source_layers,
    select_nodes,
    select_ops,
    map_to_prepared,
    _name_nodes,
    left_in_float,
)

log = logging.getLogger(__name__)


def quantize_model(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    mode: str = "dynamic",
    calib_data: str | None = None,
    calib_random: int = 0,
    calib_method: str = "minmax",
    fmt: str = "qdq",
    per_channel: bool = True,
    weight_type: str = "int8",
    activation_type: str = "uint8",
    exclude_ops: list[str] | None = None,
    exclude_nodes: list[str] | None = None,
    max_error: float | None = None,
    budget: bool = True,
    metric: str = "cosine",
    data: str | None = None,
    block_size: int = 128,
    reduce_range: bool | None = None,
    seed: int = 0,
    latency: bool = True,
    trust: bool = False,
    probe: bool = False,
    fuse: bool = True,
    target_cpu: str = "portable",
) -> QuantizeResult:
    if Path(model_path).is_dir():  # an exported Hugging Face folder: every ONNX file in it, side files copied
        arguments = dict(locals())
        from onnxkit.operations.hf_folder_ops import quantize_folder
        return quantize_folder(**arguments)
    from onnxkit.operations.quantize import target as quantize_target
    from onnxkit.foundation.spec import specs_from_onnx

    _check_arguments(mode=mode, metric=metric, calib_method=calib_method, fmt=fmt, weight_type=weight_type,
                     activation_type=activation_type, block_size=block_size, calib_random=calib_random,
                     calib_data=calib_data, max_error=max_error)
    target = quantize_target.resolve_target(target_cpu)
    check_output_path(output, model_path, calib_data, data, onnx=True)
    loaded, large = _load_input(model_path, trust=trust, mode=mode)
    original = loaded.model
    _name_nodes(original)
    check_quantizable(original, mode)
    check_finite_weights(original, mode)
    specs = specs_from_onnx(original)
    res = _new_result(model_path, output, loaded, original, mode=mode, metric=metric, per_channel=per_channel,
                      weight_type=weight_type, fmt=fmt, budget=budget, max_error=max_error,
                      real_data=bool(data or calib_data))

    calib, eval_batches = _data_sources(res, specs, mode=mode, calib_data=calib_data, calib_random=calib_random,
                                        calib_method=calib_method, data=data, seed=seed, max_error=max_error)
    if probe:  # the untrusted input, contained, on what it is measured and calibrated with below
        from onnxkit.operations.rehearse import probe_model_file

        random_calib = list(calib) if calib is not None and not calib.data_path else []
        probe_model_file(model_path, original, extra=eval_batches + random_calib, data=calib_data)

    # The CPU the model is made for decides the weight range, not the one quantizing it.
    requested_range = reduce_range
    reduce_range, int8_weights, range_notes = quantize_target.choose_reduce_range(target, reduce_range, mode=mode,
                                                                                  weight_type=weight_type)
    res.notes.extend(range_notes)
    res.reduce_range = reduce_range
    res.target_cpu = target.to_dict(reduce_range=reduce_range, weights=int8_weights)
    cfg = QuantConfig(mode=mode, fmt=fmt, per_channel=per_channel, weight_type=weight_type, activation_type=activation_type,
                      calib_method=calib_method, block_size=block_size, calib=calib, reduce_range=bool(reduce_range),
                      pair_safe=bool(reduce_range) and requested_range is None)
    # A large model's scratch copies go beside the output: /tmp may not hold them.
    with tempfile.TemporaryDirectory(prefix=".onnxkit-quant-" if large else "onnxkit-quant-",
                                     dir=Path(output).parent if large else None) as tmp:
        work = Path(tmp)
        import onnx

        base = onnx.ModelProto()
        base.CopyFrom(original)  # graph only when large: the weights are not in memory
        if large:
            base, note = _prepare_large(loaded.path, work)
            res.preprocess_notes = [note]
            res.notes.append(note)
        elif mode != "fp16":
            base = _prepare_base(base, res, work, mode=mode, fuse=fuse and not (exclude_nodes or exclude_ops),
                                 fuse_skipped=fuse and bool(exclude_nodes or exclude_ops), eval_batches=eval_batches)
        _name_nodes(base)
        excluded = _exclusions(original, base, res, exclude_ops=exclude_ops, exclude_nodes=exclude_nodes)

        qmodel, err = _quantize_large(base, res, cfg, excluded, work, loaded.path, eval_batches, metric) if large \
            else _quantize_in_memory(original, base, cfg, excluded, work, eval_batches, metric)
        err = _budget_and_save(qmodel, err, res, original=original, base=base, cfg=cfg, excluded=excluded,
                               eval_batches=eval_batches, work=work, large=large, output=output,
                               stamp=lambda m: quantize_target.stamp(m, target, weights=int8_weights))
    res.size_after = file_size(output)
    if res.budget_met is False:
        _budget_missed(res, err, metric, output)
    if latency:
        _measure_latency(res, specs, model_path, output, large=large)
    hint = conv_hint(original, mode, res.latency_ms_before, res.latency_ms_after)
    if hint:
        res.notes.append(hint)
    return res


def _new_result(model_path: Any, output: Any, loaded: Any, original: Any, *, mode: str, metric: str, per_channel: bool,
                weight_type: str, fmt: str, budget: bool, max_error: float | None, real_data: bool) -> QuantizeResult:
    """The result as far as the input and the options say, the budget included."""
    res = QuantizeResult(command="quantize", model=str(model_path), output=str(output), mode=mode, metric=metric)
    res.notes.extend(loaded.warnings)
    res.size_before = file_size(model_path, loaded.external_files)
    res.ops_before = op_histogram(original)
    if mode in ("dynamic", "static"):
        res.per_channel, res.weight_type = per_channel, weight_type
    if mode == "static":
        res.format = fmt
    if budget:
        res.max_error = default_budget(mode, random_data=not real_data) if max_error is None else max_error
        if max_error is None and metric != "cosine":
            raise UsageError(f"--metric {metric} needs --max-error (the default budget is for cosine)")
    return res


def _load_input(model_path: Any, *, trust: bool, mode: str) -> tuple[Any, bool]:
    """The input model, and whether it is over 2 GB (then its weights stay on disk)."""
    from onnxkit.passes.large import is_large

    # Graph first: whether the weights may be loaded at all depends on their size.
    loaded = load_onnx(model_path, trust=trust, load_external=False)
    large = is_large(loaded.model)
    if large and mode == "fp16":
        raise UsageError("--mode fp16 is not supported on models over 2 GB: the converter needs every weight in memory",
                         hint="use --mode dynamic, static or int4, which read the weights by path")
    if not large and loaded.external_files:
        loaded = load_onnx(model_path, trust=trust)
    return loaded, large


def _budget_missed(res: QuantizeResult, err: ErrorMeasure, metric: str, output: Any) -> None:
    res.passed = False
    worst = f" ({err.worst})" if err.worst else ""
    res.notes.append(f"accuracy budget missed: {metric} error {err.error:.4g}{worst} > {res.max_error:g} even after excluding "
                     f"{len(res.excluded)} node(s); {output} was written anyway")


def _budget_and_save(qmodel: Any, err: ErrorMeasure, res: QuantizeResult, *, original: Any, base: Any,
                     cfg: QuantConfig, excluded: dict[str, str], eval_batches: list[dict], work: Path, large: bool,
                     output: Any, stamp: Any) -> ErrorMeasure:
    """Keep nodes in float until the budget holds, count what was quantized (nothing is an
    error), stamp the target CPU and write the model."""
    by_node = {n.name: n for n in base.graph.node}
    res.error_first = vars(err) | {}
    res.notes.extend(err.shape_notes)
    if res.max_error is not None and err.error > res.max_error:
        if large:
            res.notes.append("accuracy budget not enforced by excluding nodes on a model over 2 GB (each round "
                             "re-quantizes the whole model); keep nodes in float with --exclude-nodes/--exclude-ops")
        else:
            qmodel, err = _budget_loop(original, base, qmodel, err, cfg, excluded, eval_batches, res.metric, res.max_error, work)
    res.error = vars(err) | {}
    res.budget_met = None if res.max_error is None else err.error <= res.max_error
    if err.constant_outputs:
        # A dead (all-ReLU-zero) or saturated output: any model that outputs the same constant
        # meets the budget, so "cosine 1" here says nothing about the quantized weights.
        res.notes.append(f"the float model's output {', '.join(err.constant_outputs)} is constant on the {err.samples} "
                         "measurement sample(s): a quantized model that outputs the same constant meets any budget, so "
                         "this measure proves little; measure on real --data or a trained model")
    res.excluded = [{"node": n, "op": by_node[n].op_type if n in by_node else "", "reason": r} for n, r in excluded.items()]
    if cfg.mode == "fp16":
        res.nodes_quantized, res.quantized_ops = _fp16_count(qmodel)
    else:
        res.nodes_quantized, res.quantized_ops = _quantized_count(qmodel)
    check_something_quantized(res.nodes_quantized, cfg.mode, base, excluded)
    res.ops_after = op_histogram(qmodel)
    if cfg.pair_safe and cfg.mode == "dynamic" and not large:
        from onnxkit.operations.quantize.pairsafe import widened_weights

        if widened := widened_weights(qmodel):
            res.notes.append(f"{widened} MatMul weight(s) use up to 8 bits with each two neighbours along K summing to "
                             "at most 128, instead of 7 bits: as safe on AVX2 without VNNI, and more precise")
    prune_unused_opsets(qmodel)
    stamp(qmodel)
    if large:
        from onnxkit.passes.large import save_streaming

        save_streaming(qmodel, work, output)
    else:
        save_onnx(qmodel, output)
    return err


def _quantize_in_memory(original: Any, base: Any, cfg: QuantConfig, excluded: dict[str, str], work: Path,
                        eval_batches: list[dict], metric: str) -> tuple[Any, ErrorMeasure]:
    qmodel = run_quantizer(base, cfg, list(excluded), work)
    return qmodel, measure_error(original, qmodel, eval_batches, metric)


def _quantize_large(base: Any, res: QuantizeResult, cfg: QuantConfig, excluded: dict[str, str], work: Path,
                    source: Path, eval_batches: list[dict], metric: str) -> tuple[Any, ErrorMeasure]:
    """A model over 2 GB: the quantizers read it by path, and the two models are measured one
    after the other so their weights are never in memory together."""
    import onnx

    from onnxkit.passes.large import load_graph

    # The quantizers read a file: base.onnx, with the node names they select by.
    (work / "base.onnx").write_bytes(base.SerializeToString())  # graph only
    if cfg.mode == "dynamic" and cfg.per_channel and cfg.weight_type == "int8":
        # ORT's quantize_dynamic holds the float model and each quantized copy (3.3x the
        # size at peak on 2.1 GB); this reads and writes one weight chunk at a time.
        from onnxkit.operations.quantize.stream import quantize_dynamic_streaming

        graph_only = onnx.ModelProto()
        graph_only.CopyFrom(base)
        streamed = quantize_dynamic_streaming(graph_only, work, work / "q_stream.onnx", exclude=set(excluded),
                                              reduce_range=cfg.reduce_range)
        qpath = streamed.path
        res.notes.append(f"quantized weight by weight from disk (model over 2 GB): {len(streamed.quantized)} "
                         "MatMul/Gather node(s), per-channel symmetric int8")
    else:
        qpath = run_quantizer(base, cfg, list(excluded), work, large=True)
    return load_graph(qpath), measure_error(str(source), str(qpath), eval_batches, metric, sequential=True)


def _check_arguments(*, mode: str, metric: str, calib_method: str, fmt: str, weight_type: str,
                     activation_type: str, block_size: int, calib_random: int, calib_data: str | None,
                     max_error: float | None) -> None:
    """Every usage error quantize can see before it reads the model."""
    if mode not in MODES:
        raise UsageError(f"unknown --mode {mode!r}; choose from {', '.join(MODES)}")
    if metric not in METRICS:
        raise UsageError(f"unknown --metric {metric!r}; choose from {', '.join(METRICS)}")
    if calib_method not in CALIB_METHODS:
        raise UsageError(f"unknown --calib-method {calib_method!r}; choose from {', '.join(CALIB_METHODS)}")
    if fmt not in ("qdq", "qoperator"):
        raise UsageError(f"unknown --format {fmt!r}; choose from qdq, qoperator")
    if weight_type not in ("int8", "uint8"):
        raise UsageError(f"unknown --weight-type {weight_type!r}; choose from int8, uint8")
    if activation_type not in ("int8", "uint8"):
        raise UsageError(f"unknown --activation-type {activation_type!r}; choose from uint8, int8")
    if block_size < 16 or block_size & (block_size - 1):
        raise UsageError(f"--block-size {block_size} must be a power of two >= 16")
    if calib_random < 0:
        raise UsageError("--calib-random must be a positive number of samples")
    if mode == "static" and not calib_data and not calib_random:
        raise UsageError("static quantization needs calibration data: pass --calib-data FILE (or --calib-random N)",
                         hint="dynamic quantization (--mode dynamic) needs none")
    if calib_data and calib_random:
        raise UsageError("give either --calib-data or --calib-random, not both")
    if max_error is not None and (not np.isfinite(max_error) or max_error < 0):
        raise UsageError("--max-error must be a finite, non-negative number")


def _data_sources(res: QuantizeResult, specs: list, *, mode: str, calib_data: str | None, calib_random: int,
                  calib_method: str, data: str | None, seed: int, max_error: float | None) -> tuple[_Batches | None, list[dict]]:
    """The calibration batches (static mode) and the batches the error is measured on: --data,
    else the calibration data, else random rows; each file is opened now, before any work."""
    calib = None
    if mode == "static":
        if calib_data:
            from onnxkit.foundation.data import open_data

            open_data(calib_data, specs)  # preflight now, before any work
            calib = _Batches(specs, data_path=calib_data, seed=seed)
            res.calibration = f"{Path(calib_data).name} ({calib_method})"
        else:
            calib = _Batches(specs, random_n=calib_random, seed=seed)
            res.calibration = f"{calib_random} random samples ({calib_method})"
            res.notes.append(f"calibrating on {calib_random} RANDOM samples: random inputs are a poor proxy for real data "
                             "and can set activation ranges far off; use --calib-data with real samples")
            log.warning("static quantization calibrated on random data (--calib-random): a poor proxy for real inputs")
    # Data for the error measurement: --data, else the calibration data, else random.
    if data:
        from onnxkit.foundation.data import open_data

        open_data(data, specs)
        eval_src = _Batches(specs, data_path=data, seed=seed)
        res.eval_data = Path(data).name
    elif calib_data:
        eval_src = _Batches(specs, data_path=calib_data, seed=seed)
        res.eval_data = f"{Path(calib_data).name} (calibration data)"
    else:
        eval_src = _Batches(specs, random_n=32, seed=seed + 1000)
        res.eval_data = "32 random samples"
        if res.max_error is not None and max_error is None and mode != "fp16":
            res.notes.append(random_budget_note(mode))
    eval_batches = []
    rows = 0
    for feeds in eval_src:  # bounded: enough rows for stable metrics, not the whole file
        eval_batches.append(feeds)
        rows += feeds_rows(feeds)  # a scalar input has no rows to count
        if rows >= 256:
            break
    return calib, eval_batches


def _prepare_base(base: Any, res: QuantizeResult, work: Path, *, mode: str, fuse: bool, fuse_skipped: bool,
                  eval_batches: list[dict]) -> Any:
    """The float graph the quantizers get: ONNX Runtime's fused ops split back, a transformer
    fused first (kept only if it still answers the same), then ONNX Runtime's pre-processing."""
    import onnx

    from onnxkit.passes.runtime_ops import unfuse_runtime_ops

    base, unfused = unfuse_runtime_ops(base)
    notes = [f"{unfused} ONNX Runtime fused node(s) (FusedConv/FusedGemm) split back into standard ops, which "
             "the quantizers know; ONNX Runtime fuses the quantized graph again"] if unfused else []
    if fuse_skipped and mode in FUSED_MODES:
        # Patterns name nodes of the unfused graph, and fusion moves MatMuls into
        # Attention (which ORT may quantize as QAttention): honour the user's choice.
        notes.append("transformer fusion before quantizing skipped: --exclude-nodes/--exclude-ops name "
                     "nodes and ops of the unfused graph")
    elif fuse and mode in FUSED_MODES:
        from onnxkit.passes.transformer import prepare_for_quantization

        before = onnx.ModelProto()
        before.CopyFrom(base)
        base, fuse_notes = prepare_for_quantization(base, mode)
        if fuse_notes:
            base, fuse_notes = _keep_if_faithful(before, base, fuse_notes, eval_batches[:2])
        notes.extend(fuse_notes)
    base, pre_notes = preprocess(base, work)
    notes.extend(pre_notes)
    res.preprocess_notes = notes
    res.notes.extend(notes)
    return base


def _exclusions(original: Any, base: Any, res: QuantizeResult, *, exclude_ops: list[str] | None,
                exclude_nodes: list[str] | None) -> dict[str, str]:
    """Nodes of ``base`` to keep in float, each with the option that asked for it."""
    excluded: dict[str, str] = {}
    for op, names in select_ops(base, list(exclude_ops or [])).items():
        for n in names:
            excluded.setdefault(n, f"--exclude-ops {op}")
    # Patterns are matched on the user's model: pre-processing drops the node metadata
    # that records source layers, and may rename or fuse nodes.
    for pat, names in select_nodes(original, list(exclude_nodes or [])).items():
        mapped = map_to_prepared(original, base, names)
        if not mapped:
            res.notes.append(f"--exclude-nodes {pat}: its nodes were folded away by pre-processing; nothing to keep in float")
        for n in mapped:
            excluded.setdefault(n, f"--exclude-nodes {pat}")
    return excluded


def _measure_latency(res: QuantizeResult, specs: list, model_path: Any, output: Any, *, large: bool) -> None:
    """Input and quantized model timed on the same random inputs (informative, never a failure)."""
    try:
        feeds = latency_feeds(specs, batch=8 if any(not isinstance(s.shape[0], int) for s in specs if s.shape) else 1)
        if large:
            from onnxkit.passes.large import sequential_latency

            before, after = sequential_latency([str(model_path), str(output)], feeds, rounds=10)
        else:
            before, after = interleaved_latency([str(model_path), str(output)], feeds, rounds=10)
        res.latency_ms_before, res.latency_ms_after = before, after
        res.latency_feeds = "random, batch 8" if feeds and next(iter(feeds.values())).shape[:1] == (8,) else "random"
        if large:
            res.latency_feeds += ", one model after the other"
    except Exception as exc:  # latency is informative only
        res.notes.append(f"latency not measured: {exc}")


__all__ = [
    "MODES",
    "METRICS",
    "CALIB_METHODS",
    "DEFAULT_BUDGET",
    "RANDOM_DATA_BUDGET_FACTOR",
    "default_budget",
    "random_budget_note",
    "FUSED_MODES",
    "WEIGHTED_OPS",
    "QUANT_OPS",
    "MAX_BUDGET_ROUNDS",
    "QuantConfig",
    "source_layers",
    "select_nodes",
    "select_ops",
    "map_to_prepared",
    "left_in_float",
    "preprocess",
    "cpu_has_vnni",
    "default_reduce_range",
    "prune_unused_opsets",
    "run_quantizer",
    "ErrorMeasure",
    "measure_error",
    "ignore_padding",
    "rank_sensitivity",
    "FUSION_TOLERANCE",
    "QuantizeResult",
    "quantize_model",
]
