"""validate HF_FOLDER OUT/: tokenized text, padding exercised, padded positions never decide."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from test_hf_folders import snapshot, tiny_bert

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A token-classification folder and its export (token-level logits: the masked case)."""
    from conftest import run_cli

    base = tmp_path_factory.mktemp("hfv")
    src = tiny_bert(base / "src", head="BertForTokenClassification")
    out = base / "out"
    r = run_cli("export", src, "-o", out, "--no-validate")
    assert r.code == 0, r
    return src, out


def test_validate_folder_against_its_export(cli, exported):
    src, out = exported
    before = snapshot(out)
    r = cli("validate", src, out, "--text", "hello", "--text", "a longer sentence, padded against the first", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["samples"] == 3  # both texts padded together, then the shortest alone
    assert [o["name"] for o in doc["outputs"]] == ["logits"]
    assert any("attention_mask is 1" in n for n in doc["notes"])
    assert snapshot(out) == before


def test_tampered_weights_fail_validation(cli, exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    src, out = exported
    model = onnx.load(str(out / "model.onnx"))
    # A feed-forward weight of the tiny BERT (hidden 32 -> intermediate 64), perturbed at random:
    # a constant shift could vanish in the next LayerNorm.
    big = next(t for t in model.graph.initializer if list(t.dims) == [32, 64])
    arr = numpy_helper.to_array(big) + np.random.default_rng(0).normal(0, 0.5, size=tuple(big.dims)).astype(np.float32)
    big.CopyFrom(numpy_helper.from_array(arr, big.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    r = cli("validate", src, bad, "--json")
    assert r.code == 1, r
    assert r.json["passed"] is False


def test_padding_differences_do_not_decide_but_token_differences_do():
    from onnxkit.foundation.compare import Tolerance, compare_once
    from onnxkit.operations.hf_validate import masked

    feeds = {"attention_mask": np.array([[1, 1, 1], [1, 0, 0]], dtype=np.int64)}
    ref = np.zeros((2, 3, 4), dtype=np.float32)
    at_padding = ref.copy()
    at_padding[1, 2] = 7.0
    at_token = ref.copy()
    at_token[1, 0] = 7.0

    def run(ref_out, cand_out):
        r = masked(lambda f: {"logits": ref_out}, ("logits",))(feeds)
        c = masked(lambda f: {"logits": cand_out}, ("logits",))(feeds)
        return compare_once(r, c, Tolerance())[0].passed

    assert run(ref, at_padding) is True
    assert run(ref, at_token) is False
    # The same difference in an output that is not token-level is never masked.
    r = masked(lambda f: {"pooled": at_padding}, ("logits",))(feeds)
    assert compare_once({"pooled": ref}, r, Tolerance())[0].passed is False


@pytest.mark.parametrize("flag", [["--data", "x.npz"], ["--edge-cases"], ["--samples", "4"]])
def test_flags_that_do_not_apply_to_a_folder(cli, exported, tmp_path, flag):
    src, out = exported
    r = cli("validate", src, out, *flag)
    assert r.code == 2 and "does not apply to a Hugging Face folder" in r.stderr, r


def test_model_folder_without_model_onnx(cli, exported, tmp_path):
    src, _ = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("validate", src, empty)
    assert r.code == 2 and "holds no model.onnx" in r.stderr, r


def test_text_on_a_non_hf_source_is_usage_error(cli, linear_onnx):
    r = cli("validate", linear_onnx, linear_onnx, "--text", "hello")
    assert r.code == 2 and "--task, --text and --generate apply to a Hugging Face" in r.stderr, r


def test_unsafe_source_folder_is_refused_in_validate(cli, exported, tmp_path):
    src, out = exported
    evil = tmp_path / "evil"
    shutil.copytree(src, evil)
    (evil / "modeling_x.py").write_text("raise SystemExit('ran')\n")
    r = cli("validate", evil, out)
    assert r.code == 5 and "modeling_x.py" in r.stderr, r
