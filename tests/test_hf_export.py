"""onnxkit export on Hugging Face save_pretrained folders: heads, output layout, text-aware
validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_hf_folders import snapshot, tiny_bert

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("hf") / "bert-cls")


def _outputs(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [o.name for o in m.graph.output], [i.name for i in m.graph.input]


def test_classifier_folder_exports_optimum_layout(cli, classifier, tmp_path):
    before = snapshot(classifier)
    out = tmp_path / "out"
    r = cli("export", classifier, "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["passed"] is True
    assert doc["framework"] == "transformers"
    outputs, inputs = _outputs(out / "model.onnx")
    assert outputs == ["logits"]
    assert inputs == ["input_ids", "attention_mask", "token_type_ids"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        assert (out / name).read_bytes() == (classifier / name).read_bytes()
    assert doc["validation"]["samples"] == 6  # the 5 built-in sentences padded together, then the shortest alone
    assert snapshot(classifier) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxkit")]


def test_onnx_logits_match_transformers_on_own_text(cli, classifier, tmp_path):
    import onnxruntime as ort
    import torch
    import transformers

    out = tmp_path / "out"
    texts = ["one", "two words here, and then a much longer tail of words"]
    r = cli("export", classifier, "-o", out, "--text", texts[0], "--text", texts[1], "--json")
    assert r.code == 0, r
    assert r.json["validation"]["samples"] == 3
    tok = transformers.AutoTokenizer.from_pretrained(str(out))  # the copied tokenizer loads from the output
    enc = tok(texts, padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(out / "model.onnx"))
    got = sess.run(["logits"], {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(classifier)).eval()
    with torch.no_grad():
        want = model(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("head,task,outputs", [
    ("BertForTokenClassification", "token-classification", ["logits"]),
    ("BertForMaskedLM", "fill-mask", ["logits"]),
    ("BertForQuestionAnswering", "question-answering", ["start_logits", "end_logits"]),
    ("BertModel", "feature-extraction", ["last_hidden_state"]),
])
def test_heads_inferred_from_architectures(cli, tmp_path, head, task, outputs):
    src = tiny_bert(tmp_path / "src", head=head)
    out = tmp_path / "out"
    r = cli("export", src, "-o", out, "--json")
    assert r.code == 0, r
    assert _outputs(out / "model.onnx")[0] == outputs
    assert any(f"task {task}" in n for n in r.json["notes"])
    # Token-level outputs are compared only where attention_mask is 1.
    assert any("attention_mask is 1" in n for n in r.json["validation"]["notes"])


@pytest.mark.slow
def test_task_flag_picks_the_head(cli, classifier, tmp_path):
    out = tmp_path / "out"
    r = cli("export", classifier, "-o", out, "--task", "feature-extraction", "--json")
    assert r.code == 0, r
    assert _outputs(out / "model.onnx")[0] == ["last_hidden_state"]


def test_out_of_tolerance_exits_1_and_keeps_the_folder(cli, classifier, tmp_path):
    out = tmp_path / "out"
    r = cli("export", classifier, "-o", out, "--tol", "1e-30", "--rtol", "1e-30", "--json")
    assert r.code == 1, r
    assert r.json["passed"] is False
    assert (out / "model.onnx").is_file()


@pytest.mark.slow
def test_reexport_replaces_previous_output_in_place(cli, classifier, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("export", classifier, "-o", out)
    assert r.code == 0, r
    assert (out / "keep.txt").read_text() == "mine"
    assert (out / "model.onnx").is_file()


@pytest.mark.slow
def test_sharded_safetensors_folder(cli, tmp_path):
    import transformers

    src = tiny_bert(tmp_path / "src")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(src))
    (src / "model.safetensors").unlink()
    model.save_pretrained(str(src), max_shard_size="300KB")
    assert (src / "model.safetensors.index.json").is_file()
    r = cli("export", src, "-o", tmp_path / "out", "--json")
    assert r.code == 0, r
    assert r.json["validation"]["passed"] is True
