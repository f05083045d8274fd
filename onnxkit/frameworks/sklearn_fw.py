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

def _round_down_f32(values: np.ndarray) -> np.ndarray:
    """float64 thresholds as the largest float32 not above them: for every float32 x,
    ``x <= t32`` then equals scikit-learn's ``float64(x) <= t``."""
    t = np.asarray(values, dtype=np.float64)
    f = t.astype(np.float32)
    over = f.astype(np.float64) > t
    f[over] = np.nextafter(f[over], np.float32(-np.inf))
    return f


def hgb_tree_attributes(est: Any) -> tuple[dict[str, Any], int]:
    """TreeEnsembleRegressor attributes (raw scores, one target per tree of an iteration)
    built from a fitted HistGradientBoosting model's predictors."""
    if getattr(est, "_preprocessor", None) is not None or getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        raise ConversionError("HistGradientBoosting with categorical features is not supported by onnxkit's converter yet")
    predictors = est._predictors
    n_targets = len(predictors[0])
    a: dict[str, list] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights",
    )}
    thresholds: list[float] = []
    tree_id = 0
    for iteration in predictors:
        for k, pred in enumerate(iteration):
            nodes = pred.nodes
            if np.any(nodes["is_categorical"][nodes["is_leaf"] == 0]):
                raise ConversionError("HistGradientBoosting with categorical splits is not supported by onnxkit's converter yet")
            for i, node in enumerate(nodes):
                a["nodes_treeids"].append(tree_id)
                a["nodes_nodeids"].append(i)
                if node["is_leaf"]:
                    a["nodes_featureids"].append(0)
                    a["nodes_modes"].append("LEAF")
                    thresholds.append(0.0)
                    a["nodes_truenodeids"].append(0)
                    a["nodes_falsenodeids"].append(0)
                    a["nodes_missing_value_tracks_true"].append(0)
                    a["target_treeids"].append(tree_id)
                    a["target_nodeids"].append(i)
                    a["target_ids"].append(k)
                    a["target_weights"].append(float(node["value"]))
                else:
                    a["nodes_featureids"].append(int(node["feature_idx"]))
                    a["nodes_modes"].append("BRANCH_LEQ")
                    thresholds.append(float(node["num_threshold"]))
                    a["nodes_truenodeids"].append(int(node["left"]))
                    a["nodes_falsenodeids"].append(int(node["right"]))
                    # NaN follows missing_go_to_left, exactly as scikit-learn routes it.
                    a["nodes_missing_value_tracks_true"].append(int(node["missing_go_to_left"]))
            tree_id += 1
    a["nodes_values"] = [float(v) for v in _round_down_f32(np.array(thresholds))]
    attrs: dict[str, Any] = dict(a)
    attrs["n_targets"] = n_targets
    attrs["aggregate_function"] = "SUM"
    attrs["post_transform"] = "NONE"
    attrs["base_values"] = [float(v) for v in np.asarray(est._baseline_prediction, dtype=np.float64).ravel()]
    return attrs, n_targets


def _hgb_link(est: Any) -> str:
    name = type(est._loss.link).__name__
    known = {"IdentityLink": "identity", "LogLink": "exp", "LogitLink": "sigmoid", "MultinomialLogit": "softmax"}
    if name not in known:
        raise ConversionError(f"HistGradientBoosting with link {name} is not supported by onnxkit's converter")
    return known[name]


def _hgb_raw_scores(scope, operator, container) -> str:
    from onnx import TensorProto

    est = operator.raw_operator
    attrs, _ = hgb_tree_attributes(est)
    x = operator.inputs[0].full_name
    if operator.inputs[0].type.__class__.__name__ != "FloatTensorType":
        cast = scope.get_unique_variable_name("hgb_x32")
        container.add_node("Cast", [x], [cast], to=TensorProto.FLOAT, name=scope.get_unique_operator_name("Cast"))
        x = cast
    raw = scope.get_unique_variable_name("hgb_raw")
    container.add_node(
        "TreeEnsembleRegressor", [x], [raw], op_domain="ai.onnx.ml", op_version=1,
        name=scope.get_unique_operator_name("TreeEnsembleRegressor"), **attrs,
    )
    return raw


def _convert_hgb_regressor(scope, operator, container) -> None:
    est = operator.raw_operator
    link = _hgb_link(est)
    raw = _hgb_raw_scores(scope, operator, container)
    out = operator.outputs[0].full_name
    op = "Exp" if link == "exp" else "Identity"
    container.add_node(op, [raw], [out], name=scope.get_unique_operator_name(op))


def _convert_hgb_classifier(scope, operator, container) -> None:
    from onnx import TensorProto

    est = operator.raw_operator
    link = _hgb_link(est)
    raw = _hgb_raw_scores(scope, operator, container)
    label_out, proba_out = operator.outputs[0].full_name, operator.outputs[1].full_name
    uname = scope.get_unique_operator_name
    if link == "sigmoid":
        p1 = scope.get_unique_variable_name("p1")
        container.add_node("Sigmoid", [raw], [p1], name=uname("Sigmoid"))
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, TensorProto.FLOAT, [], [1.0])
        p0 = scope.get_unique_variable_name("p0")
        container.add_node("Sub", [one, p1], [p0], name=uname("Sub"))
        container.add_node("Concat", [p0, p1], [proba_out], axis=1, name=uname("Concat"))
    elif link == "softmax":
        container.add_node("Softmax", [raw], [proba_out], axis=1, name=uname("Softmax"))
    else:
        raise ConversionError(f"HistGradientBoostingClassifier with link {link} is not supported")
    # predict() is argmax of predict_proba; ArgMax takes the first maximum, like numpy.
    idx = scope.get_unique_variable_name("class_index")
    container.add_node("ArgMax", [proba_out], [idx], axis=1, keepdims=0, name=uname("ArgMax"))
    classes = np.asarray(est.classes_)
    cls_name = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "iub":
        container.add_initializer(cls_name, TensorProto.INT64, [len(classes)], [int(c) for c in classes])
    else:
        container.add_initializer(cls_name, TensorProto.STRING, [len(classes)], [str(c).encode() for c in classes])
    container.add_node("Gather", [cls_name, idx], [label_out], axis=0, name=uname("Gather"))


_HGB_REGISTERED = False


def register_hgb_converters() -> None:
    """Replace skl2onnx's HistGradientBoosting converters with ours.

    skl2onnx 1.20 fails on scikit-learn 1.9 HGB models (a Python bool in an int attribute)
    and, once that is patched, its binary and regression outputs differ from scikit-learn's
    by up to 0.19 in probability; ours builds the trees from the fitted predictors directly."""
    global _HGB_REGISTERED
    if _HGB_REGISTERED:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    update_registered_converter(
        HistGradientBoostingClassifier, "SklearnHistGradientBoostingClassifier",
        calculate_linear_classifier_output_shapes, _convert_hgb_classifier,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
    )
    update_registered_converter(
        HistGradientBoostingRegressor, "SklearnHistGradientBoostingRegressor",
        calculate_linear_regressor_output_shapes, _convert_hgb_regressor,
    )
    _HGB_REGISTERED = True


# ---------------------------------------------------------------- the source model

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
            label = label.astype(np.int64) if label.dtype.kind in "iub" else label.astype(str)
            return {names[0]: label, names[1]: scores.astype(np.float32)}
        label = call_native(est, "predict", X, where)
        label = label.astype(np.int64) if label.dtype.kind in "iub" else label.astype(str)
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
