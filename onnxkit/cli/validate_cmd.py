"""onnxkit validate SOURCE MODEL.onnx  |  onnxkit validate MODEL.onnx --load-outputs ref.npz"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app
from onnxkit.cli.run_cmd import Timeout


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    from onnxkit.errors import UsageError

    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"malformed {flag} {text!r}; expected positive integers separated by commas, e.g. 1,8") from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"malformed {flag} {text!r}; expected positive integers separated by commas, e.g. 1,8")
    return values


class _Progress:
    """A Rich progress bar on stderr, only where a person watches it."""

    def __init__(self) -> None:
        self.bar = None
        self.task = None

    def start(self, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("validating"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("validate", total=total)

    def advance(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, rows)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _validate_on_ray(src, model_path, *, address, workers, batch_size, **kwargs):
    from onnxkit.operations.validate_ray import DEFAULT_RAY_BATCH, RayValidateOptions, validate_on_ray

    opts = RayValidateOptions(address=address, workers=workers, batch_size=batch_size or DEFAULT_RAY_BATCH)
    return validate_on_ray(src, model_path, ray_options=opts, **kwargs)


def _check_engine(engine: str, *, data, samples, edge_cases, localize, save_outputs, load_outputs, address, workers,
                  batch_size, providers, reference_providers, precision) -> None:
    from onnxkit.errors import UsageError

    if engine not in ("local", "ray"):
        raise UsageError(f"unknown --engine {engine!r}; choose local or ray")
    if engine == "ray":
        from onnxkit.operations.validate_ray import check_ray_usage

        check_ray_usage(data=data, samples=samples, edge_cases=edge_cases, localize=localize, save_outputs=save_outputs,
                        load_outputs=load_outputs, batch_size=batch_size, providers=providers,
                        reference_providers=reference_providers, precision=precision)
    else:
        given = [f for f, v in (("--address", address), ("--workers", workers), ("--batch-size", batch_size)) if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --engine ray")


@app.command("validate")
def validate_command(
    source: Annotated[str, typer.Argument(help="The reference: a model file export can load, or another ONNX file. Omit it with --load-outputs.", show_default=False)],
    model: Annotated[Path | None, typer.Argument(help="The ONNX model to check.", show_default=False)] = None,
    tol: common.Tol = None,
    rtol: common.Rtol = None,
    preset: common.Preset = None,
    data: Annotated[Path | None, typer.Option("--data", help="Inputs to validate on (.npz, .npy, .csv, .parquet); streamed in batches. For a Hugging Face image model: an image file or a folder of images.")] = None,
    inputs: common.Inputs = None,
    samples: Annotated[int | None, typer.Option("--samples", help="Rows to validate on (random inputs: at least this many; --data: at most).")] = None,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Batch sizes of random inputs; the largest is the --data batch size.")] = "1,8",
    seq_lens: Annotated[str, typer.Option("--seq-lens", help="Lengths for dynamic sequence dims of random inputs.")] = "16,48",
    edge_cases: Annotated[bool, typer.Option("--edge-cases", help="Add zeros, ones, large and tiny values, and NaN where the source accepts it.")] = False,
    seed: common.Seed = 0,
    localize: Annotated[bool, typer.Option("--localize", help="On failure, find the first node whose output departs from the reference.")] = False,
    providers: common.Providers = None,
    precision: Annotated[str | None, typer.Option("--precision", help="Inference precision for --provider openvino: f32, bf16, f16 (default: OpenVINO's own pick, reported; a bf16/f16 run is then held to the fp16 tolerance preset unless a tolerance is given).", show_default=False)] = None,
    reference_providers: Annotated[list[str] | None, typer.Option("--reference-provider", help="Execution provider for an ONNX reference (default cpu).")] = None,
    framework: Annotated[str | None, typer.Option("--framework", help="Override detection of SOURCE: torch, tensorflow, sklearn, xgboost, lightgbm, onnx.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="PyTorch state_dict for a factory source (loaded with weights_only=True).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report (one testcase per output).")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a Markdown summary (e.g. for a CI job summary).")] = None,
    save_outputs: Annotated[Path | None, typer.Option("--save-outputs", help="Save the inputs and reference outputs (.npz) for later runs without the source.")] = None,
    load_outputs: Annotated[Path | None, typer.Option("--load-outputs", help="Use reference outputs saved by --save-outputs; SOURCE is then omitted.")] = None,
    input_map: Annotated[list[str] | None, typer.Option("--input-map", help="Pair a source input with a model input whose name differs: SOURCE_NAME=MODEL_NAME (repeatable).")] = None,
    output_map: Annotated[list[str] | None, typer.Option("--output-map", help="Pair a source output with a model output whose name differs: SOURCE_NAME=MODEL_NAME (repeatable).")] = None,
    task: Annotated[str | None, typer.Option("--task", help="Hugging Face folder SOURCE: the head to compare (default: the one the model was exported with).", show_default=False)] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Hugging Face folder SOURCE: a sentence to validate on (repeatable); default: built-in sentences of different lengths.", show_default=False)] = None,
    generate: Annotated[int | None, typer.Option("--generate", help="Hugging Face text-generation / text2text-generation: new tokens to decode greedily (default 8).", show_default=False)] = None,
    trust: common.Trust = False,
    timeout: Timeout = None,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (spread --data shards over Ray actors).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="--engine ray: auto or ray://host:port joins a cluster (default: start a local Ray).", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="--engine ray: source + ONNX actor pairs (default: one per CPU).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="--engine ray: rows per task (default 4096).", show_default=False)] = None,
) -> None:
    """Check that an ONNX model computes what its source (or another ONNX model) computes.

    Exit 0 when every output is within tolerance, 1 when one is not, 2 for bad usage or
    inputs that do not fit the model.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.foundation.files import check_io
    from onnxkit.foundation.mapping import parse_map
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.operations.validate_files import validate_files
    from onnxkit.errors import UsageError
    from onnxkit.frameworks.base import LoadOptions

    # One positional means MODEL alone (its reference comes from --load-outputs).
    if model is None:
        if load_outputs is None:
            raise UsageError("missing MODEL.onnx: usage is onnxkit validate SOURCE MODEL.onnx, or MODEL.onnx --load-outputs FILE")
        src, model_path = None, Path(source)
    else:
        src, model_path = source, model
    tolerance = make_tolerance(tol, rtol, preset)
    sizes, lens = _int_list(batch_sizes, "--batch-sizes"), _int_list(seq_lens, "--seq-lens")
    # Every file validate writes against every file it reads, and against each other.
    check_io([junit, report, save_outputs], [model_path, src, data, weights, load_outputs])
    options = LoadOptions(framework=framework, trust=trust, inputs=parse_specs(inputs), weights=weights, task=task, texts=list(text or []), generate=generate)
    progress = _Progress() if not common.STATE.quiet and sys.stderr.isatty() else None
    in_map, out_map = parse_map(input_map, "--input-map"), parse_map(output_map, "--output-map")
    from onnxkit.operations.hf_validate import validate_if_hf_folder

    _check_engine(engine, data=data, samples=samples, edge_cases=edge_cases, localize=localize,
                  save_outputs=save_outputs, load_outputs=load_outputs, address=address, workers=workers,
                  batch_size=batch_size, providers=providers, reference_providers=reference_providers,
                  precision=precision)
    hf_result = validate_if_hf_folder(src, model_path, options, tolerance=tolerance, providers=providers, timeout=timeout, unsupported={
        "--data": data, "--input": inputs, "--samples": samples, "--edge-cases": edge_cases, "--localize": localize,
        "--save-outputs": save_outputs, "--load-outputs": load_outputs, "--input-map": input_map, "--output-map": output_map},
        precision=precision, tolerance_given=bool(tol or rtol is not None or preset))
    if hf_result is None and engine == "ray":
        hf_result = _validate_on_ray(src, model_path, tolerance=tolerance, options=options, data=data, address=address,
                                     workers=workers, batch_size=batch_size, providers=providers,
                                     reference_providers=reference_providers, progress=progress, timeout=timeout,
                                     input_map=in_map, output_map=out_map)
    result = hf_result or validate_files(
        src, model_path, tolerance=tolerance, options=options, data=data, samples=samples,
        batch_sizes=sizes, seq_lens=lens, edge_cases=edge_cases, seed=seed, localize=localize,
        providers=providers, reference_providers=reference_providers,
        save_outputs=save_outputs, load_outputs=load_outputs, progress=progress, timeout=timeout,
        input_map=in_map, output_map=out_map,
        precision=precision, tolerance_given=bool(tol or rtol is not None or preset),
    )
    if junit is not None:
        from onnxkit.reports.junit import write_junit

        write_junit(junit, f"onnxkit validate {model_path.name}", result.junit_cases(), classname="onnxkit.validate",
                    properties={"reference": result.reference, "candidate": result.candidate,
                                "atol": str(tolerance.atol), "rtol": str(tolerance.rtol)})
    if report is not None:
        from onnxkit.reports.markdown import write_markdown

        write_markdown(report, result, title=f"onnxkit validate {model_path.name}")
    common.emit(result)
