"""onnxkit inspect MODEL.onnx"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


@app.command("inspect")
def inspect_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model to describe.", show_default=False)],
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the onnx.checker full check.")] = False,
    trust: common.Trust = False,
    custom_op_library: common.CustomOps = None,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """What is inside a model: IR, opsets, inputs/outputs, ops, parameters, metadata, checker.

    Exit 1 when the checker finds the model invalid, 2 when the file is not a readable ONNX model.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.operations.inspect import inspect_model

    common.emit(inspect_model(model, trust=trust, check=not no_check, custom_op_library=custom_op_library))
