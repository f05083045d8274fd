"""scikit-learn estimators the coverage zoo found onnxkit behind skl2onnx on: each exports and
passes (or fails cleanly, with the reason) on models built here, not the zoo's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sio = pytest.importorskip("skops.io")


def _codes(n=80, cols=3, seed=3):
    return np.random.default_rng(seed).integers(0, 4, size=(n, cols)).astype(np.float64)


def _save(est, path, X, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y) if y is not None else est.fit(X)
    sio.dump(est, path)
    return path


def _export(cli, src, out):
    r = cli("export", src, "-o", out, "--json")
    return r


def test_ordinal_encoder_is_validated_on_its_own_categories(cli, tmp_path):
    from sklearn.preprocessing import OrdinalEncoder

    src = _save(OrdinalEncoder(), tmp_path / "enc.skops", _codes() * 2.5)
    r = _export(cli, src, tmp_path / "enc.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True
    assert any("fitted categories" in n for n in r.json["notes"])


def test_categorical_nb_is_validated_on_valid_codes(cli, tmp_path):
    from sklearn.naive_bayes import CategoricalNB

    X = _codes()
    src = _save(CategoricalNB(), tmp_path / "cnb.skops", X, (X.sum(1) > 4).astype(int))
    r = _export(cli, src, tmp_path / "cnb.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True


def test_radius_neighbors_rows_come_from_the_training_set():
    # Standard-normal rows far from every training row have no neighbour: scikit-learn
    # raises. Rows drawn from the stored training set always have one (themselves).
    from sklearn.datasets import load_wine
    from sklearn.neighbors import RadiusNeighborsClassifier

    from onnxkit.frameworks.sklearn_fixes import plausible_rows

    X, y = load_wine(return_X_y=True)
    est = RadiusNeighborsClassifier(radius=5.0).fit(X, y)
    with pytest.raises(ValueError, match="No neighbors"):
        est.predict(np.random.default_rng(0).standard_normal((8, X.shape[1])))
    rows, how = plausible_rows(est, X.shape[1], 8, seed=0)
    assert rows.shape == (8, X.shape[1]) and "training rows" in how
    est.predict(rows.astype(np.float64))


def test_multi_output_classifier_probabilities_are_one_tensor(cli, tmp_path):
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    X, y = load_wine(return_X_y=True)
    Y = np.column_stack([y, (X[:, 0] > 13).astype(int)])
    src = _save(MultiOutputClassifier(LogisticRegression(max_iter=300)), tmp_path / "moc.skops", X, Y)
    r = _export(cli, src, tmp_path / "moc.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True
    shapes = {o["name"]: o["shape"] for o in r.json["outputs"]}
    assert shapes["label"] == ["batch", 2]
    assert any("concatenated" in n for n in r.json["notes"])


@pytest.mark.parametrize("kind", ["rfe", "select_from_model"])
def test_feature_selectors_compare_their_transform(cli, tmp_path, kind):
    from sklearn.datasets import load_wine
    from sklearn.feature_selection import RFE, SelectFromModel
    from sklearn.linear_model import LogisticRegression

    X, y = load_wine(return_X_y=True)
    clf = LogisticRegression(max_iter=300)
    est = RFE(clf, n_features_to_select=4) if kind == "rfe" else SelectFromModel(clf)
    src = _save(est, tmp_path / "sel.skops", X, y)
    r = _export(cli, src, tmp_path / "sel.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True and [o["name"] for o in r.json["outputs"]] == ["variable"]


def test_one_vs_one_label_shape_is_repaired_not_failed(cli, tmp_path):
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsOneClassifier

    X, y = load_wine(return_X_y=True)
    src = _save(OneVsOneClassifier(LogisticRegression(max_iter=300)), tmp_path / "ovo.skops", X, y)
    r = _export(cli, src, tmp_path / "ovo.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True and r.json["checker_problems"] == []
    assert {o["name"]: o["shape"] for o in r.json["outputs"]}["label"] == ["batch"]


def test_column_transformer_with_integer_columns_takes_a_matrix(cli, tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    X, y = load_wine(return_X_y=True)
    ct = ColumnTransformer([("a", StandardScaler(), slice(0, 5)), ("b", MinMaxScaler(), [5, 6, 7])], remainder="passthrough")
    src = _save(make_pipeline(ct, LogisticRegression(max_iter=500)), tmp_path / "ct.skops", X, y)
    r = _export(cli, src, tmp_path / "ct.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True


def test_column_transformer_by_name_still_asks_for_column_types(cli, tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import StandardScaler

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 7.0]})
    src = _save(ColumnTransformer([("s", StandardScaler(), ["a"])]), tmp_path / "named.skops", frame)
    before = src.read_bytes()
    out = tmp_path / "named.onnx"
    r = cli("export", src, "-o", out)
    assert r.code == 2, r
    assert r.stderr.startswith("Error: ") and "selects table columns by name" in r.stderr
    assert not out.exists() and src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.skops"]


def test_kmeans_fitted_in_float64_exports(cli, tmp_path):
    from sklearn.cluster import KMeans

    X = np.random.default_rng(0).standard_normal((60, 5))
    src = _save(KMeans(n_clusters=4, n_init=2, random_state=0), tmp_path / "km.skops", X)
    r = _export(cli, src, tmp_path / "km.onnx")
    assert r.code == 0, r
    assert r.json["passed"] is True
