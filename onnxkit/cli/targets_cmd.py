"""onnxkit targets"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


@app.command("targets")
def targets_command(
    model: Annotated[Path | None, typer.Argument(help="The ONNX model to try on each target.", show_default=False)] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Comma-separated targets: cpu, openvino, mobile, web, cuda, tensorrt (default: all; cpu is always run as the reference).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Inputs to run (.npz, .npy, .csv, .parquet); default: seeded random inputs.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="Inference precision for targets that choose one (openvino: f32, bf16, f16; tensorrt: f16). Default: the target's own choice.")] = None,
    tol: common.Tol = None,
    rtol: common.Rtol = None,
    preset: common.Preset = None,
    seed: common.Seed = 0,
    provider_option: Annotated[list[str] | None, typer.Option("--provider-option", help="PROVIDER:KEY=VALUE for the cuda/tensorrt targets (e.g. tensorrt:device_id=1). Repeatable.")] = None,
    browser: Annotated[str | None, typer.Option("--browser", help="The browser of the web target (path or name; default: $ONNXKIT_BROWSER, else chromium on PATH, else Node.js; none = Node.js).")] = None,
    setup_web: Annotated[str | None, typer.Option("--setup", help="Install what a target needs into onnxkit's cache (only: web), then exit.")] = None,
    trust: common.Trust = False,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Will MODEL run on each deployment target, and does it give the answers ONNX Runtime
    on the CPU gives?

    Exit 0 when every target that ran agrees, 1 when one fails or disagrees, 3 when a target
    named with --target is not available here.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.errors import UsageError

    if setup_web is not None:
        if setup_web != "web":
            raise UsageError(f"--setup {setup_web!r}: only 'web' needs a setup step")
        from onnxkit.runtime.targets_web import setup

        common.emit(setup())
    if model is None:
        raise UsageError("missing MODEL: usage is onnxkit targets MODEL [--target ...], or onnxkit targets --setup web")
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.operations.targets import run_targets
    from onnxkit.runtime.targets_browser import browser_option

    options = None
    if provider_option:
        from onnxkit.runtime.providers import parse_provider_options
        from onnxkit.runtime.targets_ort import GPU_PROVIDERS

        options = parse_provider_options(provider_option, [*GPU_PROVIDERS.values(), "CPUExecutionProvider"])
    result = run_targets(
        model, targets=target, data=str(data) if data else None, precision=precision,
        tolerance=make_tolerance(tol, rtol, preset), tolerance_given=bool(tol or rtol is not None or preset),
        seed=seed, trust=trust, provider_options=options, browser=browser_option(browser),
    )
    common.emit(result)
