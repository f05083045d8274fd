"""onnxkit export SOURCE -o OUT.onnx"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


@app.command("export")
def export_command(
    source: Annotated[str, typer.Argument(help="Model file or folder (.pt2, .pt, .keras, .h5, SavedModel, .skops, .json, .txt, ...) or a factory file.py:function.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The ONNX file to write.", show_default=False)],
    framework: Annotated[str | None, typer.Option("--framework", help="Override detection: torch, tensorflow, sklearn, xgboost, lightgbm.")] = None,
    inputs: common.Inputs = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="PyTorch state_dict for a factory source (loaded with weights_only=True).")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="Export a factory source without --weights: the model exactly as the factory builds it.")] = False,
    signature: Annotated[str, typer.Option("--signature", help="TensorFlow SavedModel signature.")] = "serving_default",
    sample: Annotated[Path | None, typer.Option("--sample", help="CSV sample to learn column names and types (scikit-learn ColumnTransformer).")] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="PyTorch exporter: auto, dynamo or torchscript.")] = "auto",
    opset: Annotated[int | None, typer.Option("--opset", help="Target ONNX opset.")] = None,
    output_names: Annotated[str | None, typer.Option("--output-names", help="PyTorch: names for the model's outputs, comma-separated, in the order forward() returns them.", show_default=False)] = None,
    zipmap: Annotated[bool, typer.Option("--zipmap", help="Keep scikit-learn's ZipMap (list of dicts) probability output.")] = False,
    task: Annotated[str | None, typer.Option("--task", help="Hugging Face folder: the head to export (feature-extraction, text-classification, token-classification, fill-mask, question-answering, text-generation, text2text-generation, image-classification); inferred from config.json when omitted.", show_default=False)] = None,
    text: Annotated[list[str] | None, typer.Option("--text", help="Hugging Face folder: a sentence to validate on (repeatable); default: built-in sentences of different lengths.", show_default=False)] = None,
    generate: Annotated[int | None, typer.Option("--generate", help="Hugging Face text-generation / text2text-generation: new tokens to decode greedily when validating (default 8).", show_default=False)] = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the validation against the source.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Validate on these rows (.npz, .npy, .csv, .parquet) instead of random inputs, for models random values are invalid for; for a Hugging Face image model, an image file or a folder of images.")] = None,
    tol: common.Tol = None,
    rtol: common.Rtol = None,
    preset: common.Preset = None,
    seed: common.Seed = 0,
    trust: common.Trust = False,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Export a trained model to ONNX, check it and validate it against the source.

    Exit 1 when the export is out of tolerance (the file is kept), 4 when the exporter fails,
    5 when the source would run code on load (pickle, Keras Lambda) without --trust.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.operations.export import export_model
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.errors import UsageError
    from onnxkit.frameworks.base import LoadOptions

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UsageError(f"unknown --exporter {exporter!r}; choose auto, dynamo or torchscript")
    if opset is not None and not 7 <= opset <= 30:
        raise UsageError(f"--opset {opset} is out of range (7..30)")
    options = LoadOptions(
        framework=framework, trust=trust, inputs=parse_specs(inputs), weights=weights, random_weights=random_weights, signature=signature,
        sample=sample, exporter=exporter, opset=opset, zipmap=zipmap, output_names=_names(output_names),
        task=task, texts=list(text or []), generate=generate,
    )
    tolerance = make_tolerance(tol, rtol, preset)
    common.emit(export_model(source, output, options, validate=not no_validate, tolerance=tolerance, seed=seed,
                             data=data))


def _names(text: str | None) -> list[str] | None:
    from onnxkit.errors import UsageError

    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise UsageError(f"--output-names {text!r}: give distinct, non-empty names separated by commas")
    return names
