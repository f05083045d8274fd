"""Hugging Face folders attacked as a new user and as an attacker would: hostile files,
odd architectures, verdicts that must not be false, and the chain on every task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_hf_folders import snapshot, tiny_bert, tiny_llama

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("adv") / "bert")


@pytest.fixture
def folder(bert, tmp_path):
    dest = tmp_path / "src"
    shutil.copytree(bert, dest)
    return dest


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def _refused(cli, src, tmp_path, *extra, code, message, command="export"):
    before = snapshot(src)
    out = tmp_path / "out"
    r = cli(command, src, "-o", out, *extra)
    assert r.code == code, r
    assert r.stderr.startswith("Error: ") and message in r.stderr, r
    assert "Traceback" not in r.stderr
    assert not out.exists() and _leftovers(tmp_path) == []
    assert snapshot(src) == before
    return r


def test_source_input_specs_are_numpy_dtypes_for_the_timing_core(bert, tmp_path):
    # The bench core reads spec.dtype.kind; a string dtype crashed `pipeline` with vs_source.
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.hf_fw import load
    from onnxkit.runtime.bench import _source_feeds

    for src in (bert, tiny_llama(tmp_path / "llama")):
        model = load(src, LoadOptions())
        assert all(isinstance(s.dtype, np.dtype) for s in model.input_specs), model.input_specs
        feeds = {s.name: np.zeros([1 if isinstance(d, str) else d for d in s.shape], s.dtype) for s in model.input_specs}
        assert set(_source_feeds(feeds, model)) == set(feeds)
