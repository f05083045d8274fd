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


@pytest.mark.parametrize("kind", ["BartModel", "T5EncoderModel"])
def test_headless_encoder_decoder_folder_exports_its_encoder(cli, tmp_path, kind):
    # Inferred as feature-extraction, these failed with exit 4 and a "try another --opset" hint.
    import torch
    import transformers
    from test_hf_seq2seq import _save

    torch.manual_seed(0)
    if kind == "BartModel":
        cfg = transformers.BartConfig(vocab_size=30522, d_model=32, encoder_layers=1, decoder_layers=1,
                                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                      decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=0)
    else:
        cfg = transformers.T5Config(vocab_size=30522, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    model = getattr(transformers, kind)(cfg)
    src = _save(model, tmp_path / "src")
    out = tmp_path / "out"
    r = cli("export", src, "-o", out, "--json")
    assert r.code == 0, r
    assert any("exports its encoder" in n for n in r.json["notes"]), r.json["notes"]
    import onnxruntime as ort

    tok = transformers.AutoTokenizer.from_pretrained(str(src))
    enc = tok(["the encoder alone", "a"], padding=True, return_tensors="np")
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {k: enc[k] for k in ("input_ids", "attention_mask")})[0]
    encoder = model.get_encoder() if kind == "BartModel" else model
    with torch.no_grad():
        want = encoder(input_ids=torch.tensor(enc["input_ids"]),
                       attention_mask=torch.tensor(enc["attention_mask"])).last_hidden_state.numpy()
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4)


def test_more_images_than_read_are_noted(cli, tmp_path):
    from PIL import Image
    from test_hf_vision import tiny_vit

    from onnxkit.operations.hf_vision_validate import MAX_IMAGES

    src = tiny_vit(tmp_path / "vit")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(MAX_IMAGES + 6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    r = cli("export", src, "-o", tmp_path / "out", "--data", images, "--json")
    assert r.code == 0, r
    notes = " ".join(r.json["validation"]["notes"])
    assert f"the first {MAX_IMAGES} of the {MAX_IMAGES + 6} images" in notes, notes


def test_tokenizer_file_linked_outside_the_folder_is_not_copied_into_the_export(cli, folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nprivate-key-material\n")
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    (folder / "vocab.txt").symlink_to(secret)  # a valid vocabulary: transformers loads it
    _refused(cli, folder, tmp_path, code=5, message="vocab.txt in src is a link to")
    assert secret.read_text().endswith("private-key-material\n")


def test_side_file_linked_outside_an_exported_folder_is_refused(cli, bert, tmp_path):
    out = tmp_path / "exported"
    assert cli("export", bert, "-o", out, "--no-validate").code == 0
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (out / "README.md").symlink_to(secret)
    for command in ("quantize", "optimize"):
        before = snapshot(out)
        r = cli(command, out, "-o", tmp_path / "q")
        assert r.code == 5 and "README.md in exported is a link to" in r.stderr, r
        assert not (tmp_path / "q").exists() and _leftovers(tmp_path) == [] and snapshot(out) == before


def test_hub_cache_snapshot_links_into_its_blobs_are_fine(cli, bert, tmp_path):
    repo = tmp_path / "models--org--bert"
    snap = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in bert.iterdir():
        shutil.copyfile(f, repo / "blobs" / f"sha-{f.name}")
        (snap / f.name).symlink_to(Path("..", "..", "blobs", f"sha-{f.name}"))
    r = cli("export", snap, "-o", tmp_path / "out", "--no-validate")
    assert r.code == 0, r
    assert not (tmp_path / "out" / "vocab.txt").is_symlink()


def test_sharded_index_naming_a_file_outside_the_folder_is_refused(cli, folder, tmp_path):
    from safetensors import safe_open

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shard = outside / "model-00001-of-00001.safetensors"
    (folder / "model.safetensors").rename(shard)
    with safe_open(str(shard), "np") as f:
        names = list(f.keys())
    index = {"metadata": {}, "weight_map": {k: f"../elsewhere/{shard.name}" for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(cli, folder, tmp_path, code=5, message="model.safetensors.index.json points outside the model folder")


def _exported(cli, src: Path, out: Path):
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.hf_fw import load
    from onnxkit.runtime.session import make_session

    assert cli("export", src, "-o", out, "--no-validate").code == 0
    session = make_session(out / "model.onnx")
    return load(src, LoadOptions()), session


def _verdict(model_src, session, run) -> bool:
    from onnxkit.operations.hf_validate import check_texts, validate_on_text

    return validate_on_text(model_src, run, session.input_specs, check_texts([]), None, reference_name="src",
                            candidate_name="onnx", new_tokens=3).passed


def test_encoder_verdict_ignores_padding_and_catches_real_tokens(cli, tmp_path):
    model_src, session = _exported(cli, tiny_bert(tmp_path / "src", head="BertModel"), tmp_path / "out")

    def shifted(where):
        def run(feeds):
            out = dict(session.run(feeds))
            hidden = out["last_hidden_state"].copy()
            mask = feeds["attention_mask"] != 0
            hidden[where(mask)] += 0.5
            out["last_hidden_state"] = hidden
            return out
        return run

    assert _verdict(model_src, session, session.run)
    assert _verdict(model_src, session, shifted(lambda mask: ~mask))  # padding is never read: PASS
    if_real = shifted(lambda mask: mask & (np.cumsum(mask, axis=1) == 2))  # one real token of each row
    assert not _verdict(model_src, session, if_real)


@pytest.mark.slow
def test_decoder_that_ignores_its_cache_fails(cli, tmp_path):
    model_src, session = _exported(cli, tiny_llama(tmp_path / "src"), tmp_path / "out")

    def no_cache(feeds):
        # The past is there, zeroed: the shapes fit, the cache carries nothing.
        return session.run({k: (np.zeros_like(v) if k.startswith("past_key_values.") else v) for k, v in feeds.items()})

    assert _verdict(model_src, session, session.run)
    assert not _verdict(model_src, session, no_cache)


@pytest.fixture
def t5_out(t5_exported):
    # The session's T5 export (conftest), shared with test_hf_seq2seq; its source is beside it.
    r, out = t5_exported
    assert r.code == 0, r
    return out


@pytest.mark.slow
def test_optimize_t5_folder_checks_its_decoders_on_encoded_text(cli, t5_out, tmp_path):
    # Random encoder_hidden_states and an int mask that is not 0/1 failed T5's fused graph (exit 1).
    r = cli("optimize", t5_out, "-o", tmp_path / "opt", "--json")
    assert r.code == 0, r
    assert any("decoder_with_past_model.onnx: encoder_hidden_states from out's encoder" in n for n in r.json["notes"])


@pytest.mark.slow
def test_perturbed_seq2seq_decoder_fails_the_encoded_text_check(t5_out, tmp_path):
    import onnx
    from onnx import numpy_helper

    from onnxkit.foundation.compare import Tolerance
    from onnxkit.operations.hf_folder_ops import compare_on_text
    from onnxkit.operations.hf_folder_ref import load_tokenizer, read_exported_folder

    folder = read_exported_folder(t5_out, trust=False)
    tokenizer = load_tokenizer(t5_out)
    for name in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
        model = onnx.load(str(t5_out / name))
        w = next(t for t in model.graph.initializer if list(t.dims) == [32, 64])
        arr = numpy_helper.to_array(w) + np.random.default_rng(0).normal(0, 0.5, size=(32, 64)).astype(np.float32)
        w.CopyFrom(numpy_helper.from_array(arr, w.name))
        bad = tmp_path / name
        onnx.save(model, str(bad))
        same = compare_on_text(folder, t5_out / name, t5_out / name, Tolerance(), trust=False, tokenizer=tokenizer)
        assert same.passed and any("encoder_hidden_states from" in n for n in same.notes), same.notes
        assert not compare_on_text(folder, t5_out / name, bad, Tolerance(), trust=False, tokenizer=tokenizer).passed


@pytest.mark.slow
def test_image_classification_folder_optimizes_quantizes_and_bench_says_what_to_do(cli, tmp_path):
    # A folder with a processor and no tokenizer was refused with "has no tokenizer files".
    from test_hf_vision import tiny_vit

    out = tmp_path / "out"
    assert cli("export", tiny_vit(tmp_path / "vit"), "-o", out, "--no-validate").code == 0
    before = snapshot(out)
    for command in ("optimize", "quantize"):
        r = cli(command, out, "-o", tmp_path / command, "--json")
        assert r.code == 0, r
        assert {"model.onnx", "config.json", "preprocessor_config.json"} <= {p.name for p in (tmp_path / command).iterdir()}
        assert any("model.onnx takes pixel_values: compared on seeded random inputs" in n for n in r.json["notes"])
    r = cli("bench", out, "-n", "2")
    assert r.code == 2 and "an image-classification folder has no tokenizer" in r.stderr and "bench " in r.stderr, r
    assert snapshot(out) == before and _leftovers(tmp_path) == []
    (out / "preprocessor_config.json").unlink()
    r = cli("quantize", out, "-o", tmp_path / "q2")
    assert r.code == 2 and "has no preprocessor_config.json" in r.stderr, r
    assert not (tmp_path / "q2").exists()


def test_task_whose_head_the_weights_lack_is_refused(cli, tmp_path):
    # transformers initializes a missing head randomly; the export matched itself and PASSED.
    src = tiny_bert(tmp_path / "src", head="BertModel")
    r = _refused(cli, src, tmp_path, "--task", "text-classification", code=2,
                 message="src (BertModel) has no weights for classifier.bias, classifier.weight")
    assert "LOAD REPORT" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("change,message", [
    ({"hidden_size": "wide"}, "transformers cannot load src"),
    ({"num_attention_heads": 0}, "transformers cannot load src"),
    ({"architectures": "BertForSequenceClassification", "hidden_size": "wide"}, "transformers cannot load src for text-classification"),
])
def test_config_values_of_the_wrong_kind_are_bad_input(cli, folder, tmp_path, change, message):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(change)
    (folder / "config.json").write_text(json.dumps(cfg))
    _refused(cli, folder, tmp_path, code=2, message=message)


def test_config_naming_a_billion_layers_is_refused_before_building_them(cli, folder, tmp_path):
    import time

    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 10**9
    (folder / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    _refused(cli, folder, tmp_path, code=2, message="num_hidden_layers = 1000000000 is not a plausible model")
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("name", ["tokenizer_config.json", "special_tokens_map.json"])
def test_tokenizer_json_that_is_not_an_object_is_bad_input(cli, folder, tmp_path, name):
    (folder / name).write_text("[1, 2]")
    _refused(cli, folder, tmp_path, code=2, message="transformers cannot load src")


@pytest.mark.slow
def test_export_into_another_model_folder_is_refused(cli, bert, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bert, other)
    (other / "config.json").write_text('{"model_type": "bert", "mine": true}')
    before = snapshot(other)
    r = cli("export", bert, "-o", other, "--no-validate")
    assert r.code == 2 and "holds a model (model.safetensors)" in r.stderr, r
    assert snapshot(other) == before and _leftovers(tmp_path) == []
    again = tmp_path / "out"
    for _ in range(2):  # an earlier export's folder is written again
        assert cli("export", bert, "-o", again, "--no-validate").code == 0


def test_bench_on_an_encoder_decoder_folder_says_what_it_can_time(cli, t5_out):
    before = snapshot(t5_out)
    r = cli("bench", t5_out, "-n", "2")
    assert r.code == 2 and "does not time an encoder-decoder folder yet" in r.stderr, r
    assert "decoder_model.onnx" in r.stderr and snapshot(t5_out) == before


def test_text_longer_than_the_position_table_is_truncated_not_a_crash(cli, bert, tmp_path):
    # The MiniLM tokenizer allows 512 tokens; this BERT's position table has 128 rows.
    long_text = " ".join(["word"] * 300)
    out = tmp_path / "out"
    r = cli("export", bert, "-o", out, "--text", long_text)
    assert r.code == 0, r
    r = cli("bench", out, "--seq", "300", "-n", "2")
    assert r.code == 2 and "--seq 300: the model takes at most 128 tokens" in r.stderr, r


def test_pipeline_and_init_refuse_an_encoder_decoder_folder_up_front(cli, t5_out, tmp_path):
    # The pipeline exported, then failed every later step on a model.onnx the folder does not hold.
    src = t5_out.parent / "t5"
    config = tmp_path / "onnxkit.toml"
    r = cli("init", src, "-o", config)
    assert r.code == 2 and "does not run an encoder-decoder folder" in r.stderr, r
    assert not config.exists()
    from onnxkit.operations.config_init import render_template

    config.write_text(render_template({"source": {"path": str(src)}, "output": {"dir": str(tmp_path / "out")}}))
    r = cli("pipeline", config)
    assert r.code == 2 and "does not run an encoder-decoder folder" in r.stderr, r
    assert not (tmp_path / "out").exists()


def test_init_refuses_an_image_classification_folder(cli, tmp_path):
    from test_hf_vision import tiny_vit

    src = tiny_vit(tmp_path / "vit")
    r = cli("init", src, "-o", tmp_path / "onnxkit.toml")
    assert r.code == 2 and "does not run an image-classification folder" in r.stderr, r
    assert not (tmp_path / "onnxkit.toml").exists()
