"""onnxkit bench MODEL.onnx [MORE.onnx ...]"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app
from onnxkit.cli.run_cmd import Fallback, ProviderOptions, Timeout


@app.command("bench")
def bench_command(
    models: Annotated[list[Path], typer.Argument(help="ONNX models to time side by side (the first is the reference for ratios).", metavar="MODEL.onnx...", show_default=False)],
    vs: Annotated[Path | None, typer.Option("--vs", help="Also time the source framework model (PyTorch, TensorFlow, scikit-learn, ...) on the same inputs.", show_default=False)] = None,
    providers: common.Providers = None,
    provider_option: ProviderOptions = None,
    fallback: Fallback = False,
    precision: Annotated[str | None, typer.Option("--precision", help="Inference precision for --provider openvino: f32, bf16, f16 (default: OpenVINO's own pick, named in the result).", show_default=False)] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", help="Batch sizes, comma separated, e.g. 1,8,32.")] = "1",
    inputs: common.Inputs = None,
    seed: common.Seed = 0,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs per model and batch size.")] = 5,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", help="Timed runs per model and batch size (default 50).", show_default=False)] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Instead of --iterations: seconds per model and batch size.", show_default=False)] = None,
    threads: Annotated[str | None, typer.Option("--threads", help="Intra-op threads of every model and of the --vs source alike, or 'auto': time 1, 2, 4, ... usable cores briefly and use the fastest (default with --vs: auto; without: ONNX Runtime's choice).", show_default=False)] = None,
    io_binding: Annotated[bool | None, typer.Option("--io-binding/--no-io-binding", help="Keep inputs/outputs on the device while timing (default: on for CUDA/TensorRT).", show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG bar chart of the latencies.", show_default=False)] = None,
    save_baseline: Annotated[Path | None, typer.Option("--save-baseline", help="Write these figures as a baseline JSON for later --baseline.", show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Compare against a baseline written by --save-baseline; exit 1 on a regression.", show_default=False)] = None,
    max_regression: Annotated[str | None, typer.Option("--max-regression", help="Allowed slow-down against --baseline, e.g. 10% (default 10%).", show_default=False)] = None,
    metric: Annotated[str, typer.Option("--metric", help="Latency figure compared with --baseline: p50, p90, p95, p99, mean.")] = "p50",
    min_speedup: Annotated[float | None, typer.Option("--min-speedup", help="Gate: the last model must be this many times as fast as --vs at every batch size, judged on the 95% interval; exit 1 when it is not, or when the interval straddles it (inconclusive).", show_default=False)] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Exported Hugging Face folders: a sentence to time on (repeatable); default: built-in sentences.", show_default=False)] = None,
    seq: Annotated[int | None, typer.Option("--seq", help="Exported Hugging Face encoder folders: time on exactly this many tokens per row.", show_default=False)] = None,
    context: Annotated[str | None, typer.Option("--context", help="Exported text-generation folders: prompt lengths to time at, e.g. 16,256 (default 16,256).", show_default=False)] = None,
    new_tokens: Annotated[int | None, typer.Option("--new-tokens", help="Exported text-generation folders: greedy steps per round through the KV cache (default 16).", show_default=False)] = None,
    trust: common.Trust = False,
    timeout: Timeout = None,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Latency percentiles and throughput of ONNX models, interleaved, optionally against the
    source framework model and a saved baseline.

    Exit 1 when --baseline shows a regression over --max-regression or --min-speedup is not met or inconclusive, 2 for a malformed baseline, 3 when a provider is missing.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.operations.bench import run_bench
    from onnxkit.reports.bench_plot import plot_latencies

    result = run_bench(
        models, source=vs, providers=providers, provider_options=provider_option, fallback=fallback,
        batch_sizes=batch_size, inputs=inputs, seed=seed, warmup=warmup, iterations=iterations, duration=duration,
        threads=threads, io_binding=io_binding, plot=plot, save_baseline_to=save_baseline, baseline=baseline,
        max_regression=max_regression, metric=metric, trust=trust, timeout=timeout, min_speedup=min_speedup,
        precision=precision,
        texts=text, seq=seq, context=context, new_tokens=new_tokens,
    )
    if plot is not None:
        plot_latencies(result, plot)
    common.emit(result)
