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
    model: Annotated[Path, typer.Argument(help="The float ONNX model.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the quantized model.", show_default=False)],
    mode: Annotated[str, typer.Option("--mode", help="dynamic (int8 weights, no data), static (int8, needs calibration), int4 (weight-only MatMul), fp16.")] = "dynamic",
    calib_data: Annotated[Path | None, typer.Option("--calib-data", help="Calibration samples (.npz, .npy, .csv, .parquet), streamed.")] = None,
    calib_random: Annotated[int, typer.Option("--calib-random", help="Calibrate on N random samples (a poor proxy; for smoke tests).")] = 0,
    calib_method: Annotated[str, typer.Option("--calib-method", help="minmax, entropy or percentile.")] = "minmax",
    fmt: Annotated[str, typer.Option("--format", help="Static format: qdq (QuantizeLinear/DequantizeLinear pairs) or qoperator.")] = "qdq",
    per_channel: Annotated[bool, typer.Option("--per-channel/--no-per-channel", help="Per-channel weight scales (on by default: per-tensor loses accuracy).")] = True,
    weight_type: Annotated[str, typer.Option("--weight-type", help="int8 or uint8.")] = "int8",
    exclude_ops: Annotated[list[str] | None, typer.Option("--exclude-ops", help="Op types kept in float (comma-separated or repeated).")] = None,
    exclude_nodes: Annotated[list[str] | None, typer.Option("--exclude-nodes", help="Nodes kept in float: node name, glob, or source layer (e.g. encoder.layer.0.output.dense).")] = None,
    max_error: Annotated[float | None, typer.Option("--max-error", help="Accuracy budget: the largest error allowed (cosine: 1-cosine; label: 1-agreement; maxabs). Default 0.01 for int8 (cosine >= 0.99).")] = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="Do not enforce an accuracy budget (still measured).")] = False,
    metric: Annotated[str, typer.Option("--metric", help="Error metric: cosine, maxabs or label.")] = "cosine",
    data: Annotated[Path | None, typer.Option("--data", help="Data to measure the error on (else the calibration data, else random).")] = None,
    block_size: Annotated[int, typer.Option("--block-size", help="int4 block size (power of two).")] = 128,
    reduce_range: Annotated[bool | None, typer.Option("--reduce-range/--no-reduce-range", help="7-bit weights; default: on where this CPU lacks VNNI (int8 kernels saturate there).", show_default=False)] = None,
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
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.core.quantize import quantize_model

    common.emit(quantize_model(
        model, output, mode=mode, calib_data=str(calib_data) if calib_data else None, calib_random=calib_random,
        calib_method=calib_method, fmt=fmt, per_channel=per_channel, weight_type=weight_type,
        exclude_ops=_split(exclude_ops), exclude_nodes=_split(exclude_nodes), max_error=max_error, budget=not no_budget,
        metric=metric, data=str(data) if data else None, block_size=block_size, reduce_range=reduce_range, seed=seed, trust=trust,
    ))
