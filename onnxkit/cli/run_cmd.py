"""onnxkit run MODEL.onnx"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app
from onnxkit.errors import UsageError

ProviderOptions = Annotated[list[str] | None, typer.Option(
    "--provider-option", help="Provider option KEY=VALUE (for the first non-CPU provider) or PROVIDER:KEY=VALUE, "
    "e.g. cuda:device_id=1, trt_fp16_enable=True. Repeatable.")]
Fallback = Annotated[bool, typer.Option("--fallback", help="Run on CPU (with a warning) when a requested provider is not available, instead of exit 3.")]
Timeout = Annotated[float | None, typer.Option(
    "--timeout", help="Seconds one batch of an untrusted model may run before it is stopped (exit 2); default 30. "
    "Untrusted models run in a worker process under this limit and a memory limit; --trust runs them in-process, unlimited.",
    show_default=False)]
Threads = Annotated[int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: ORT's choice; "
                    "with --engine ray, per actor, so that actors x threads <= cores).", show_default=False)]
Engine = Annotated[str, typer.Option("--engine", help="local: this process; ray: Ray actors over sharded --data "
                   "(a file, folder or glob of parquet/csv/jsonl/npy), -o a new folder of part-*.parquet. Needs onnxkit[ray].")]
Address = Annotated[str | None, typer.Option("--address", help="--engine ray: 'auto' or ray://HOST:PORT joins a running "
                    "cluster (default: start a local Ray on this machine for the run).", show_default=False)]
Workers = Annotated[int | None, typer.Option("--workers", help="--engine ray: actors, each with one ONNX Runtime session "
                    "(default: one per CPU of the cluster).", show_default=False)]


@contextlib.contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator:
    """A Rich progress bar on stderr, or a no-op callback when hidden (quiet, JSON to a pipe, no tty)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@app.command("run")
def run_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model to run.", show_default=False)],
    providers: common.Providers = None,
    provider_option: ProviderOptions = None,
    fallback: Fallback = False,
    data: Annotated[Path | None, typer.Option("--data", help="Inputs: .npz/.npy/.csv/.parquet, streamed in batches (--engine ray: a file, folder or glob of .parquet/.csv/.jsonl/.npy shards).", show_default=False)] = None,
    inputs: common.Inputs = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the outputs: .npz, .npy (one output), .csv or .parquet (--engine ray: a new folder of part-*.parquet and _manifest.json).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per batch (default: 256 with --data, else 1).", show_default=False)] = None,
    threads: Threads = None,
    seed: common.Seed = 0,
    trust: common.Trust = False,
    timeout: Timeout = None,
    engine: Engine = "local",
    address: Address = None,
    workers: Workers = None,
    precision: Annotated[str | None, typer.Option("--precision", help="Inference precision for --provider openvino: f32, bf16, f16 (default: OpenVINO's choice).", show_default=False)] = None,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Run a model with ONNX Runtime on seeded random inputs or a data file, and say which
    execution provider really ran it.

    Exit 2 when the data does not fit the model's inputs, 3 when a requested provider is not available.
    """
    common.setup(json_out, verbose, quiet)
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray":
        _refuse_for_ray(data, providers, provider_option, fallback, precision)
        from onnxkit.operations.run_ray import run_model_ray

        show = not common.STATE.quiet and sys.stderr.isatty()
        with progress_bar(show, Path(model).name) as progress:
            result = run_model_ray(model, data=data, output=output, inputs=inputs, address=address, workers=workers,
                                   threads=threads, batch_size=batch_size, trust=trust, timeout=timeout,
                                   progress=progress)
        common.emit(result)
        return
    if address is not None or workers is not None:
        raise UsageError("--address and --workers need --engine ray")
    from onnxkit.operations.run import run_model

    show = data is not None and not common.STATE.quiet and sys.stderr.isatty()
    with progress_bar(show, Path(model).name) as progress:
        result = run_model(
            model, providers=providers, provider_options=provider_option, fallback=fallback, data=data,
            inputs=inputs, output=output, batch_size=batch_size, threads=threads, seed=seed, trust=trust,
            timeout=timeout, progress=progress, precision=precision,
        )
    common.emit(result)


def _refuse_for_ray(data, providers, provider_option, fallback, precision) -> None:
    """Options --engine ray does not take (its actors run ONNX Runtime on CPU), refused rather than ignored."""
    if data is None:
        raise UsageError("--engine ray scores a data set: give --data (a file, a folder or a glob of shards)")
    if providers and any(p.lower() not in ("cpu", "cpuexecutionprovider") for p in providers):
        raise UsageError("--engine ray runs ONNX Runtime on CPU in its actors; --provider is not taken with it")
    if provider_option or fallback or precision is not None:
        raise UsageError("--provider-option, --fallback and --precision are not taken with --engine ray")
