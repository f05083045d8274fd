"""Tabular sources (scikit-learn, XGBoost, LightGBM): export, run in ONNX Runtime, compare
with the native model on real data-set rows; refusals of unsafe and corrupt files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from onnxkit.foundation.compare import compare_once
from onnxkit.errors import InputError, UnsafeInput, UsageError
from onnxkit.frameworks.base import LoadOptions

pytest.importorskip("skl2onnx")
pytest.importorskip("onnxmltools")

from fixtures.tabular_models import TRAINED_ON, build_all, dataset, mixed_frame  # noqa: E402

BATCHES = (1, 37)
SKLEARN = ["logreg_pipeline", "random_forest", "svc", "knn", "hist_gb_classifier", "imputer_pipeline",
           "gb_regressor", "hist_gb_regressor", "ridge_pipeline"]
# One LightGBM load costs a child process (crash containment); keep the count small.
BOOSTERS = ["xgb_classifier", "xgb_multiclass", "xgb_regressor", "lgb_classifier"]
CLASSIFIERS = {"logreg_pipeline", "random_forest", "svc", "knn", "hist_gb_classifier", "imputer_pipeline",
               "xgb_classifier", "xgb_multiclass", "lgb_classifier"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("tabular"))


def _load(path: Path, **kw):
    from onnxkit.frameworks.registry import load_source

    return load_source(path, LoadOptions(**kw))


def _check_against_native(src, model, feeds_list) -> None:
    from onnxkit.runtime.session import make_session

    sess = make_session(model)
    assert [s.name for s in sess.input_specs] == [s.name for s in src.input_specs]
    for feeds in feeds_list:
        ref = src.predict(feeds)
        cand = sess.run(feeds)
        assert list(ref) == sess.output_names
        for out in compare_once(ref, cand):
            assert out.passed, (out.name, out.problems, out.max_abs)
            if out.name in src.label_outputs:
                assert out.label_agreement == 1.0
                assert out.max_abs == 0.0


def _rows(name: str, n: int) -> np.ndarray:
    X, _ = dataset(TRAINED_ON[name])
    # Spread the rows over the data set so every class shows up.
    idx = np.linspace(0, len(X) - 1, n).astype(int)
    return X[idx].astype(np.float32)


@pytest.mark.parametrize("name", SKLEARN + BOOSTERS)
def test_export_matches_native_model(models, name):
    src = _load(models[name])
    outcome = src.export(LoadOptions())
    spec = src.input_specs[0]
    assert spec.name == "input" and spec.dtype == np.float32 and spec.shape[0] == "batch"
    assert spec.shape[1] == _rows(name, 1).shape[1]
    if name in CLASSIFIERS:
        assert src.label_outputs == ("label",)
        assert [o.name for o in outcome.model.graph.output] == ["label", "probabilities"]
    else:
        assert [o.name for o in outcome.model.graph.output] == ["variable"]
    assert outcome.opset and outcome.notes
    _check_against_native(src, outcome.model, [{spec.name: _rows(name, b)} for b in BATCHES])


def test_hist_gradient_boosting_handles_nan_like_sklearn(models):
    src = _load(models["hist_gb_classifier"], trust=True)
    assert src.accepts_nan
    X = _rows("hist_gb_classifier", 60)
    X[::2, 0] = np.nan  # a column trained with gaps
    X[::3, 5] = np.nan  # a column trained without: NaN follows scikit-learn's default branch
    assert np.isnan(X).any()
    _check_against_native(src, src.export(LoadOptions()).model, [{"input": X}])


def test_user_input_name_is_kept(models):
    from onnxkit.foundation.spec import parse_specs

    opts = LoadOptions(inputs=parse_specs(["features:[n,4]:float32"]))
    src = _load(models["knn"], trust=True, inputs=opts.inputs)
    assert str(src.input_specs[0]) == "features:[n,4]:float32"
    model = src.export(opts).model
    assert model.graph.input[0].name == "features"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"
    with pytest.raises(UsageError, match=r"\[batch,4\]"):
        _load(models["knn"], trust=True, inputs=parse_specs(["features:[n,5]:float32"]))


def test_column_transformer_takes_one_input_per_column(models, tmp_path):
    from onnxkit.foundation.data import open_data

    sample = models["column_transformer_sample"]
    src = _load(models["column_transformer"], sample=sample)
    specs = {s.name: s for s in src.input_specs}
    assert list(specs) == ["sepal_length", "sepal_width", "petal_width", "size"]
    assert specs["sepal_length"].dtype == np.float32 and specs["sepal_length"].shape == ("batch", 1)
    assert specs["size"].dtype.kind == "U"
    model = src.export(LoadOptions(sample=sample)).model
    # The CSV loader of onnxkit feeds these inputs by column name.
    batches = list(open_data(sample, src.input_specs).batches(20))
    assert len(batches) >= 2
    frame, _ = mixed_frame()
    frame.iloc[1::2].to_csv(tmp_path / "rows.csv", index=False)
    batches += list(open_data(tmp_path / "rows.csv", src.input_specs).batches(75))
    _check_against_native(src, model, batches)


def test_column_transformer_without_sample_asks_for_one(models):
    with pytest.raises(UsageError, match="column") as err:
        _load(models["column_transformer"])
    assert "--sample" in (err.value.hint or "")


class _Payload:
    """A pickle whose loading would create a marker file (a stand-in for running code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_joblib_refused_without_trust_and_nothing_runs(models, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.joblib"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UnsafeInput) as err:
        _load(evil)
    assert "unpickling runs code" in err.value.message
    assert "skops.io.dump" in (err.value.hint or "")
    assert not marker.exists()
    with pytest.raises(UnsafeInput):
        _load(models["random_forest_joblib"])
    # With --trust the real joblib model loads and exports like its skops twin.
    src = _load(models["random_forest_joblib"], trust=True)
    _check_against_native(src, src.export(LoadOptions()).model, [{"input": _rows("random_forest", 10)}])


class ShadyScaler:
    """A type from outside scikit-learn: skops cannot know what loading it would run."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_skops_untrusted_types_are_listed(tmp_path):
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = load_iris(return_X_y=True)
    path = tmp_path / "shady.skops"
    sio.dump(make_pipeline(ShadyScaler(), LogisticRegression(max_iter=300)).fit(X, y), path)
    with pytest.raises(UnsafeInput) as err:
        _load(path)
    assert err.value.exit_code == 5
    assert "ShadyScaler" in err.value.message and "--trust" in err.value.message


def test_sklearn_tree_structures_load_without_trust(models):
    # skops flags sklearn.tree._tree.Tree; it is rebuilt from arrays, so no --trust is needed.
    src = _load(models["random_forest"])
    assert src.framework == "sklearn"


def test_truncated_files_are_input_errors(models, tmp_path):
    text = models["lgb_classifier"].read_bytes()
    cut = tmp_path / "cut.txt"
    cut.write_bytes(text[: len(text) // 3])
    with pytest.raises(InputError, match="cut.txt"):
        _load(cut)
    broken = tmp_path / "cut.skops"
    broken.write_bytes(models["logreg_pipeline"].read_bytes()[:500])
    with pytest.raises(InputError, match="cut.skops"):
        _load(broken)
    xgb_cut = tmp_path / "cut.json"
    xgb_cut.write_bytes(models["xgb_regressor"].read_bytes()[:2000])
    with pytest.raises(InputError, match="cut.json"):
        _load(xgb_cut)


def test_xgboost_opset_above_converter_limit_is_upgraded(models):
    src = _load(models["xgb_regressor"])
    outcome = src.export(LoadOptions(opset=17))
    assert outcome.opset == 17
    assert any(o.domain == "" and o.version == 17 for o in outcome.model.opset_import)
    _check_against_native(src, outcome.model, [{"input": _rows("xgb_regressor", 8)}])


# ---------------------------------------------------------------- CLI

def _has_export_cli() -> bool:
    from pathlib import Path as _P

    return (_P(__file__).parents[1] / "onnxkit" / "cli" / "export_cmd.py").exists()


@pytest.mark.skipif(not _has_export_cli(), reason="onnxkit export not present")
def test_cli_export_skops_and_refuse_joblib(cli, models, tmp_path):
    out = tmp_path / "rf.onnx"
    r = cli("export", models["random_forest"], "-o", out, "--trust", "--json")
    assert r.code == 0, r
    assert out.exists() and r.json["framework"] == "sklearn" and r.json["passed"] is True
    refused = tmp_path / "refused.onnx"
    r = cli("export", models["random_forest_joblib"], "-o", refused, "--json")
    assert r.code == 5, r
    assert "unpickling runs code" in r.stderr
    assert not refused.exists()
    out = tmp_path / "xgb.onnx"
    r = cli("export", models["xgb_classifier"], "-o", out, "--json")
    assert r.code == 0, r
    assert [o["name"] for o in r.json["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("name", ["random_forest", "logreg_pipeline", "hist_gb_classifier", "knn"])
def test_source_labels_equal_native_predict(models, name):
    """The source computes labels from predict_proba once; they must be predict()'s labels."""
    src = _load(models[name])
    X = _rows(name, 60)
    out = src.predict({src.input_specs[0].name: X})
    np.testing.assert_array_equal(out["label"], src.estimator.predict(X))


@pytest.mark.skipif(not _has_export_cli(), reason="onnxkit export not present")
def test_zipmap_export_validates_and_runs_as_probability_columns(cli, models, tmp_path):
    """--zipmap keeps skl2onnx's list-of-maps output; validation and every consumer read it as
    [rows, classes] in scikit-learn's classes_ order."""
    import onnx

    from onnxkit.runtime.session import make_session

    out = tmp_path / "zipmap.onnx"
    r = cli("export", models["logreg_pipeline"], "-o", out, "--zipmap", "--json")
    assert r.code == 0, r
    assert r.json["passed"] is True
    assert "ZipMap" in {n.op_type for n in onnx.load(str(out)).graph.node}
    src = _load(models["logreg_pipeline"])
    X = _rows("logreg_pipeline", 25)
    sess = make_session(out)
    assert sess.output_names == ["label", "probabilities"]  # the same names as without ZipMap
    probs = sess.run({src.input_specs[0].name: X})["probabilities"]
    assert isinstance(probs, np.ndarray) and probs.shape == (25, len(src.estimator.classes_))
    np.testing.assert_allclose(probs, src.estimator.predict_proba(X), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not _has_export_cli(), reason="onnxkit export not present")
def test_output_names_on_a_sklearn_source_is_usage_error(cli, models, tmp_path):
    out = tmp_path / "named.onnx"
    r = cli("export", models["logreg_pipeline"], "-o", out, "--output-names", "a,b")
    assert r.code == 2, r
    assert "--output-names applies to PyTorch sources" in r.stderr and "label, probabilities" in r.stderr
    assert not out.exists()
