"""The ``onnxkit`` command: a Typer app whose commands live one per module in this package.

Only typer is imported here; every command imports the core inside its body, so
``onnxkit --help`` loads no framework and no ONNX.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from onnxkit import __version__
from onnxkit.cli import common
from onnxkit.errors import EXIT_LABELS

app = typer.Typer(
    name="onnxkit",
    help="From a trained model to a verified, optimized ONNX file, and running it.\n\n"
    "Exit codes: " + ", ".join(f"{code} {label}" for code, label in EXIT_LABELS.items()) + ".",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"onnxkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    common.STATE.verbose = common.STATE.verbose or verbose
    common.STATE.quiet = common.STATE.quiet or quiet
    common.configure_logging()


# Command modules, in the order of `onnxkit --help`. Each adds its command(s) to ``app``
# and imports nothing heavy at import time.
COMMAND_MODULES = [
    "inspect_cmd", "export_cmd", "validate_cmd", "optimize_cmd", "quantize_cmd",
    "run_cmd", "bench_cmd", "providers_cmd", "init_cmd", "pipeline_cmd", "targets_cmd",
]


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"onnxkit.cli.{name}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps onnxkit errors to one line and their exit codes."""
    _register()
    sys.exit(common.invoke(app, argv if argv is not None else sys.argv[1:], prog="onnxkit"))


if __name__ == "__main__":  # pragma: no cover
    main()
