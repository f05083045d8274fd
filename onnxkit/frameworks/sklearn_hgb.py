"""scikit-learn's HistGradientBoosting models as ONNX tree ensembles.

skl2onnx builds these from the estimator's private predictor arrays and breaks on current
scikit-learn; the converters here read the trees themselves and register with skl2onnx.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxkit.errors import ConversionError


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
