"""XGBoost boosters saved in XGBoost's own formats (``.json``, ``.ubj``), converted with
onnxmltools. Classifier or regressor is read from the booster's objective."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.files import preflight
from onnxkit.errors import ConversionError, InputError
from onnxkit.frameworks.booster_scan import check_depth
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.frameworks.sklearn_fw import (
    CLASSIFIER_OUTPUTS,
    REGRESSOR_OUTPUTS,
    batch_dim_of,
    convert_opset,
    ensure_default_opset,
    first_line,
    matrix_spec,
    name_batch_dims,
)

# onnxmltools 1.16 refuses any target above this for its XGBoost and LightGBM converters.
ONNXMLTOOLS_MAX_OPSET = 15
CLASSIFIER_OBJECTIVES = ("binary:logistic", "multi:softprob", "multi:softmax")
# Objectives onnxmltools converts as regressors (log-link ones get an Exp).
REGRESSOR_OBJECTIVES = (
    "reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror", "reg:pseudohubererror",
    "reg:logistic", "count:poisson", "reg:gamma", "reg:tweedie", "reg:linear",
)
# A ranker's score is the raw margin (identity link), as a squared-error regressor's is.
# onnxmltools reads a bare Booster as a classifier unless its objective starts with "reg:",
# so a ranker goes to it wrapped as an XGBRegressor that keeps its objective.
RANKING_OBJECTIVES = ("rank:pairwise", "rank:ndcg", "rank:map")


class XGBoostSource(SourceModel):
    framework = "xgboost"

    def __init__(self, path: Path, booster: Any, options: LoadOptions) -> None:
        xgb = require("xgboost", "sklearn")
        self.path = path
        self.booster = booster
        self.framework_version = f"xgboost {xgb.__version__}"
        config = json.loads(booster.save_config())
        learner = config["learner"]
        self.objective = learner["objective"]["name"]
        self.num_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
        supported = CLASSIFIER_OBJECTIVES + REGRESSOR_OBJECTIVES + RANKING_OBJECTIVES
        if self.objective not in supported:
            raise ConversionError(
                f"XGBoost objective {self.objective!r} is not supported by the ONNX converter",
                hint=f"supported: {', '.join(supported)}",
            )
        self.is_classifier = self.objective in CLASSIFIER_OBJECTIVES
        self.input_specs = [matrix_spec(options, int(booster.num_features()))]
        # XGBoost treats NaN as "missing" and routes it down each split's default branch.
        self.accepts_nan = True
        set_tree_outputs(self)

    def predict(self, feeds: Feeds) -> Feeds:
        xgb = require("xgboost", "sklearn")
        X = np.asarray(feeds[self.input_specs[0].name], dtype=np.float32)
        dm = xgb.DMatrix(X, missing=np.nan)
        names = self.output_names or []
        if not self.is_classifier:
            y = np.asarray(self.booster.predict(dm), dtype=np.float32)
            return {names[0]: y.reshape(len(X), -1)}
        if self.objective == "multi:softmax":
            margin = np.asarray(self.booster.predict(dm, output_margin=True), dtype=np.float64).reshape(len(X), -1)
            e = np.exp(margin - margin.max(axis=1, keepdims=True))
            proba = e / e.sum(axis=1, keepdims=True)
        else:
            p = np.asarray(self.booster.predict(dm), dtype=np.float64)
            proba = np.stack([1.0 - p, p], axis=1) if p.ndim == 1 else p
        # XGBClassifier.predict: p > 0.5 for binary, argmax otherwise; both equal argmax
        # with ties going to the first class.
        label = np.argmax(proba, axis=1).astype(np.int64)
        return {names[0]: label, names[1]: proba.astype(np.float32)}

    def export(self, options: LoadOptions) -> ExportOutcome:
        booster = self.booster.copy()
        # onnxmltools reads features as f0, f1, ...; named features make it fail.
        booster.feature_names = None
        booster.feature_types = None
        native: Any = booster
        if self.objective in RANKING_OBJECTIVES:
            xgb = require("xgboost", "sklearn")
            native = xgb.XGBRegressor(objective=self.objective)
            native._Booster = booster
        return convert_tree_model(self, options, "convert_xgboost", native, "XGBoost")


def set_tree_outputs(src: SourceModel) -> None:
    """Output names of a booster as onnxmltools writes them (label + probabilities, or variable)."""
    if src.is_classifier:
        src.output_names = list(CLASSIFIER_OUTPUTS)
        src.label_outputs = ("label",)
    else:
        src.output_names = list(REGRESSOR_OUTPUTS)


def convert_tree_model(src: SourceModel, options: LoadOptions, converter: str, native: Any, label: str, **kwargs: Any) -> ExportOutcome:
    """Convert a booster with onnxmltools (``converter`` names its function) at the highest
    opset it supports, then finish the export (see :func:`finish_tree_export`)."""
    onnxmltools = require("onnxmltools", "sklearn")
    from onnxmltools.convert.common.data_types import DoubleTensorType, FloatTensorType

    spec = src.input_specs[0]
    shape = [None if not isinstance(d, int) else d for d in spec.shape]
    tensor = DoubleTensorType(shape) if spec.dtype == np.float64 else FloatTensorType(shape)
    opset = min(options.opset or ONNXMLTOOLS_MAX_OPSET, ONNXMLTOOLS_MAX_OPSET)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = getattr(onnxmltools, converter)(native, initial_types=[(spec.name, tensor)], target_opset=opset, **kwargs)
    except Exception as exc:
        raise ConversionError(f"onnxmltools could not convert the {label} model: {first_line(exc)}") from None
    return finish_tree_export(model, src, options, opset, f"onnxmltools {onnxmltools.__version__} ({label})")


def finish_tree_export(model: Any, src: SourceModel, options: LoadOptions, opset: int, exporter: str) -> ExportOutcome:
    """Common tail of the onnxmltools exports: batch dims, opset, output names, notes."""
    notes = [f"opset {opset}: onnxmltools' tree converters support up to {ONNXMLTOOLS_MAX_OPSET}"]
    ensure_default_opset(model, opset)
    if options.opset and options.opset > ONNXMLTOOLS_MAX_OPSET:
        model = convert_opset(model, options.opset)
        notes = [f"converted at opset {opset} (the onnxmltools maximum), then upgraded to opset {options.opset}"]
    name_batch_dims(model, batch_dim_of(src.input_specs))
    graph_names = [o.name for o in model.graph.output]
    if len(graph_names) != len(src.output_names or []):
        raise ConversionError(
            f"the converted model has outputs {', '.join(graph_names)}; expected {', '.join(src.output_names or [])}",
        )
    src.output_names = graph_names
    notes.append("NaN inputs are treated as missing values, as the booster does")
    return ExportOutcome(model=model, exporter=exporter, opset=options.opset or opset, notes=notes)


def load(source: str | Path, options: LoadOptions) -> XGBoostSource:
    path = preflight(source, what="XGBoost model")
    check_depth(path, "XGBoost model")  # XGBoost's recursive parser would overflow the C stack
    xgb = require("xgboost", "sklearn")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise InputError(f"cannot load {path.name} as an XGBoost model (corrupt or truncated?): {first_line(exc)}") from None
    except UnicodeDecodeError as exc:
        # XGBoost quotes the offending bytes of the file in its message and its Python layer
        # decodes that message as UTF-8: a binary file turns the load error into this.
        raw = exc.object if isinstance(exc.object, bytes) else b""
        message = first_line(Exception(raw.decode("utf-8", errors="replace"))) if raw else "unreadable error message"
        raise InputError(f"cannot load {path.name} as an XGBoost model (corrupt or truncated?): {message}") from None
    return XGBoostSource(path, booster, options)
