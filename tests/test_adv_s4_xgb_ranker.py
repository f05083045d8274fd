"""An XGBoost ranker (rank:pairwise / rank:ndcg / rank:map) scores with its raw margin, which
onnxmltools' regressor converter computes; it was refused (exit 4, "objective not supported")."""

from __future__ import annotations

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
pytest.importorskip("onnxmltools")


@pytest.mark.parametrize("objective", ["rank:pairwise", "rank:ndcg", "rank:map"])
def test_xgboost_ranker_exports_and_validates(cli, tmp_path, objective):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 2 if objective == "rank:map" else 3, 120)
    src = tmp_path / "ranker.json"
    xgb.XGBRanker(n_estimators=8, max_depth=3, objective=objective).fit(X, y, group=[20] * 6).save_model(src)
    out = tmp_path / "ranker.onnx"
    r = cli("export", src, "-o", out, "--json")
    assert r.code == 0, r
    (score,) = r.json["validation"]["outputs"]
    assert score["passed"] and score["max_abs"] < 1e-5 and score["elements"] > 0, score
    assert out.exists()


def test_unsupported_objective_still_refused(cli, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    src = tmp_path / "surv.json"
    y = np.abs(rng.normal(size=60)) + 0.1
    xgb.XGBRegressor(n_estimators=4, objective="survival:cox").fit(X, y).save_model(src)
    r = cli("export", src, "-o", tmp_path / "surv.onnx")
    assert r.code == 4, r
    assert "survival:cox" in r.stderr and "rank:ndcg" in r.stderr
    assert not (tmp_path / "surv.onnx").exists()
