"""onnxkit init SOURCE -o onnxkit.toml"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


@app.command("init")
def init_command(
    source: Annotated[str, typer.Argument(help="The trained model the pipeline starts from (any source `onnxkit export` takes).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The config file to write.")] = Path("onnxkit.toml"),
    framework: Annotated[str | None, typer.Option("--framework", help="Override detection: torch, tensorflow, sklearn, xgboost, lightgbm, onnx.")] = None,
    inputs: common.Inputs = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="PyTorch state_dict for a factory source (loaded with weights_only=True).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Factory source without --weights: the pipeline exports the model exactly as the factory builds it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.")] = False,
    trust: common.Trust = False,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Write a commented starter config for `onnxkit pipeline`, filled in from the model.

    The source is loaded once to learn its framework and inputs. Exit 2 when the config
    exists (use --force) or the source cannot be read.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.operations.config_init import init_config

    common.emit(init_config(source, output, framework=framework, inputs=inputs, trust=trust, force=force,
                            weights=weights, random_weights=random_weights))
