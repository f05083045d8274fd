"""scikit-learn estimators and pipelines (``.skops``; ``.joblib``/``.pkl`` only with --trust),
converted with skl2onnx.

Also home of the helpers the other tabular frameworks (XGBoost, LightGBM) share: batch-dim
naming of graph inputs/outputs and opset bookkeeping.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.files import preflight
from onnxkit.foundation.spec import InputSpec
from onnxkit.errors import ConversionError, InputError, UnsafeInput, UsageError, offered
from onnxkit.frameworks import skops_trust
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.frameworks.sklearn_fixes import final_estimator as _final_estimator
from onnxkit.frameworks.sklearn_fixes import (
    binary_decision_columns,
    call_native,
    is_selector,
    concat_probability_sequence,
    converter_options,
    fitted_float_dtype,
    multi_output_classes,
    no_method_message,
    plausible_rows,
    repair_declared_shapes,
    second_output,
    selects_columns_by_name,
    shape_outputs,
    target_opsets,
)

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
DEFAULT_INPUT = "input"
BATCH_DIM = "batch"
CLASSIFIER_OUTPUTS = ("label", "probabilities")
REGRESSOR_OUTPUTS = ("variable",)


# ---------------------------------------------------------------- shared tabular helpers

def name_batch_dims(model: Any, batch: str = BATCH_DIM) -> None:
    """Give the first dim of every graph input and output the same symbolic name.

    Converters leave it unnamed or, for some outputs (onnxmltools' LightGBM label), fix it to
    1, which ONNX Runtime then warns about on every batch larger than one."""
    for vi in list(model.graph.input) + list(model.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = batch


def _tensor_names(graph: Any) -> set[str]:
    names = {t.name for t in graph.initializer} | {vi.name for vi in list(graph.input) + list(graph.output)}
    return names | {n for node in graph.node for n in list(node.input) + list(node.output) if n}


def _rename_tensor(graph: Any, old: str, new: str) -> None:
    if old == new:
        return
    for t in graph.initializer:
        if t.name == old:
            t.name = new
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for vi in list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new


def ensure_default_opset(model: Any, version: int) -> None:
    """Declare the default ONNX domain even when a converter emitted only ai.onnx.ml ops,
    so tools that read "the opset" (and later optimization passes) find one."""
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        op = model.opset_import.add()
        op.domain, op.version = "", version


def default_opset(model: Any) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def batch_dim_of(specs: list[InputSpec]) -> str:
    for s in specs:
        if s.shape and isinstance(s.shape[0], str):
            return s.shape[0]
    return BATCH_DIM


def matrix_spec(options: LoadOptions, n_features: int) -> InputSpec:
    """The one [batch, n_features] float32 input of a numeric tabular model, renamed or
    retyped by the user's single ``--input`` spec if given."""
    if len(options.inputs) > 1:
        raise UsageError(
            f"this model takes one feature matrix; got {len(options.inputs)} --input specs "
            f"({', '.join(s.name for s in options.inputs)})",
        )
    if options.inputs:
        user = options.inputs[0]
        if user.shape and (len(user.shape) != 2 or (isinstance(user.shape[1], int) and user.shape[1] != n_features)):
            raise UsageError(
                f"--input {user} does not fit the model: it takes [batch,{n_features}] (rows x features)",
            )
        if user.dtype.kind != "f":
            raise UsageError(f"--input {user}: tabular models take float32 or float64 features")
        shape = user.shape or (BATCH_DIM, n_features)
        return InputSpec(user.name, (shape[0], n_features), user.dtype)
    return InputSpec(DEFAULT_INPUT, (BATCH_DIM, n_features), np.dtype(np.float32))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------- loading

# Classifiers whose predict() is exactly classes_[argmax(predict_proba())]. Not SVC: its
# predict uses the decision function, which Platt-scaled probabilities can contradict.
ARGMAX_OF_PROBA = frozenset({
    "RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier", "ExtraTreeClassifier",
    "GradientBoostingClassifier", "HistGradientBoostingClassifier", "KNeighborsClassifier", "LogisticRegression",
})


def _final_step(est: Any) -> Any:
    steps = getattr(est, "steps", None)
    return steps[-1][1] if steps else est


def _load_estimator(path: Path, trust: bool) -> Any:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not trust:
            raise UnsafeInput(
                f"{path.name} is a pickle/joblib file: unpickling runs code stored in the file",
                hint="save the model with skops.io.dump (a .skops file) instead, or pass --trust if you vouch for this file",
            )
        joblib = require("joblib", "sklearn")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return joblib.load(path)
        except Exception as exc:  # corrupt pickles raise anything: EOFError, UnpicklingError, ImportError...
            raise InputError(f"cannot load {path.name} with joblib: {first_line(exc)}") from None
    sio = require("skops.io", "sklearn")
    try:
        untrusted = list(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise InputError(f"cannot read {path.name} as a skops file (corrupt or truncated?): {first_line(exc)}") from None
    # skops lists scikit-learn's own fitted state (trees, optimizers, kernels, Bunch) as
    # untrusted too; skops_trust admits those and refuses functions and foreign types.
    untrusted_foreign = skops_trust.refused(untrusted)
    if untrusted_foreign and not trust:
        raise UnsafeInput(
            f"skops file holds types it does not trust: {', '.join(untrusted_foreign)}; pass --trust if you vouch for them",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sio.load(path, trusted=untrusted)
    except Exception as exc:
        raise InputError(f"cannot load {path.name} with skops: {first_line(exc)}") from None


def _walk(est: Any) -> list[Any]:
    """The estimator and every estimator nested in it (pipeline steps, transformers)."""
    out = [est]
    try:
        params = est.get_params(deep=True)
    except Exception:
        return out
    out.extend(v for v in params.values() if hasattr(v, "fit"))
    return out


def _accepts_nan(est: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer

    for part in _walk(est):
        if isinstance(part, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
            return True
        if isinstance(part, SimpleImputer) and isinstance(part.missing_values, float) and np.isnan(part.missing_values):
            return True
    return False


def _has_column_transformer(est: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    return any(isinstance(p, ColumnTransformer) for p in _walk(est))


def _column_specs(est: Any, options: LoadOptions) -> list[InputSpec] | None:
    """One [batch, 1] input per column when the model takes a table (ColumnTransformer or a
    --sample), typed from the sample CSV or the user's specs; None for a plain matrix."""
    names = [str(c) for c in getattr(est, "feature_names_in_", [])]
    if options.sample is not None:
        pd = require("pandas", "sklearn")
        sample = preflight(options.sample, what="sample CSV")
        from onnxkit.foundation.csv_scan import check_csv

        check_csv(sample, max_rows=1000)  # a row wider than the header would become pandas' index
        try:
            frame = pd.read_csv(sample, nrows=1000)
        except Exception as exc:
            raise InputError(f"cannot read the sample {sample.name} as CSV: {first_line(exc)}") from None
        cols = names or [str(c) for c in frame.columns]
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InputError(f"the model expects columns missing from {sample.name}: {', '.join(missing)}")
        specs = []
        for c in cols:
            kind = frame[c].dtype.kind
            dtype = np.dtype(np.float32) if kind in "fiub" else np.dtype(np.str_)
            specs.append(InputSpec(c, (BATCH_DIM, 1), dtype))
        user = {s.name: s for s in options.inputs}
        unknown = [n for n in user if n not in cols]
        if unknown:
            raise UsageError(f"--input names {', '.join(unknown)} are not columns of the model: {', '.join(cols)}")
        return [InputSpec(s.name, user[s.name].shape or s.shape, user[s.name].dtype) if s.name in user else s for s in specs]
    if len(options.inputs) > 1 or (names and len(options.inputs) == len(names) and len(names) > 1):
        if names and sorted(s.name for s in options.inputs) != sorted(names):
            raise UsageError(
                f"--input specs must name the model's columns: {', '.join(names)}",
            )
        return [InputSpec(s.name, s.shape or (BATCH_DIM, 1), s.dtype) for s in options.inputs]
    if _has_column_transformer(est) and (names or selects_columns_by_name(est)):
        raise UsageError(
            "this pipeline selects table columns by name; onnxkit needs their types",
            hint=("pass --sample data.csv (a few rows with the training columns) or one" if offered("--sample") else "pass one")
            + " --input NAME:[batch,1]:DTYPE per column",
        )
    return None


# ---------------------------------------------------------------- HistGradientBoosting

class SklearnSource(SourceModel):
    framework = "sklearn"

    def __init__(self, path: Path, estimator: Any, options: LoadOptions) -> None:
        import sklearn
        from sklearn.base import is_classifier

        self.path = path
        self.estimator = estimator
        self.framework_version = f"scikit-learn {sklearn.__version__}"
        if not hasattr(estimator, "predict") and not hasattr(estimator, "transform"):
            raise InputError(no_method_message(estimator, path.name))
        self.selector = is_selector(estimator)
        self.is_classifier = bool(is_classifier(estimator)) and not self.selector
        self.columns = _column_specs(estimator, options)
        if self.columns is not None:
            self.input_specs = self.columns
        else:
            n = getattr(estimator, "n_features_in_", None)
            if n is None:
                raise InputError(f"{type(estimator).__name__} in {path.name} is not fitted (no n_features_in_)")
            self.input_specs = [matrix_spec(options, int(n))]
        self.accepts_nan = _accepts_nan(estimator)
        self.state_dtype = fitted_float_dtype(estimator)
        self.second = None if self.is_classifier or self.selector or not hasattr(estimator, "predict") else second_output(estimator)
        if self.is_classifier:
            self.output_names = list(CLASSIFIER_OUTPUTS)
            self.label_outputs = ("label",)
        elif self.second is not None:
            # clusterers, mixtures and outlier detectors: labels, then what skl2onnx adds
            self.output_names = ["label", self.second[0]]
            self.label_outputs = ("label",)
        else:
            self.output_names = list(REGRESSOR_OUTPUTS)

    # -- predict
    def _native_input(self, feeds: Feeds) -> Any:
        if self.columns is None:
            X = np.asarray(feeds[self.input_specs[0].name])
            # KMeans' Cython code refuses rows of another float dtype than its centres.
            return X.astype(self.state_dtype) if self.state_dtype is not None and X.dtype.kind == "f" else X
        pd = require("pandas", "sklearn")
        data = {}
        for s in self.columns:
            col = np.asarray(feeds[s.name]).reshape(-1)
            data[s.name] = col.astype(object) if s.dtype.kind == "U" else col
        return pd.DataFrame(data)

    def plausible_feeds(self, batch: int, seed: int) -> tuple[Feeds, str] | None:
        """Random inputs drawn from what the fit stored, for estimators that refuse
        standard-normal rows (see sklearn_fixes.plausible_rows); None for the others."""
        if self.columns is not None:
            return None
        spec = self.input_specs[0]
        drawn = plausible_rows(self.estimator, int(spec.shape[1]), batch, seed)
        if drawn is None:
            return None
        rows, how = drawn
        return {spec.name: rows.astype(spec.dtype)}, how

    def predict(self, feeds: Feeds) -> Feeds:
        X = self._native_input(feeds)
        est = self.estimator
        names = self.output_names or []
        where = self.path.name
        if self.second is not None:
            label = call_native(est, "predict", X, where).astype(np.int64).reshape(-1)
            other = call_native(est, self.second[1], X, where).astype(np.float32)
            return {names[0]: label, names[1]: other.reshape(len(label), -1)}
        if not self.is_classifier:
            y = call_native(est, "predict" if hasattr(est, "predict") and not self.selector else "transform", X, where)
            return {names[0]: (y.reshape(-1, 1) if y.ndim == 1 else y).astype(np.float32)}
        if type(_final_step(est)).__name__ in ARGMAX_OF_PROBA:
            # predict() would run the whole model a second time (halving the source's
            # measured speed in bench --vs) for the same answer.
            scores = call_native(est, "predict_proba", X, where)
            label = np.asarray(est.classes_)[np.argmax(scores, axis=1)]
            return {names[0]: _label_array(label), names[1]: scores.astype(np.float32)}
        label = _label_array(call_native(est, "predict", X, where))
        if hasattr(est, "predict_proba"):
            scores = call_native(est, "predict_proba", X, where)
        else:
            scores = call_native(est, "decision_function", X, where)
            if scores.ndim == 1:  # a binary decision score, as two columns like the export's
                scores = binary_decision_columns(est, scores)
        return {names[0]: label, names[1]: scores.astype(np.float32)}

    # -- export
    def _initial_types(self) -> list[tuple[str, Any]]:
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

        out = []
        for s in self.input_specs:
            shape = [None if not isinstance(d, int) else d for d in s.shape]
            if s.dtype.kind == "U":
                out.append((s.name, StringTensorType(shape)))
            elif s.dtype == np.float64:
                out.append((s.name, DoubleTensorType(shape)))
            else:
                out.append((s.name, FloatTensorType(shape)))
        return out

    def export(self, options: LoadOptions) -> ExportOutcome:
        skl2onnx = require("skl2onnx", "sklearn")
        onnx = require("onnx", "sklearn")
        from skl2onnx import convert_sklearn

        from onnxkit.frameworks.sklearn_hgb import register_hgb_converters

        register_hgb_converters()
        latest = min(skl2onnx.get_latest_tested_opset_version(), onnx.defs.onnx_opset_version())
        opset = options.opset or latest
        notes: list[str] = []
        conv_options: dict[int, dict[str, Any]] = {}
        if self.is_classifier:
            accepted = converter_options(self.estimator, options.zipmap)
            if accepted:
                conv_options[id(_final_estimator(self.estimator))] = accepted
            if options.zipmap and "zipmap" in accepted:
                notes.append("ZipMap kept: probabilities are a list of {class: probability} maps")
            elif options.zipmap:
                notes.append(f"--zipmap: skl2onnx's converter for {type(_final_estimator(self.estimator)).__name__} has no ZipMap; scores stay a tensor")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = convert_sklearn(
                    self.estimator, initial_types=self._initial_types(), target_opset=target_opsets(opset),
                    options=conv_options or None,
                )
        except (ConversionError, UsageError):
            raise
        except Exception as exc:
            raise ConversionError(
                f"skl2onnx could not convert {type(self.estimator).__name__}: {first_line(exc)}",
                hint="check that every step is supported: https://onnx.ai/sklearn-onnx/supported.html",
            ) from None
        batch = batch_dim_of(self.input_specs)
        name_batch_dims(model, batch)
        if self.is_classifier and multi_output_classes(self.estimator) is not None:
            notes.extend(concat_probability_sequence(model, "probabilities", batch))
        notes.extend(shape_outputs(model, self.estimator, "label" if self.label_outputs else None,
                                   self.second[0] if self.second else ("probabilities" if self.is_classifier else None),
                                   batch))
        notes.extend(repair_declared_shapes(model, batch))
        if self.is_classifier and len(model.graph.output) == len(CLASSIFIER_OUTPUTS):
            # skl2onnx names the ZipMap variant's outputs output_label/output_probability: one
            # model, one set of names, whichever form its probabilities take
            inputs = {i.name for i in model.graph.input}
            if not inputs & set(CLASSIFIER_OUTPUTS):
                for out, name in zip(model.graph.output, CLASSIFIER_OUTPUTS):
                    if out.name == name:
                        continue
                    taken = _tensor_names(model.graph)
                    if name in taken:  # an inner tensor has the name (the label before ZipMap): move it aside
                        aside = next(f"{name}_{i}" for i in range(1, len(taken) + 2) if f"{name}_{i}" not in taken)
                        _rename_tensor(model.graph, name, aside)
                    _rename_tensor(model.graph, out.name, name)
        self.output_names = [o.name for o in model.graph.output]
        used = default_opset(model)
        if options.opset is None:
            notes.append(
                f"opset {used}: target was {opset}, the newest skl2onnx {skl2onnx.__version__} is tested with; "
                "it emits the lowest opset its operators need",
            )
        if self.accepts_nan:
            notes.append("the model accepts NaN inputs (missing values)")
        return ExportOutcome(model=model, exporter=f"skl2onnx {skl2onnx.__version__}", opset=used, notes=notes)


def load(source: str | Path, options: LoadOptions) -> SklearnSource:
    path = preflight(source, what="scikit-learn model")
    estimator = _load_estimator(path, options.trust)
    return SklearnSource(path, estimator, options)


def convert_opset(model: Any, target: int) -> Any:
    """Upgrade the default-domain opset of a converted model (for tools that cap theirs)."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, target)
    except Exception as exc:
        raise ConversionError(
            f"the model converts at opset {default_opset(model)} but could not be upgraded to opset {target}: {first_line(exc)}",
            hint=f"omit --opset or use --opset {default_opset(model)}",
        ) from None


def _label_array(label: np.ndarray) -> np.ndarray:
    """Class labels as the export writes them: integers (and float classes, which scikit-learn
    only accepts when integral: y = 0.0/1.0/2.0, written as int64 by skl2onnx) as int64, the
    others as text. Float classes compared as text ("1.0" vs "1") failed a correct export."""
    label = np.asarray(label)
    if label.dtype.kind in "iub":
        return label.astype(np.int64)
    if label.dtype.kind == "f" and np.all(np.isfinite(label)) and np.all(label == np.round(label)):
        return label.astype(np.int64)
    return label.astype(str)

