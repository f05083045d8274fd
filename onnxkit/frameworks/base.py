"""The contract every source framework module fulfils.

A framework module exposes ``load(path, options) -> SourceModel``. A SourceModel can
predict on numpy feeds (the reference for validation and ``bench --vs``) and export
itself to an ONNX ModelProto. Framework imports happen inside the module's functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.spec import InputSpec

Feeds = dict[str, np.ndarray]


@dataclass
class LoadOptions:
    """Everything a user can tell onnxkit about how to load and export a source model."""

    framework: str | None = None          # override detection: torch, tensorflow, sklearn, xgboost, lightgbm, onnx
    trust: bool = False                   # allow code-carrying formats (pickle, joblib, Keras Lambda)
    inputs: list[InputSpec] = field(default_factory=list)  # --input specs (symbolic dims = dynamic axes)
    weights: Path | None = None           # torch factory: a state_dict file (loaded weights_only=True)
    random_weights: bool = False          # torch factory: export it without --weights, on purpose
    signature: str = "serving_default"    # TensorFlow SavedModel signature
    sample: Path | None = None            # sklearn ColumnTransformer: a CSV to learn column names/types
    exporter: str = "auto"                # torch: auto | dynamo | torchscript
    opset: int | None = None
    zipmap: bool = False                  # sklearn classifiers: keep ZipMap (list of dicts) output
    output_names: list[str] | None = None
    task: str | None = None               # Hugging Face folder: the head to export (inferred from config when None)
    texts: list[str] = field(default_factory=list)  # Hugging Face folder: sentences to validate on
    generate: int | None = None           # Hugging Face text-generation: new tokens to decode when validating


@dataclass
class ExportOutcome:
    """What an exporter produced, with the notes a user should read."""

    model: Any                            # onnx.ModelProto
    exporter: str                         # e.g. "torch.onnx (dynamo)", "tf2onnx 1.17", "skl2onnx 1.20"
    opset: int | None = None
    notes: list[str] = field(default_factory=list)


class SourceModel:
    """A loaded source model. Subclasses set the attributes and implement the two methods."""

    framework: str = ""
    framework_version: str = ""
    path: Path
    input_specs: list[InputSpec]
    output_names: list[str] | None = None
    # True when the model accepts NaN inputs meaningfully (imputers, HistGradientBoosting).
    accepts_nan: bool = False
    # Names of outputs that are class labels (compared by agreement, not tolerance).
    label_outputs: tuple[str, ...] = ()

    def predict(self, feeds: Feeds) -> Feeds:
        """Run the native model on numpy feeds keyed by input name; outputs keyed by the
        same names the ONNX export will use (or positionally ordered)."""
        raise NotImplementedError

    def export(self, options: LoadOptions) -> ExportOutcome:
        """Convert to ONNX in memory. Exporter failures raise ConversionError (exit 4)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "framework_version": self.framework_version,
            "path": str(self.path),
            "inputs": [s.to_dict() for s in self.input_specs],
        }
