"""scikit-learn estimators beyond plain classifiers and regressors export and validate
(issue 15, item 3), and the [sklearn] extra installs xgboost without CUDA (item 13)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skl2onnx")
joblib = pytest.importorskip("joblib")

ROOT = Path(__file__).resolve().parents[1]


def _data(n: int = 40):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y_cls = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    y_reg = X @ np.array([1.0, 2.0, -1.0, 0.5])
    return X, y_cls, y_reg


def _fitted(name: str):
    import sklearn.cluster as cluster
    import sklearn.cross_decomposition as xd
    import sklearn.discriminant_analysis as da
    import sklearn.ensemble as ens
    import sklearn.feature_extraction.text as text
    import sklearn.linear_model as lm
    import sklearn.mixture as mixture
    import sklearn.neighbors as nb
    import sklearn.svm as svm
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, yc, yr = _data()
    make = {
        "LinearSVC": lambda: svm.LinearSVC().fit(X, yc),
        "LinearSVC-binary": lambda: svm.LinearSVC().fit(X, yc > 0),
        "LinearSVC-pipeline": lambda: make_pipeline(StandardScaler(), svm.LinearSVC()).fit(X, yc),
        "KMeans-pipeline": lambda: make_pipeline(StandardScaler(), cluster.KMeans(n_clusters=3, n_init=2, random_state=0)).fit(X),
        "SVC-binary": lambda: svm.SVC().fit(X, yc > 0),
        "NuSVC-binary": lambda: svm.NuSVC(nu=0.3).fit(X, yc > 0),
        "RidgeClassifier-binary": lambda: lm.RidgeClassifier().fit(X, yc > 0),
        "KMeans": lambda: cluster.KMeans(n_clusters=3, n_init=2, random_state=0).fit(X),
        "MiniBatchKMeans": lambda: cluster.MiniBatchKMeans(n_clusters=3, n_init=2, random_state=0).fit(X),
        "PLSRegression": lambda: xd.PLSRegression(n_components=2).fit(X, yr),
        "QuadraticDiscriminantAnalysis": lambda: da.QuadraticDiscriminantAnalysis().fit(X, yc),
        "KNeighborsTransformer": lambda: nb.KNeighborsTransformer(n_neighbors=3).fit(X),
        "GaussianMixture": lambda: mixture.GaussianMixture(n_components=2, random_state=0).fit(X),
        "OneClassSVM": lambda: svm.OneClassSVM().fit(X),
        "SGDOneClassSVM": lambda: lm.SGDOneClassSVM(random_state=0).fit(X),
        "IsolationForest": lambda: ens.IsolationForest(n_estimators=10, random_state=0).fit(X),
        "TfidfTransformer": lambda: text.TfidfTransformer().fit(np.abs(X)),
    }
    return make[name]()


@pytest.mark.parametrize("name", [
    "LinearSVC", "LinearSVC-binary", "LinearSVC-pipeline", "SVC-binary", "NuSVC-binary", "RidgeClassifier-binary", "KMeans", "KMeans-pipeline", "MiniBatchKMeans", "PLSRegression", "QuadraticDiscriminantAnalysis",
    "KNeighborsTransformer", "GaussianMixture", "OneClassSVM", "SGDOneClassSVM", "IsolationForest", "TfidfTransformer",
])
def test_estimator_exports_and_validates(cli, tmp_path, name):
    src = tmp_path / f"{name}.joblib"
    joblib.dump(_fitted(name), src)
    out = tmp_path / "m.onnx"
    r = cli("export", src, "-o", out, "--trust", "--json")
    assert r.code == 0, r
    d = r.json
    assert d["checker_ok"] and d["validation"]["passed"]
    assert out.exists()
    # The file also validates on its own against the source (same pairing, same verdict).
    v = cli("validate", src, out, "--trust", "--json")
    assert v.code == 0, v


def test_pls_declared_shape_is_corrected_with_a_note(cli, tmp_path):
    src = tmp_path / "pls.joblib"
    joblib.dump(_fitted("PLSRegression"), src)
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--trust", "--json")
    assert r.code == 0, r
    assert r.json["outputs"][0]["shape"] == ["batch", 1]
    assert any("declared shape" in n and "corrected" in n for n in r.json["notes"])


def test_kmeans_scores_are_compared_with_transform(cli, tmp_path):
    src = tmp_path / "km.joblib"
    joblib.dump(_fitted("KMeans"), src)
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--trust", "--json")
    assert r.code == 0, r
    outs = {o["name"]: o for o in r.json["validation"]["outputs"]}
    assert set(outs) == {"label", "scores"}
    assert outs["label"]["kind"] == "label" and outs["scores"]["ref_shape"][1] == 3  # distances to 3 centres


def _categorical(tmp_path):
    from sklearn.naive_bayes import CategoricalNB

    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, (60, 4)).astype(np.float32)
    src = tmp_path / "cnb.joblib"
    joblib.dump(CategoricalNB().fit(X, (X[:, 0] > 0).astype(int)), src)
    return src, X


def test_categorical_nb_refuses_random_rows_with_exit_2_and_no_file(cli, tmp_path):
    # Behind a scaler, random rows reach CategoricalNB as negative codes: no plausible rows
    # can be drawn for the pipeline's input, so the refusal stands.
    from sklearn.naive_bayes import CategoricalNB
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    X = np.random.default_rng(0).integers(0, 3, (60, 4)).astype(np.float32)
    src = tmp_path / "cnb.joblib"
    joblib.dump(make_pipeline(MinMaxScaler(), CategoricalNB()).fit(X, (X[:, 0] > 0).astype(int)), src)
    out = tmp_path / "m.onnx"
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("export", src, "-o", out, "--trust")
    assert r.code == 2, r
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert "CategoricalNB.predict refused the inputs" in r.stderr and "--data" in r.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before  # no staging leftovers


def test_categorical_nb_validates_on_the_users_rows(cli, tmp_path):
    src, X = _categorical(tmp_path)
    data = tmp_path / "rows.npz"
    np.savez(data, input=X[:20])
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--trust", "--data", data, "--json")
    assert r.code == 0, r
    assert r.json["validation"]["samples"] == 20
    assert any("rows.npz" in s for s in r.json["validation"]["input_sets"])


def test_export_data_with_no_validate_is_usage_error(cli, tmp_path):
    src, X = _categorical(tmp_path)
    data = tmp_path / "rows.npz"
    np.savez(data, input=X[:5])
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--trust", "--data", data, "--no-validate")
    assert r.code == 2 and "--no-validate" in r.stderr, r
    assert not (tmp_path / "m.onnx").exists()


def test_estimator_without_predict_or_transform_says_so(cli, tmp_path):
    from sklearn.neighbors import NearestNeighbors

    X, _, _ = _data()
    src = tmp_path / "nn.joblib"
    joblib.dump(NearestNeighbors().fit(X), src)
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--trust")
    assert r.code == 2, r
    assert "NearestNeighbors, which has neither predict nor transform" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_zipmap_asked_of_a_converter_without_it_is_a_note(cli, tmp_path):
    src = tmp_path / "svc.joblib"
    joblib.dump(_fitted("LinearSVC"), src)
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--trust", "--zipmap", "--json")
    assert r.code == 0, r
    assert any("has no ZipMap" in n for n in r.json["notes"])


# ---------------------------------------------------------------- item 13: xgboost without CUDA


def test_sklearn_extra_uses_xgboost_cpu_on_linux_x86_64():
    packaging = pytest.importorskip("packaging.requirements")
    if sys.version_info < (3, 11):
        pytest.skip("tomllib")
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["sklearn"]
    linux = {"sys_platform": "linux", "platform_machine": "x86_64"}
    mac = {"sys_platform": "darwin", "platform_machine": "arm64"}

    def picked(env):
        out = set()
        for line in extra:
            req = packaging.Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                out.add(req.name)
        return out

    assert "xgboost-cpu" in picked(linux) and "xgboost" not in picked(linux)
    assert "xgboost" in picked(mac) and "xgboost-cpu" not in picked(mac)
    pins = dict(
        line.split("==") for line in (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["xgboost-cpu"] == pins["xgboost"]
