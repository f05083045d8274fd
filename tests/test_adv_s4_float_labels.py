"""A scikit-learn classifier fitted on float class labels (y = 3.0 / 7.0 / -2.0, as a pandas
column of floats gives them): skl2onnx writes them as int64, and the export is correct. The
source's labels were compared as text ("3.0" vs "3"): 0% agreement, a correct export FAILED."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
sio = pytest.importorskip("skops.io")


@pytest.mark.parametrize("classes", [(0.0, 1.0, 2.0), (3.0, 7.0, -2.0)])
def test_float_class_labels_export_and_agree(cli, tmp_path, classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    y = np.array(classes)[rng.integers(0, 3, 120)]
    src = tmp_path / "clf.skops"
    sio.dump(LogisticRegression().fit(X, y), src)
    out = tmp_path / "clf.onnx"
    r = cli("export", src, "-o", out, "--json")
    assert r.code == 0, r
    label = next(o for o in r.json["validation"]["outputs"] if o["name"] == "label")
    assert label["kind"] == "label" and label["label_agreement"] == 1.0, label
    assert not any("dtype differs" in p for p in label["problems"])


def test_wrong_float_labels_still_fail(cli, tmp_path):
    # The comparison is by value: an ONNX label off by one class is still caught.
    import onnx
    from onnx import numpy_helper
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    y = np.array([3.0, 7.0, -2.0])[rng.integers(0, 3, 120)]
    src = tmp_path / "clf.skops"
    sio.dump(LogisticRegression().fit(X, y), src)
    good = tmp_path / "clf.onnx"
    assert cli("export", src, "-o", good, "-q").code == 0
    model = onnx.load(good)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_ints":
                attr.ints[:] = [c + 1 for c in attr.ints]
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    r = cli("validate", src, bad, "--json")
    assert r.code == 1, r
    label = next(o for o in r.json["outputs"] if o["name"] == "label")
    assert not label["passed"] and label["label_agreement"] < 0.5
