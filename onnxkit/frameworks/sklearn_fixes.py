"""What it takes to compare scikit-learn estimators with their skl2onnx exports beyond plain
classifiers and regressors: which converter options apply, which native method gives each
ONNX output (clusterers, mixtures, outlier detectors), dense views of sparse results, and
the repairs of output shapes skl2onnx gets wrong (a label of shape [1, N], a declared shape
that contradicts the graph)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from onnxkit.errors import InputError

# ai.onnx.ml opset skl2onnx 1.20 writes (IsolationForest refuses onnx's newer default, 4)
ML_OPSET = 3

# Estimators whose predict() gives labels and whose export adds a second output, with the
# method giving it: (output name skl2onnx uses, method). Checked in order, by method presence
# on the estimator's class name family.
_SECOND_OUTPUT = (
    (("KMeans", "MiniBatchKMeans", "BisectingKMeans"), ("scores", "transform")),
    (("GaussianMixture", "BayesianGaussianMixture"), ("probabilities", "predict_proba")),
    (("OneClassSVM", "SGDOneClassSVM", "IsolationForest", "LocalOutlierFactor"), ("scores", "decision_function")),
)


def final_estimator(est: Any) -> Any:
    while hasattr(est, "steps"):
        est = est.steps[-1][1]
    return est


def converter_options(est: Any, zipmap: bool) -> dict[str, Any]:
    """Options for the final estimator's converter: ``zipmap`` only where it accepts one
    (LinearSVC's converter refuses the option outright)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter

    final = final_estimator(est)
    try:
        allowed = get_converter(sklearn_operator_name_map[type(final)]).get_allowed_options() or {}
    except Exception:  # unknown to skl2onnx: its own error (exit 4) says so at conversion
        return {}
    if "zipmap" in allowed:
        return {"zipmap": bool(zipmap)}
    # Inside a Pipeline, skl2onnx gives a classifier step without options zipmap=True itself;
    # any explicit option (at its default value) prevents that.
    neutral = {k: v for k, v in (("nocl", False), ("output_class_labels", False), ("raw_scores", False)) if k in allowed}
    return dict(list(neutral.items())[:1])


def target_opsets(opset: int) -> dict[str, int]:
    return {"": opset, "ai.onnx.ml": ML_OPSET}


def second_output(est: Any) -> tuple[str, str] | None:
    """(ONNX output name, method) of an unsupervised estimator's second output, if any."""
    name = type(final_estimator(est)).__name__
    for names, out in _SECOND_OUTPUT:
        if name in names and hasattr(est, out[1]):
            return out
    return None


def dense(value: Any) -> np.ndarray:
    """A NumPy array of a native result, sparse ones (KNeighborsTransformer, TfidfTransformer) made dense."""
    if hasattr(value, "toarray"):
        value = value.toarray()
    if is_column_blocks(value):
        # a multi-output classifier's predict_proba: one [N, k_i] array per target, side by
        # side as the export's probabilities (see concat_probability_sequence)
        return np.concatenate([np.asarray(v) for v in value], axis=1)
    return np.asarray(value)


def is_column_blocks(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and all(np.ndim(v) == 2 for v in value)
            and len({np.shape(v)[0] for v in value}) == 1)


def multi_output_classes(est: Any) -> list | None:
    """The per-target class arrays of a multi-output classifier (MultiOutputClassifier,
    ClassifierChain, a multi-output forest); None for a single-target estimator."""
    classes = getattr(final_estimator(est), "classes_", None)
    return classes if isinstance(classes, list) else None


def concat_probability_sequence(model: Any, output: str, batch: str) -> list[str]:
    """skl2onnx gives a multi-output classifier's probabilities as a sequence of [N, k_i]
    tensors, which nothing downstream compares or serves as a tensor: append
    ConcatFromSequence so the output is one [N, sum k_i] tensor, targets side by side."""
    from onnx import TensorProto, helper

    outs = {o.name: o for o in model.graph.output}
    vi = outs.get(output)
    if vi is None or not vi.type.HasField("sequence_type"):
        return []
    g = model.graph
    taken = {t.name for t in g.initializer} | {n for node in g.node for n in list(node.input) + list(node.output)}
    inner = next(f"{output}_seq{i or ''}" for i in range(len(taken) + 2) if f"{output}_seq{i or ''}" not in taken)
    for node in g.node:
        node.output[:] = [inner if n == output else n for n in node.output]
        node.input[:] = [inner if n == output else n for n in node.input]
    g.node.append(helper.make_node("ConcatFromSequence", [inner], [output], axis=1, name=f"{output}_concat"))
    vi.CopyFrom(helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, None]))
    return [f"output {output}: the per-target probability tensors are concatenated side by side "
            "(one row per sample, each target's classes in turn) instead of a sequence of tensors"]


def call_native(est: Any, method: str, X: Any, where: str) -> np.ndarray:
    """Run one of the estimator's methods; its refusal of the inputs is an input problem
    (exit 2) with the way out, not a traceback."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dense(getattr(est, method)(X))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"scikit-learn's {type(final_estimator(est)).__name__}.{method} refused the inputs of {where}: {text}",
            hint="random inputs may be invalid for this model (categories, counts, known values): "
                 "pass --data with real rows",
        ) from None


def no_method_message(est: Any, path_name: str) -> str:
    name = type(est).__name__
    if hasattr(est, "fit") or hasattr(est, "get_params"):
        fix = " (fit it with novelty=True)" if name == "LocalOutlierFactor" else ""
        return (f"{path_name} holds a {name}, which has neither predict nor transform{fix}: onnxkit compares "
                "an export with one of them")
    return f"{path_name} holds a {name}, not a scikit-learn estimator"


# ---------------------------------------------------------------- output repairs


def _add_reshape(model: Any, output: str, shape: list[int]) -> None:
    """Make graph output ``output`` the result of Reshape(its producer, shape)."""
    from onnx import helper, numpy_helper

    g = model.graph
    taken = {t.name for t in g.initializer} | {n for node in g.node for n in list(node.input) + list(node.output)}
    inner = next(f"{output}_raw{i or ''}" for i in range(len(taken) + 2) if f"{output}_raw{i or ''}" not in taken)
    for node in g.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = inner
        for i, name in enumerate(node.input):
            if name == output:
                node.input[i] = inner
    shape_name = f"{inner}_shape"
    g.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), shape_name))
    g.node.append(helper.make_node("Reshape", [inner, shape_name], [output], name=f"{output}_reshape"))


def _declared_rank(vi: Any) -> int | None:
    t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    return len(t.shape.dim) if t is not None and t.HasField("shape") else None


def _set_dims(vi: Any, dims: list) -> None:
    shape = vi.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d:
            dim.dim_param = d


def shape_outputs(model: Any, est: Any, label_name: str | None, second: str | None, batch: str) -> list[str]:
    """Give a single-output estimator's label the shape [batch] and a second output (scores,
    probabilities) the shape [batch, k], whatever skl2onnx wrote ([1, N] labels for
    QuadraticDiscriminantAnalysis, [N, 1] for GaussianMixture, [N] scores for SGDOneClassSVM)."""
    notes: list[str] = []
    final = final_estimator(est)
    single = multi_output_classes(est) is None and getattr(final, "n_outputs_", 1) == 1
    outs = {o.name: o for o in model.graph.output}
    # OneVsOneClassifier declares its label [N] and computes [N, 1]: the run decides.
    if label_name in outs and single and (_declared_rank(outs[label_name]) != 1 or _run_rank(model, label_name) not in (1, None)):
        _add_reshape(model, label_name, [-1])
        _set_dims(outs[label_name], [batch])
        notes.append(f"output {label_name}: reshaped to [{batch}] (skl2onnx gives this estimator's labels another shape)")
    if second in outs and _declared_rank(outs[second]) == 1:
        _add_reshape(model, second, [-1, 1])
        _set_dims(outs[second], [batch, 1])
    scores = outs.get(second) if second else None
    binary = single and len(getattr(final, "classes_", [])) == 2
    if scores is not None and binary and (_declared_dims(scores)[1:] == [1] or _run_width(model, second) == 1):
        _two_columns(model, second)
        _set_dims(scores, [batch, 2])
        notes.append(f"output {second}: the binary decision score d became [-d, d], one column per class as for other classifiers")
    return notes


def _declared_dims(vi: Any) -> list:
    if _declared_rank(vi) is None:
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _run_width(model: Any, output: str) -> int | None:
    """The width ONNX Runtime actually gives ``output`` on one row of zeros (RidgeClassifier's
    binary export declares [N, 2] and computes [N, 1]); None where inputs are not plain floats."""
    value = _run_zeros(model, output)
    return int(value.shape[1]) if value is not None and np.ndim(value) == 2 else None


def _run_rank(model: Any, output: str) -> int | None:
    value = _run_zeros(model, output)
    return None if value is None else int(np.ndim(value))


def _run_zeros(model: Any, output: str) -> Any:
    import onnxruntime as ort

    feeds = {}
    for vi in model.graph.input:
        dims = _declared_dims(vi)
        if vi.type.tensor_type.elem_type not in (1, 11) or len(dims) != 2 or not isinstance(dims[1], int):
            return None
        feeds[vi.name] = np.zeros((1, dims[1]), np.float32 if vi.type.tensor_type.elem_type == 1 else np.float64)
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4  # a model that fails on zeros is reported by the validation, once
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run([output], feeds)[0]
    except Exception:  # the validation that follows reports what does not run
        return None


# skl2onnx writes a binary decision score d as two columns; which sign comes first depends
# on the converter (SVC/NuSVC: [d, -d]; the linear ones: [-d, d]).
_D_FIRST = frozenset({"SVC", "NuSVC"})


def binary_decision_columns(est: Any, d: np.ndarray) -> np.ndarray:
    """A 1-D binary decision function as the two columns the export computes."""
    if type(final_estimator(est)).__name__ in _D_FIRST:
        return np.stack([d, -d], axis=1)
    return np.stack([-d, d], axis=1)


def _two_columns(model: Any, output: str) -> None:
    """Make a [N, 1] binary score output [N, 2]: [-d, d] (LinearSVC's converter writes d alone)."""
    from onnx import helper

    _add_reshape(model, output, [-1, 1])  # leaves output = Reshape(raw); rewire it below
    g = model.graph
    reshape = g.node[len(g.node) - 1]
    col = f"{output}_col"
    neg = f"{output}_neg"
    reshape.output[0] = col
    g.node.append(helper.make_node("Neg", [col], [neg], name=f"{output}_neg"))
    g.node.append(helper.make_node("Concat", [neg, col], [output], axis=1, name=f"{output}_concat"))


def repair_declared_shapes(model: Any, batch: str) -> list[str]:
    """Replace graph output shapes that shape inference contradicts (skl2onnx declares
    PLSRegression's prediction as [batch, n_features]) by the inferred ones; the checker then
    accepts the model, and validation in ONNX Runtime tells whether the graph is right."""
    import onnx
    from onnx import shape_inference

    try:
        shape_inference.infer_shapes(model, strict_mode=True)
        return []
    except Exception:
        pass
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for vi in probe.graph.output:
        rank = _declared_rank(vi)
        if rank:
            _set_dims(vi, [batch] + [None] * (rank - 1))
    del probe.graph.value_info[:]
    try:
        inferred = shape_inference.infer_shapes(probe, strict_mode=True)
    except Exception:
        return []  # not a declaration problem: the checker's message stands
    notes = []
    found = {vi.name: vi for vi in inferred.graph.output}
    for vi in model.graph.output:
        new = found.get(vi.name)
        if new is None or not new.type.HasField("tensor_type") or not new.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in new.type.tensor_type.shape.dim]
        old = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]
        if dims[1:] != old[1:]:
            dims[0] = batch if dims else batch
            _set_dims(vi, dims)
            notes.append(f"output {vi.name}: skl2onnx declared shape {old}, the graph computes {dims}; "
                         "the declaration was corrected (validation in ONNX Runtime checks the values)")
    if model.graph.value_info:
        # Inference succeeds without them: skl2onnx's hints for inner tensors contradict
        # the graph (OneVsOneClassifier declares ArgMax's [N, 1] result as [N]).
        del model.graph.value_info[:]
        if not notes:
            notes.append("skl2onnx's shape hints for inner tensors contradict the graph and were dropped "
                         "(validation in ONNX Runtime checks the values)")
    return notes


# ---------------------------------------------------------------- plausible random rows


def first_step(est: Any) -> Any:
    while hasattr(est, "steps"):
        est = est.steps[0][1]
    return est


def plausible_rows(est: Any, n_features: int, batch: int, seed: int) -> tuple[np.ndarray, str] | None:
    """Random rows the estimator accepts, where standard-normal rows are invalid for it, with
    a label saying how they were drawn; None where standard-normal rows are fine.

    Encoders refuse values outside their fitted categories, CategoricalNB refuses
    non-integer or negative codes, and radius neighbours find no neighbour for a point far
    from every training row: each is given values from what the fit stored."""
    first = first_step(est)
    rng = np.random.default_rng(seed)
    categories = getattr(first, "categories_", None)
    if categories is not None and len(categories) == n_features and all(
        np.asarray(c).dtype.kind in "fiub" for c in categories
    ):
        cols = [rng.choice(np.asarray(c, dtype=np.float64)[~np.isnan(np.asarray(c, dtype=np.float64))], size=batch)
                for c in categories]
        return np.stack(cols, axis=1).astype(np.float32), "random rows from the fitted categories"
    counts = getattr(first, "n_categories_", None)
    if counts is not None and len(counts) == n_features:
        cols = [rng.integers(0, max(int(k), 1), size=batch) for k in counts]
        return np.stack(cols, axis=1).astype(np.float32), "random category codes within the fitted counts"
    fit_x = getattr(first, "_fit_X", None)
    if hasattr(first, "radius") and isinstance(fit_x, np.ndarray) and fit_x.ndim == 2 and fit_x.shape[1] == n_features:
        rows = rng.integers(0, len(fit_x), size=batch)
        return fit_x[rows].astype(np.float32), "random training rows stored by the model (radius neighbours)"
    return None


def selects_columns_by_name(est: Any) -> bool:
    """Whether a ColumnTransformer in ``est`` picks columns by name (or by a callable), so its
    input must be a table; integer, slice and boolean selectors work on a plain matrix."""
    from sklearn.compose import ColumnTransformer

    parts = [est] + [v for v in _params(est).values() if hasattr(v, "fit")]
    for part in parts:
        if not isinstance(part, ColumnTransformer):
            continue
        for _, _, columns in getattr(part, "transformers_", part.transformers):
            if isinstance(columns, (int, np.integer, slice)):
                continue
            values = np.asarray(columns)
            if not callable(columns) and values.size == 0:
                continue
            if callable(columns) or values.dtype.kind not in "iub":
                return True
    return False


def _params(est: Any) -> dict[str, Any]:
    try:
        return est.get_params(deep=True)
    except Exception:
        return {}


def is_selector(est: Any) -> bool:
    """A feature selector (RFE, SelectFromModel...) exports its transform, whatever its
    wrapped estimator makes ``is_classifier`` and ``hasattr(predict)`` say."""
    from sklearn.feature_selection import SelectorMixin

    return isinstance(final_estimator(est), SelectorMixin)


def fitted_float_dtype(est: Any) -> np.dtype | None:
    """The float dtype k-means' Cython code needs the rows in: that of its centres (float64
    when fitted on float64 data, float32 for float32 data; transformers before it keep the
    dtype they are given). None for other estimators, which convert rows themselves."""
    centres = getattr(final_estimator(est), "cluster_centers_", None)
    return centres.dtype if isinstance(centres, np.ndarray) and centres.dtype.kind == "f" else None
