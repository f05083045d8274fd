"""XGBoost and LightGBM objectives, trained on bundled data sets and saved in their own
formats (XGBoost JSON, LightGBM text), the forms a user hands onnxkit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from scripts.zoo.common import SEED, Case

FAMILY = "boosters"
# name -> (library, objective, data set)
OBJECTIVES = {
    "xgb_binary_logistic": ("xgboost", "binary:logistic", "breast_cancer"),
    "xgb_multi_softprob": ("xgboost", "multi:softprob", "iris"),
    "xgb_reg_squarederror": ("xgboost", "reg:squarederror", "diabetes"),
    "xgb_rank_pairwise": ("xgboost", "rank:pairwise", "diabetes"),
    "xgb_count_poisson": ("xgboost", "count:poisson", "diabetes"),
    "lgb_binary": ("lightgbm", "binary", "breast_cancer"),
    "lgb_multiclass": ("lightgbm", "multiclass", "iris"),
    "lgb_regression": ("lightgbm", "regression", "diabetes"),
    "lgb_lambdarank": ("lightgbm", "lambdarank", "diabetes"),
}
FAST = ["xgb_binary_logistic", "lgb_multiclass"]
N_TREES = 20


def catalog() -> list[str]:
    return list(OBJECTIVES)


def _data(name: str):
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return X.astype(np.float32), y


def _fit(lib: str, objective: str, X, y):
    rank = "rank" in objective
    if rank:
        y = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75])).astype(int)
        group = [10] * (len(X) // 10)
        X, y = X[: sum(group)], y[: sum(group)]
    if lib == "xgboost":
        import xgboost as xgb

        kw = dict(n_estimators=N_TREES, max_depth=4, objective=objective, random_state=SEED, n_jobs=1)
        if rank:
            model = xgb.XGBRanker(**kw).fit(X, y, qid=np.repeat(np.arange(len(group)), 10))
        elif objective.startswith(("binary", "multi")):
            model = xgb.XGBClassifier(**kw).fit(X, y)
        else:
            model = xgb.XGBRegressor(**kw).fit(X, y)
    else:
        import lightgbm as lgb

        kw = dict(n_estimators=N_TREES, num_leaves=15, objective=objective, random_state=SEED, n_jobs=1, verbose=-1)
        if rank:
            model = lgb.LGBMRanker(**kw).fit(X, y, group=group)
        elif objective in ("binary", "multiclass"):
            model = lgb.LGBMClassifier(**kw).fit(X, y)
        else:
            model = lgb.LGBMRegressor(**kw).fit(X, y)
    return model, X


def build(name: str, workdir: Path) -> Case:
    from onnxmltools.convert.common.data_types import FloatTensorType

    lib, objective, dataset = OBJECTIVES[name]
    X, y = _data(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, X = _fit(lib, objective, X, y)
    if lib == "xgboost":
        src = workdir / f"{name}.json"
        model.save_model(str(src))
    else:
        src = workdir / f"{name}.txt"
        model.booster_.save_model(str(src))
    is_clf = hasattr(model, "predict_proba")

    def raw_export(out: Path) -> None:
        import onnxmltools

        types = [("input", FloatTensorType([None, X.shape[1]]))]
        if lib == "xgboost":
            onx = onnxmltools.convert_xgboost(model, initial_types=types)
        else:
            onx = onnxmltools.convert_lightgbm(model, initial_types=types, zipmap=False)
        out.write_bytes(onx.SerializeToString())

    def inputs(b: int) -> list[np.ndarray]:
        rows = np.random.default_rng(SEED + b).choice(len(X), size=b, replace=False)
        return [X[rows]]

    def reference(xs: list[np.ndarray]) -> list[np.ndarray]:
        if is_clf:
            return [model.predict(xs[0]), model.predict_proba(xs[0])]
        return [model.predict(xs[0])]

    return Case(FAMILY, name, src.suffix, [str(src)], raw_export, inputs, reference)
