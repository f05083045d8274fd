"""LightGBM boosters in LightGBM's text format (``.txt``, ``.lgb``), converted with
onnxmltools. The text is parsed first in a child process: LightGBM's C++ parser can crash
the interpreter on a truncated or hostile file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.files import preflight
from onnxkit.errors import InputError
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.frameworks.sklearn_fw import first_line, matrix_spec
from onnxkit.frameworks.xgboost_fw import convert_tree_model, set_tree_outputs

PARSE_TIMEOUT_S = 120.0
CLASSIFIER_OBJECTIVES = ("binary", "multiclass", "multiclassova")


def parse_model_file(path: str) -> dict[str, Any]:
    """Load a LightGBM text model and return it re-serialized with its shape facts.

    Runs in a child process (see :func:`load`), so it must stay top-level and picklable."""
    import os

    import lightgbm as lgb

    # This process exists only to parse; LightGBM's native logging of a malformed file (one
    # line per bad tree, raw bytes included) would flood the user's terminal.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        booster = lgb.Booster(model_file=path)
    except lgb.basic.LightGBMError as exc:
        raise InputError(f"cannot load {Path(path).name} as a LightGBM model: {first_line(exc)}") from None
    dump = booster.dump_model(num_iteration=-1)
    if not dump.get("tree_info"):
        raise InputError(f"{Path(path).name} holds a LightGBM model with no trees")
    return {
        "text": booster.model_to_string(num_iteration=-1),
        "objective": str(dump.get("objective", "")),
        "num_class": int(dump.get("num_class", 1)),
        "num_feature": int(booster.num_feature()),
    }


class LightGBMSource(SourceModel):
    framework = "lightgbm"

    def __init__(self, path: Path, parsed: dict[str, Any], options: LoadOptions) -> None:
        lgb = require("lightgbm", "sklearn")
        self.path = path
        self.framework_version = f"lightgbm {lgb.__version__}"
        # The same text already parsed cleanly in the child, so parsing it here is safe.
        self.booster = lgb.Booster(model_str=parsed["text"])
        self.objective = parsed["objective"].split()[0] if parsed["objective"] else ""
        self.num_class = parsed["num_class"]
        self.is_classifier = self.objective in CLASSIFIER_OBJECTIVES
        self.input_specs = [matrix_spec(options, parsed["num_feature"])]
        self.accepts_nan = True  # LightGBM routes NaN as missing at every split
        set_tree_outputs(self)

    def predict(self, feeds: Feeds) -> Feeds:
        X = np.asarray(feeds[self.input_specs[0].name], dtype=np.float32)
        names = self.output_names or []
        y = np.asarray(self.booster.predict(X, num_threads=1))
        if not self.is_classifier:
            return {names[0]: y.astype(np.float32).reshape(len(X), -1)}
        proba = np.stack([1.0 - y, y], axis=1) if y.ndim == 1 else y
        label = np.argmax(proba, axis=1).astype(np.int64)
        return {names[0]: label, names[1]: proba.astype(np.float32)}

    def export(self, options: LoadOptions) -> ExportOutcome:
        return convert_tree_model(self, options, "convert_lightgbm", self.booster, "LightGBM", zipmap=bool(options.zipmap))


def load(source: str | Path, options: LoadOptions) -> LightGBMSource:
    from onnxkit.foundation.sandbox import run_isolated

    path = preflight(source, what="LightGBM model")
    require("lightgbm", "sklearn")
    parsed = run_isolated(parse_model_file, str(path), timeout_s=PARSE_TIMEOUT_S, what=f"LightGBM model {path.name}")
    return LightGBMSource(path, parsed, options)
