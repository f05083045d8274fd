"""onnxkit providers"""

from __future__ import annotations

from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


@app.command("providers")
def providers_command(
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Do not test that each listed provider's libraries load.")] = False,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """The execution providers the installed ONNX Runtime offers, which onnxruntime package is
    installed, and what to install for the others."""
    common.setup(json_out, verbose, quiet)
    from onnxkit.runtime.providers import providers_report

    common.emit(providers_report(probe=not no_probe))
