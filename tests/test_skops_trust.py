"""The skops trust policy: scikit-learn's own fitted state loads without --trust; functions off
the allow-list, foreign types and crafted schemas that would run code are refused (exit 5)
before anything is constructed."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from onnxkit.errors import UnsafeInput
from onnxkit.frameworks import skops_trust
from onnxkit.frameworks.base import LoadOptions

sio = pytest.importorskip("skops.io")


def _load(path: Path, **kw):
    from onnxkit.frameworks.registry import load_source

    return load_source(path, LoadOptions(**kw))


def _iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


def _diabetes():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return X[:150].astype(np.float32), y[:150] / y[:150].mean()


def _estimators():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import StackingClassifier, StackingRegressor, VotingRegressor
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.linear_model import LogisticRegression, Ridge, TweedieRegressor
    from sklearn.model_selection import GridSearchCV, TunedThresholdClassifierCV
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    clf, reg = LogisticRegression(max_iter=300), Ridge()
    return {
        "CalibratedClassifierCV": (CalibratedClassifierCV(clf, cv=3), "clf"),
        "GaussianProcessRegressor": (GaussianProcessRegressor(), "reg"),
        "GridSearchCV": (GridSearchCV(clf, {"C": [0.1, 1.0]}, cv=3), "clf"),
        "MLPClassifier": (MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0), "clf"),
        "MLPRegressor": (MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0), "reg"),
        "SelectKBest": (SelectKBest(f_classif, k=2), "clf"),
        "StackingClassifier": (StackingClassifier([("lr", clf), ("dt", DecisionTreeClassifier(max_depth=2))]), "clf"),
        "StackingRegressor": (StackingRegressor([("r", reg), ("dt", DecisionTreeRegressor(max_depth=2))]), "reg"),
        "VotingRegressor": (VotingRegressor([("r", reg), ("dt", DecisionTreeRegressor(max_depth=2))]), "reg"),
        "TunedThresholdClassifierCV": (TunedThresholdClassifierCV(clf, cv=3), "binary"),
        "TweedieRegressor": (TweedieRegressor(), "reg"),
    }


@pytest.mark.parametrize("name", sorted(_estimators()))
def test_scikit_learn_own_types_load_without_trust(name, tmp_path):
    est, kind = _estimators()[name]
    X, y = _diabetes() if kind == "reg" else _iris()
    if kind == "binary":
        y = (y == 2).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    path = tmp_path / f"{name}.skops"
    sio.dump(est, path)
    assert sio.get_untrusted_types(file=path), "the case must exercise the policy, not skops' defaults"
    src = _load(path)
    assert src.framework == "sklearn"


def test_cli_exports_an_mlp_without_trust(cli, tmp_path):
    from sklearn.neural_network import MLPClassifier

    X, y = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(X, y)
    path = tmp_path / "mlp.skops"
    sio.dump(est, path)
    out = tmp_path / "mlp.onnx"
    r = cli("export", path, "-o", out, "--json")
    assert r.code == 0, r
    assert r.json["passed"] is True and out.exists()


# ------------------------------------------------------------------ hostile files

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _assert_refused(cli, path: Path, needle: str) -> None:
    folder = path.parent
    before = _snapshot(folder)
    out = folder / "out.onnx"
    r = cli("export", path, "-o", out)
    assert r.code == 5, r
    assert r.stderr.startswith("Error: ") and needle in r.stderr and "--trust" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert _snapshot(folder) == before  # input unchanged, nothing left behind


@pytest.mark.parametrize("func, needle", [(os.system, "system"), (eval, "builtins.eval")])
def test_function_transformer_with_code_is_refused(cli, tmp_path, func, needle):
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "ft.skops"
    sio.dump(FunctionTransformer(func=func), path)
    _assert_refused(cli, path, needle)


def test_function_transformer_with_partial_is_refused(tmp_path):
    import functools

    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "ft.skops"
    sio.dump(FunctionTransformer(func=functools.partial(os.system, "true")), path)
    with pytest.raises(UnsafeInput) as err:
        _load(path)
    assert err.value.exit_code == 5 and "partial" in err.value.message


def test_function_transformer_with_an_unlisted_sklearn_function_is_refused(tmp_path):
    # An sklearn function, but not a score function: it could write files or fetch data.
    from sklearn.datasets import dump_svmlight_file
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "ft.skops"
    sio.dump(FunctionTransformer(func=dump_svmlight_file), path)
    with pytest.raises(UnsafeInput, match="dump_svmlight_file"):
        _load(path)


class MarkerOnLoad:
    """A type from outside the trusted packages whose state restore writes a file."""

    marker: str = ""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X

    def __setstate__(self, state):
        Path(state["marker"]).write_text("ran")
        self.__dict__.update(state)


def test_type_from_an_arbitrary_module_is_refused_and_not_run(cli, tmp_path):
    src_dir, work = tmp_path / "src", tmp_path / "work"
    src_dir.mkdir(), work.mkdir()
    marker = tmp_path / "marker"
    obj = MarkerOnLoad()
    obj.marker = str(marker)
    path = work / "shady.skops"
    sio.dump(obj, path)
    _assert_refused(cli, path, "MarkerOnLoad")
    assert not marker.exists()
    # The test can fail: skops, told to trust the type, runs its __setstate__.
    sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert marker.exists()


def _craft_popen(path: Path, marker: Path) -> None:
    """A decision tree whose tree_ node is rewritten into subprocess.Popen(['touch', marker])."""
    from sklearn.tree import DecisionTreeRegressor

    sio.dump(DecisionTreeRegressor(max_depth=1).fit(np.eye(3), [1.0, 2.0, 3.0]), path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(files["schema.json"])
    tree = schema["content"]["content"]["tree_"]

    def text(s: str) -> dict:
        return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                "content": json.dumps(s), "is_json": True, "__id__": id(s)}

    # LossNode calls the class the node names with the node's args, which is what makes this live.
    tree.update({"__module__": "subprocess", "__class__": "Popen", "__loader__": "LossNode"})
    tree["__reduce__"]["args"]["content"] = [
        {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
         "content": [text("touch"), text(str(marker))], "__id__": 1}]
    files["schema.json"] = json.dumps(schema).encode()
    path.unlink()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_crafted_schema_naming_popen_is_refused_and_not_run(cli, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "marker"
    path = work / "tree.skops"
    _craft_popen(path, marker)
    _assert_refused(cli, path, "subprocess.Popen")
    import time

    time.sleep(1)  # a started `touch` would have written it by now
    assert not marker.exists()


@pytest.mark.parametrize("name", [
    "builtins.eval", "os.system", "posix.system", "functools.partial", "subprocess.Popen",
    "numpy.memmap", "numpy.load", "numpy.ndarray.tofile", "numpy.lib.npyio.NpzFile",
    "sklearn.utils._testing.TempMemmap", "sklearn.datasets.fetch_openml", "sklearn.metrics.make_scorer",
    "sklearn.utils.parallel.Parallel", "scipy.io.loadmat", "joblib.Memory", "no.such.module.Thing",
])
def test_policy_refuses_code_carriers(name):
    assert not skops_trust.admitted(name)


@pytest.mark.parametrize("name", [
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "sklearn.utils._bunch.Bunch",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.metrics._classification.balanced_accuracy_score", "sklearn.tree._tree.Tree",
    "numpy.dtype", "numpy.random._generator.Generator", "scipy.sparse._csr.csr_matrix",
])
def test_policy_admits_data_types_and_listed_functions(name):
    assert skops_trust.admitted(name)


def test_policy_imports_nothing_outside_the_trusted_packages():
    import sys

    assert "this_module_does_not_exist_xyz" not in sys.modules
    assert not skops_trust.admitted("this_module_does_not_exist_xyz.Foo")
    before = set(sys.modules)
    skops_trust.admitted("http.server.HTTPServer")
    assert not any(m.startswith("http.server") for m in set(sys.modules) - before)


def test_crafted_popen_would_run_if_trusted(tmp_path):
    # Proves the crafted file is live: skops, told to trust everything, runs the command.
    marker = tmp_path / "marker"
    path = tmp_path / "tree.skops"
    _craft_popen(path, marker)
    assert "subprocess.Popen" in sio.get_untrusted_types(file=path)
    import time

    try:  # Popen starts `touch`, then skops fails on the rest of the node: the command runs anyway
        sio.load(path, trusted=sio.get_untrusted_types(file=path))
    except Exception:
        pass
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
