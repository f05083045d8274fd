"""A negative seed is a usage error at parse time (exit 2, one line), not a ValueError from
NumPy in the middle of a run (exit 70)."""

from __future__ import annotations

import pytest

from tests.conftest import make_linear_onnx


@pytest.mark.parametrize("cmd", [["run", "{m}"], ["validate", "{m}", "{m}"], ["bench", "{m}"],
                                 ["export", "{m}", "-o", "{out}"], ["quantize", "{m}", "-o", "{out}"]])
def test_negative_seed_is_refused_before_any_work(cli, tmp_path, cmd):
    m = make_linear_onnx(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    before = m.read_bytes()
    r = cli(*[a.format(m=m, out=out) for a in cmd], "--seed", "-1")
    assert r.code == 2, r
    assert r.stderr.strip() == "Error: --seed -1 must be a non-negative integer", r
    assert not out.exists() and m.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_negative_seed_in_a_pipeline_config_names_key_and_line(cli, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[source]\npath = "m.onnx"\n\n[validate]\nseed = -1\n')
    r = cli("pipeline", cfg)
    assert r.code == 2, r
    assert "bad.toml:5: validate.seed = -1 must be at least 0" in r.stderr, r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]
