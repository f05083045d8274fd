"""Every scikit-learn estimator that skl2onnx has a converter for, fitted on a small bundled
data set (no downloads) and saved with skops, as a user hands it to onnxkit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from scripts.zoo.common import SEED, Case

FAMILY = "sklearn"
FAST = ["LogisticRegression", "RandomForestRegressor", "KMeans"]

# Estimators whose input is text or dicts, or whose output is a target encoding: onnxkit's
# tabular route takes numeric feature matrices, so they are listed as skipped with this reason.
SKIPPED = {
    "CountVectorizer": "text input", "TfidfVectorizer": "text input", "DictVectorizer": "dict input",
    "FeatureHasher": "dict/text input", "LabelEncoder": "encodes targets, not features",
    "LabelBinarizer": "encodes targets, not features",
    "KernelCenterer": "takes a kernel matrix (rows x training rows), not features",
}


# Where skl2onnx converts many estimators with one converter (two dozen linear regressors
# share SklearnLinearRegressor), these stand for the rest: the full run stays under 25 minutes
# on a shared two-core machine. Every other converter gets all its estimators.
REPRESENTATIVES = {
    "SklearnLinearRegressor": ["LinearRegression", "Ridge", "MultiTaskLasso", "QuantileRegressor"],
    "SklearnLinearClassifier": ["LogisticRegression", "LinearDiscriminantAnalysis", "RidgeClassifier"],
    "SklearnSGDClassifier": ["SGDClassifier"],
}
# Variants whose converter differs from a sibling's only in a detail the sibling exercises.
SIBLINGS = {
    "ExtraTreeClassifier": "DecisionTreeClassifier", "ExtraTreeRegressor": "DecisionTreeRegressor",
    "NuSVC": "SVC", "NuSVR": "SVR", "MiniBatchKMeans": "KMeans", "BayesianGaussianMixture": "GaussianMixture",
    "SelectFdr": "SelectKBest", "SelectFpr": "SelectKBest", "SelectFwe": "SelectKBest",
    "SelectPercentile": "SelectKBest", "GenericUnivariateSelect": "SelectKBest", "RFECV": "RFE",
    "RadiusNeighborsRegressor": "RadiusNeighborsClassifier",
}


def catalog() -> list[str]:
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.utils import all_estimators

    names = []
    for n, c in all_estimators():
        alias = sklearn_operator_name_map.get(c)
        if alias is not None and n in REPRESENTATIVES.get(alias, [n]) and n not in SIBLINGS:
            names.append(n)
    return sorted(names)


def all_supported() -> list[str]:
    """Every estimator skl2onnx converts, for the coverage page's list of what stood in."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.utils import all_estimators

    return sorted(n for n, c in all_estimators() if c in sklearn_operator_name_map)


def _make(name: str, cls):
    """The estimator with the parameters it needs to be constructed at all (meta-estimators
    need a base estimator) and fitted quickly; defaults everywhere else."""
    from sklearn import linear_model as lm
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    clf, reg = lm.LogisticRegression(max_iter=300), lm.Ridge()
    special = {
        "VotingClassifier": lambda: cls([("lr", clf), ("dt", DecisionTreeClassifier(max_depth=3, random_state=SEED))], voting="soft"),
        "VotingRegressor": lambda: cls([("r", reg), ("dt", DecisionTreeRegressor(max_depth=3, random_state=SEED))]),
        "StackingClassifier": lambda: cls([("lr", clf), ("dt", DecisionTreeClassifier(max_depth=3, random_state=SEED))]),
        "StackingRegressor": lambda: cls([("r", reg), ("dt", DecisionTreeRegressor(max_depth=3, random_state=SEED))]),
        "OneVsRestClassifier": lambda: cls(clf), "OneVsOneClassifier": lambda: cls(clf),
        "MultiOutputClassifier": lambda: cls(clf), "MultiOutputRegressor": lambda: cls(reg),
        "RFE": lambda: cls(clf, n_features_to_select=2), "RFECV": lambda: cls(clf, cv=3),
        "SelectFromModel": lambda: cls(clf), "GridSearchCV": lambda: cls(clf, {"C": [0.1, 1.0]}, cv=3),
        "ColumnTransformer": lambda: cls([("a", StandardScaler(), [0, 1]), ("b", MinMaxScaler(), [2, 3])]),
        "FeatureUnion": lambda: cls([("a", StandardScaler()), ("b", MinMaxScaler())]),
        "Pipeline": lambda: cls([("s", StandardScaler()), ("lr", clf)]),
        "FunctionTransformer": lambda: cls(np.log1p),
        "LocalOutlierFactor": lambda: cls(novelty=True),
        "KNeighborsTransformer": lambda: cls(n_neighbors=3), "NearestNeighbors": lambda: cls(n_neighbors=3),
        "SelectKBest": lambda: cls(k=2), "KBinsDiscretizer": lambda: cls(encode="ordinal"),
        "RadiusNeighborsClassifier": lambda: cls(radius=3.0), "RadiusNeighborsRegressor": lambda: cls(radius=50.0),
        "TunedThresholdClassifierCV": lambda: cls(clf), "CalibratedClassifierCV": lambda: cls(clf, cv=3),
        "KMeans": lambda: cls(n_clusters=3, n_init=2, random_state=SEED),
        "MiniBatchKMeans": lambda: cls(n_clusters=3, n_init=2, random_state=SEED),
        "GaussianMixture": lambda: cls(n_components=3, random_state=SEED),
        "BayesianGaussianMixture": lambda: cls(n_components=3, random_state=SEED),
        "PLSRegression": lambda: cls(n_components=2), "TruncatedSVD": lambda: cls(n_components=2),
        "GaussianRandomProjection": lambda: cls(n_components=3, random_state=SEED),
        "QuantileTransformer": lambda: cls(n_quantiles=50),
        "MLPClassifier": lambda: cls(hidden_layer_sizes=(16,), max_iter=300, random_state=SEED),
        "MLPRegressor": lambda: cls(hidden_layer_sizes=(16,), max_iter=300, random_state=SEED),
    }
    est = special[name]() if name in special else cls()
    if "random_state" in est.get_params() and est.get_params()["random_state"] is None:
        est.set_params(random_state=SEED)
    for key in ("n_estimators", "max_iter"):
        if key in est.get_params() and isinstance(est.get_params()[key], int) and est.get_params()[key] > 30 and name not in ("MLPClassifier", "MLPRegressor", "LogisticRegression"):
            est.set_params(**{key: 20})
    return est


def _data(name: str, est):
    """(X float32-exact, y) suited to the estimator's kind."""
    from sklearn import datasets
    from sklearn.base import is_classifier, is_regressor

    if is_regressor(est) or name in ("PLSRegression",):
        X, y = datasets.load_diabetes(return_X_y=True)
        X, y = X[:200], y[:200]
        if name in ("GammaRegressor", "PoissonRegressor", "TweedieRegressor"):
            y = y / y.mean()
        if name.startswith("MultiTask") or name in ("MultiOutputRegressor", "RegressorChain"):
            y = np.column_stack([y, y[::-1]])
    else:
        X, y = datasets.load_iris(return_X_y=True)
        if name in ("MultiOutputClassifier", "ClassifierChain"):
            y = np.column_stack([y, (X[:, 0] > 5.8).astype(int)])
        if name in ("CategoricalNB",):
            X = np.floor(X)
        if name in ("TunedThresholdClassifierCV",):  # binary only
            y = (y == 2).astype(int)
    # float32 values, so the source and ONNX Runtime see the very same numbers.
    return X.astype(np.float32).astype(np.float64), y


def _outputs(name: str, est, X: np.ndarray) -> list[np.ndarray]:
    from sklearn.base import is_classifier, is_regressor

    if name in ("RFE", "RFECV"):  # a selector that delegates is_classifier to its estimator
        return [est.transform(X)]
    if name in ("NearestNeighbors",):
        dist, idx = est.kneighbors(X)
        return [idx, dist]
    if name == "KNeighborsTransformer":
        return [est.transform(X).toarray()]
    if is_classifier(est):
        second = est.predict_proba(X) if hasattr(est, "predict_proba") else est.decision_function(X)
        if isinstance(second, list):  # multi-output: one array per target
            return [est.predict(X)]
        return [est.predict(X), second]
    if is_regressor(est) or name == "PLSRegression":
        return [est.predict(X)]
    if hasattr(est, "decision_function") and hasattr(est, "predict"):  # outlier detectors
        return [est.predict(X), est.decision_function(X)]
    if hasattr(est, "predict") and hasattr(est, "predict_proba"):  # mixtures
        return [est.predict(X), est.predict_proba(X)]
    if hasattr(est, "predict") and hasattr(est, "transform"):  # k-means
        return [est.predict(X), est.transform(X)]
    out = est.transform(X)
    return [out.toarray() if hasattr(out, "toarray") else out]


def build(name: str, workdir: Path) -> Case:
    import skops.io as sio
    from sklearn.base import is_classifier
    from sklearn.utils import all_estimators

    if name in SKIPPED:
        raise NotImplementedError(f"skipped: {SKIPPED[name]}")
    cls = dict(all_estimators())[name]
    est = _make(name, cls)
    X, y = _data(name, est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    src = workdir / f"{name}.skops"
    sio.dump(est, src)

    def raw_export(out: Path) -> None:
        from skl2onnx import to_onnx

        options = {id(est): {"zipmap": False}} if is_classifier(est) and name not in ("MultiOutputClassifier", "RFE", "RFECV") else None
        try:
            onx = to_onnx(est, X[:1].astype(np.float32), options=options)
        except Exception as exc:
            if options is None or "zipmap" not in str(exc).lower():
                raise
            onx = to_onnx(est, X[:1].astype(np.float32))
        out.write_bytes(onx.SerializeToString())

    def inputs(b: int) -> list[np.ndarray]:
        rng = np.random.default_rng(SEED + b)
        rows = rng.choice(len(X), size=b, replace=False)
        return [X[rows].astype(np.float32)]

    def reference(xs: list[np.ndarray]) -> list[np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _outputs(name, est, xs[0].astype(np.float64))

    case = Case(FAMILY, name, ".skops", [str(src)], raw_export, inputs, reference,
                carries_code=name == "FunctionTransformer")
    if case.carries_code:
        case.notes.append("holds a function (np.log1p): a refusal without --trust would be right; skl2onnx converts only the identity")
    return case
