"""Bad or unsafe Hugging Face folders: message, exit code, nothing written, input unchanged."""

from __future__ import annotations

import json
import shutil

import pytest

from test_hf_folders import snapshot, tiny_bert

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("hf") / "bert")


@pytest.fixture
def folder(good, tmp_path):
    dest = tmp_path / "src"
    shutil.copytree(good, dest)
    return dest


def _refused(cli, src, tmp_path, *extra, code, message):
    before = snapshot(src)
    out = tmp_path / "out"
    r = cli("export", src, "-o", out, *extra)
    assert r.code == code, r
    assert r.stderr.startswith("Error: ") and message in r.stderr, r
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxkit")]
    assert snapshot(src) == before
    return r


def test_auto_map_is_refused_without_trust(cli, folder, tmp_path):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    _refused(cli, folder, tmp_path, code=5, message="auto_map in config.json")


def test_custom_python_file_is_refused_without_trust(cli, folder, tmp_path):
    (folder / "modeling_evil.py").write_text("import os\nos.system('touch /tmp/pwned')\n")
    _refused(cli, folder, tmp_path, code=5, message="modeling_evil.py")


def test_auto_map_in_tokenizer_config_is_refused(cli, folder, tmp_path):
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tok.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    _refused(cli, folder, tmp_path, code=5, message="auto_map in tokenizer_config.json")


def test_pickle_weights_only_are_refused(cli, folder, tmp_path):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    _refused(cli, folder, tmp_path, code=5, message="pytorch_model.bin, a pickle")


def test_no_weights_is_bad_input(cli, folder, tmp_path):
    (folder / "model.safetensors").unlink()
    _refused(cli, folder, tmp_path, code=2, message="no model.safetensors")


def test_folder_without_tokenizer_is_bad_input(cli, folder, tmp_path):
    # transformers would silently build an empty tokenizer: every word would become [UNK].
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink()
    _refused(cli, folder, tmp_path, code=2, message="has no tokenizer files")


def test_malformed_config_is_bad_input(cli, folder, tmp_path):
    (folder / "config.json").write_text("{not json")
    _refused(cli, folder, tmp_path, code=2, message="config.json of src is not valid JSON")


def test_config_without_model_type_is_bad_input(cli, folder, tmp_path):
    (folder / "config.json").write_text("{}")
    _refused(cli, folder, tmp_path, code=2, message="not a transformers config")


def test_sentence_transformers_module_outside_the_package_is_refused(cli, folder, tmp_path):
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Evil", "type": "evil_pkg.Pooling"},
    ]))
    _refused(cli, folder, tmp_path, code=5, message="'evil_pkg.Pooling'")


def test_module_path_outside_the_folder_is_refused(cli, folder, tmp_path):
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "../../etc", "type": "sentence_transformers.models.Transformer"},
    ]))
    _refused(cli, folder, tmp_path, code=5, message="points outside the model folder")


@pytest.mark.parametrize("task,message", [
    ("text2text-generation", "not an encoder-decoder model"),
    ("translate-everything", "unknown --task"),
])
def test_unsupported_task_is_usage_error(cli, folder, tmp_path, task, message):
    _refused(cli, folder, tmp_path, "--task", task, code=2, message=message)


def test_output_that_is_the_source_folder_is_refused(cli, folder, tmp_path):
    before = snapshot(folder)
    r = cli("export", folder, "-o", folder)
    assert r.code == 2 and "overwrite the input folder" in r.stderr, r
    assert snapshot(folder) == before


def test_output_that_is_a_file_is_refused(cli, folder, tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"mine")
    r = cli("export", folder, "-o", target)
    assert r.code == 2 and "exports to a folder" in r.stderr, r
    assert target.read_bytes() == b"mine"


def test_empty_text_is_usage_error(cli, folder, tmp_path):
    _refused(cli, folder, tmp_path, "--text", "  ", code=2, message="empty sentence")


def test_task_on_a_non_hf_source_is_usage_error(cli, linear_onnx, tmp_path):
    out = tmp_path / "m.onnx"
    r = cli("export", linear_onnx, "-o", out, "--task", "fill-mask")
    assert r.code == 2 and "--task, --text and --generate apply to a Hugging Face" in r.stderr, r
    assert not out.exists()


def test_generate_on_an_encoder_task_is_usage_error(cli, folder, tmp_path):
    _refused(cli, folder, tmp_path, "--generate", "4", code=2, message="--generate applies to text-generation and text2text")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_safetensors_is_bad_input(cli, folder, tmp_path, damage):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"garbage")
    _refused(cli, folder, tmp_path, code=2, message="transformers cannot load src")


@pytest.mark.slow
def test_custom_code_runs_only_with_trust(cli, folder, tmp_path):
    marker = tmp_path / "code-ran"
    (folder / "modeling_mine.py").write_text(
        "from pathlib import Path\n"
        "from transformers import BertForSequenceClassification\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "class MineModel(BertForSequenceClassification):\n"
        "    pass\n",
    )
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_mine.MineModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = cli("export", folder, "-o", out)
    assert r.code == 5 and not marker.exists() and not out.exists(), r
    r = cli("export", folder, "-o", out, "--trust", "--json")
    assert r.code == 0, r
    assert marker.read_text() == "ran"  # the folder's own class was used, as --trust asked
