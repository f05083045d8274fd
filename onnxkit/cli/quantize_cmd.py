"""onnxkit quantize MODEL.onnx -o OUT.onnx --mode dynamic|static|int4|fp16"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


def _split(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


@app.command("quantize")
def quantize_command(
    model: Annotated[Path, typer.Argument(help="The float ONNX model, or a folder exported from Hugging Face (every ONNX file in it).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the quantized model.", show_default=False)],
    mode: Annotated[str, typer.Option("--mode", help="dynamic (int8 weights, no data), static (int8, needs calibration), int4 (weight-only MatMul), fp16, or auto (try the int8 variants, keep the fastest within budget).")] = "dynamic",
    calib_data: Annotated[Path | None, typer.Option("--calib-data", help="Calibration samples (.npz, .npy, .csv, .parquet), streamed.")] = None,
    calib_random: Annotated[int, typer.Option("--calib-random", help="Calibrate on N random samples (a poor proxy; for smoke tests).")] = 0,
    calib_method: Annotated[str, typer.Option("--calib-method", help="minmax, entropy or percentile.")] = "minmax",
    fmt: Annotated[str | None, typer.Option("--format", help="Static format: qdq (QuantizeLinear/DequantizeLinear pairs) or qoperator. [default: qdq]", show_default=False)] = None,
    per_channel: Annotated[bool | None, typer.Option("--per-channel/--no-per-channel", help="Per-channel weight scales (on by default: per-tensor loses accuracy).", show_default=False)] = None,
    weight_type: Annotated[str, typer.Option("--weight-type", help="int8 or uint8.")] = "int8",
    activation_type: Annotated[str, typer.Option("--activation-type", help="Static activations: uint8 (fast on CPUs without VNNI) or int8.")] = "uint8",
    exclude_ops: Annotated[list[str] | None, typer.Option("--exclude-ops", help="Op types kept in float (comma-separated or repeated).")] = None,
    exclude_nodes: Annotated[list[str] | None, typer.Option("--exclude-nodes", help="Nodes kept in float: node name, glob, or source layer (e.g. encoder.layer.0.output.dense).")] = None,
    max_error: Annotated[float | None, typer.Option("--max-error", help="Accuracy budget: the largest error allowed (cosine: 1-cosine; label: 1-agreement; maxabs). Default 0.01 for int8 (cosine >= 0.99).")] = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="Do not enforce an accuracy budget (still measured).")] = False,
    metric: Annotated[str, typer.Option("--metric", help="Error metric: cosine, maxabs or label.")] = "cosine",
    data: Annotated[Path | None, typer.Option("--data", help="Data to measure the error on (else the calibration data, else random).")] = None,
    block_size: Annotated[int, typer.Option("--block-size", help="int4 block size (power of two).")] = 128,
    target_cpu: Annotated[str, typer.Option("--target-cpu", help="The CPU the model will run on: portable (any AVX2 x86-64 and ARM64), avx2, avx512, avx512-vnni, amx, arm64, or native (this machine's). It sets the weight range and which variants --mode auto may pick, and is recorded in the model.")] = "portable",
    reduce_range: Annotated[bool | None, typer.Option("--reduce-range/--no-reduce-range", help="7-bit int8 weights; default: from --target-cpu (on for portable, avx2, avx512: full-range weights saturate int8 kernels without VNNI).", show_default=False)] = None,
    fuse: Annotated[bool, typer.Option("--fuse/--no-fuse", help="dynamic and int4: fuse transformer graphs first (attention, LayerNorm, GELU), shaped for ONNX Runtime's int8 kernels; other graphs are untouched.")] = True,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help="With --mode auto: batch sizes to time, e.g. 1,8; the largest decides. [default: 1,8]", show_default=False)] = None,
    iterations: Annotated[int, typer.Option("--iterations", help="With --mode auto: timed runs per candidate and batch size.")] = 30,
    vs: Annotated[Path | None, typer.Option("--vs", help="With --mode auto: also time the source framework model and say when it is faster than ONNX.", show_default=False)] = None,
    require_quantized: Annotated[bool, typer.Option("--require-quantized", help="With --mode auto: keep the fastest quantized variant even when the float input is faster.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="With --mode auto: intra-op threads for the timing (as you will serve).", show_default=False)] = None,
    seed: common.Seed = 0,
    trust: common.Trust = False,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Quantize an ONNX model, keeping it within an accuracy budget.

    After quantizing, the error against the float model is measured; while it is over budget the
    nodes that add the most error are kept in float and the model is re-quantized. Exit 1 only when
    the budget cannot be met (the file is still written), 2 for bad usage (a pattern that matches
    nothing, static without calibration data), 4 when the quantizer fails.

    --target-cpu (default portable) names where the model will run, not where it is quantized:
    portable, avx2 and avx512 get 7-bit int8 weights (full-range weights saturate ONNX Runtime's
    int8 kernels on x86 without VNNI); avx512-vnni, amx and arm64 get the full range. The target
    is written into the model's metadata (onnxkit.target_cpu); run and bench warn when a model
    made for VNNI runs on a CPU without it.

    --mode auto quantizes dynamic per-channel and per-tensor, and with calibration data (--calib-data
    or --calib-random) static QDQ per-channel and per-tensor and static QOperator; each is held to the
    budget as above; those within it are timed with the float input on this machine and the fastest
    is written (the float input itself when nothing quantized is faster, unless --require-quantized).
    A variant whose quantizer fails is listed, not fatal. Only the variants --target-cpu allows are tried. Exit 1 when no quantized variant meets the
    budget (OUT is then the float input, or nothing with --require-quantized).
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.errors import UsageError

    auto_only = {"--batch-size": batch_size is not None, "--vs": vs is not None, "--require-quantized": require_quantized,
                 "--threads": threads is not None}
    if mode == "auto":
        pinned = {"--format": fmt is not None, "--per-channel/--no-per-channel": per_channel is not None,
                  "--weight-type": weight_type != "int8", "--activation-type": activation_type != "uint8", "--exclude-ops": bool(exclude_ops),
                  "--exclude-nodes": bool(exclude_nodes), "--no-budget": no_budget, "--block-size": block_size != 128}
        clash = [k for k, v in pinned.items() if v]
        if clash:
            raise UsageError(f"--mode auto chooses the variant itself; drop {', '.join(clash)} or pick a --mode")
        if model.is_dir():
            raise UsageError("--mode auto takes one ONNX file; quantize an exported folder with a --mode")
        from onnxkit.operations.autotune import auto_quantize
        from onnxkit.operations.bench import parse_batch_sizes

        source = None
        if vs is not None:
            from onnxkit.frameworks.base import LoadOptions
            from onnxkit.frameworks.registry import load_source

            source = load_source(str(vs), LoadOptions(trust=trust))
        common.emit(auto_quantize(
            model, output, calib_data=str(calib_data) if calib_data else None, calib_random=calib_random,
            calib_method=calib_method, data=str(data) if data else None, metric=metric, max_error=max_error,
            batch_sizes=parse_batch_sizes(batch_size or "1,8"), source=source, iterations=iterations, threads=threads,
            require_quantized=require_quantized, reduce_range=reduce_range, fuse=fuse, seed=seed, trust=trust, probe=not trust,
            target_cpu=target_cpu,
        ))
        return
    used = [k for k, v in auto_only.items() if v]
    if used:
        raise UsageError(f"{', '.join(used)} only applies with --mode auto")
    from onnxkit.operations.quantize import quantize_model

    common.emit(quantize_model(
        model, output, mode=mode, calib_data=str(calib_data) if calib_data else None, calib_random=calib_random,
        calib_method=calib_method, fmt=fmt or "qdq", per_channel=True if per_channel is None else per_channel, weight_type=weight_type, activation_type=activation_type,
        exclude_ops=_split(exclude_ops), exclude_nodes=_split(exclude_nodes), max_error=max_error, budget=not no_budget,
        metric=metric, data=str(data) if data else None, block_size=block_size, reduce_range=reduce_range, fuse=fuse, seed=seed, trust=trust, probe=not trust,
        target_cpu=target_cpu,
    ))
