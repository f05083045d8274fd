"""text2text-generation: T5 and BART folders export to Optimum's encoder / decoder /
decoder-with-past files, and greedy decoding through ONNX Runtime gives generate()'s ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_hf_folders import TOKENIZER_FILES, minilm_folder, snapshot

pytest.importorskip("transformers")

FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")


def _save(model, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(str(dest))
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_folder() / name, dest / name)
    return dest


def tiny_t5(dest: Path) -> Path:
    """A 2-layer, 32-wide T5 (relative position bias, tied head scaled by d_model**-0.5), its
    weights initialised large enough that greedy decoding does not repeat one token forever."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=30522, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=102, initializer_factor=2.0)
    return _save(transformers.T5ForConditionalGeneration(cfg), dest)


def tiny_bart(dest: Path) -> Path:
    """A 2-layer, 32-wide BART whose config forces EOS at the last position (forced_eos_token_id):
    the reference must decode greedily without it, as the ONNX graphs do."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BartConfig(
        vocab_size=30522, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=0,
        bos_token_id=101, eos_token_id=102, decoder_start_token_id=102, forced_eos_token_id=102,
    )
    return _save(transformers.BartForConditionalGeneration(cfg), dest)


@pytest.fixture
def t5(t5_folder):
    return t5_folder


@pytest.fixture
def t5_export(t5_exported):
    """The T5 folder exported once per session (and validated, 6 new tokens; conftest), for
    the tests that read it."""
    return t5_exported


def _names(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [i.name for i in m.graph.input], [o.name for o in m.graph.output]


def _greedy(enc_s, dec_s, past_s, ids: np.ndarray, start: int, layers: int, n: int) -> list[int]:
    """Greedy decoding written against Optimum's I/O names alone, as another tool would."""
    mask = np.ones_like(ids)
    hidden = enc_s.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
    out_names = [o.name for o in dec_s.get_outputs()]
    out = dict(zip(out_names, dec_s.run(None, {"encoder_attention_mask": mask, "input_ids": np.array([[start]]),
                                                  "encoder_hidden_states": hidden})))
    cross = {f"past_key_values.{i}.encoder.{k}": out[f"present.{i}.encoder.{k}"] for i in range(layers) for k in ("key", "value")}
    seq = [start]
    past_names = [o.name for o in past_s.get_outputs()]
    for _ in range(n):
        token = int(out["logits"][0, -1].argmax())
        seq.append(token)
        feeds = {"encoder_attention_mask": mask, "input_ids": np.array([[token]]), **cross}
        feeds.update({f"past_key_values.{i}.decoder.{k}": out[f"present.{i}.decoder.{k}"]
                      for i in range(layers) for k in ("key", "value")})
        out = dict(zip(past_names, past_s.run(None, feeds)))
    return seq


@pytest.mark.slow
def test_t5_exports_optimum_files_and_decodes_like_generate(t5_export, t5):
    import onnxruntime as ort
    import torch
    import transformers

    r, out = t5_export
    assert r.code == 0, r
    assert r.json["passed"] is True
    for name in (*FILES, "config.json", "generation_config.json", "tokenizer.json", "vocab.txt"):
        assert (out / name).is_file(), name
    assert _names(out / "encoder_model.onnx") == (["input_ids", "attention_mask"], ["last_hidden_state"])
    per_layer = [(i, k) for i in range(2) for k in ("key", "value")]
    dec_in, dec_out = _names(out / "decoder_model.onnx")
    assert dec_in == ["encoder_attention_mask", "input_ids", "encoder_hidden_states"]
    assert dec_out == ["logits"] + [f"present.{i}.{side}.{k}" for i in range(2) for side in ("decoder", "encoder")
                                    for k in ("key", "value")]
    past_in, past_out = _names(out / "decoder_with_past_model.onnx")
    assert past_in == ["encoder_attention_mask", "input_ids"] + [
        f"past_key_values.{i}.{side}.{k}" for i in range(2) for side in ("decoder", "encoder") for k in ("key", "value")]
    assert past_out == ["logits"] + [f"present.{i}.decoder.{k}" for i, k in per_layer]
    ids = [o for o in r.json["validation"]["outputs"] if o["name"].startswith("generated_ids")]
    assert len(ids) == 2 and all(o["passed"] and o["cand_shape"] == [1, 7] for o in ids)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".onnxkit")]

    # Independently of onnxkit's check: 10 greedy tokens from a prompt it never saw.
    sessions = [ort.InferenceSession(str(out / n)) for n in FILES]
    prompt = np.array([[101, 7592, 2088, 2003, 1037, 3231, 102]], dtype=np.int64)
    got = _greedy(*sessions, prompt, start=0, layers=2, n=10)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(t5)).eval()
    with torch.no_grad():
        want = model.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
                              do_sample=False, num_beams=1, max_new_tokens=10, eos_token_id=None, min_length=0)
    assert got == want[0].tolist()[:len(got)] and want.shape[1] == 11
    assert len(set(got[1:])) > 1  # random weights that pick one token forever would prove little


@pytest.mark.slow
def test_validate_folder_against_the_export(cli, t5_export, t5):
    _, out = t5_export
    r = cli("validate", t5, out, "--generate", "3", "--text", "Hello there.", "--json")
    assert r.code == 0, r
    names = [o["name"] for o in r.json["outputs"]]
    assert "logits (decoder_with_past_model.onnx)" in names and "generated_ids (text 1)" in names


@pytest.mark.slow
def test_perturbed_decoder_with_past_fails_the_check(cli, t5_export, t5, tmp_path):
    import onnx
    from onnx import numpy_helper

    _, out = t5_export
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    model = onnx.load(str(bad / "decoder_with_past_model.onnx"))
    # A 32x64 feed-forward weight of the decoder: only steps after the first see it.
    w = next(t for t in model.graph.initializer if list(t.dims) == [32, 64])
    arr = numpy_helper.to_array(w) + np.random.default_rng(0).normal(0, 0.5, size=(32, 64)).astype(np.float32)
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    onnx.save(model, str(bad / "decoder_with_past_model.onnx"))
    before = snapshot(bad)
    r = cli("validate", t5, bad, "--json")
    assert r.code == 1, r
    failed = {o["name"] for o in r.json["outputs"] if not o["passed"]}
    assert "logits (decoder_with_past_model.onnx)" in failed
    assert "logits (decoder_model.onnx)" not in failed and "last_hidden_state (encoder_model.onnx)" not in failed
    assert snapshot(bad) == before


@pytest.mark.slow
def test_bart_decodes_like_generate_without_its_forced_eos(cli, tmp_path):
    src = tiny_bart(tmp_path / "bart")
    r = cli("export", src, "-o", tmp_path / "out", "--generate", "5", "--json")
    assert r.code == 0, r
    ids = [o for o in r.json["validation"]["outputs"] if o["name"].startswith("generated_ids")]
    assert len(ids) == 2 and all(o["passed"] and o["cand_shape"] == [1, 6] for o in ids)
    assert _names(tmp_path / "out" / "decoder_model.onnx")[0][2] == "encoder_hidden_states"


def test_t5_with_custom_code_is_refused_and_nothing_written(cli, t5, tmp_path):
    src = tmp_path / "custom"
    shutil.copytree(t5, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSeq2SeqLM": "modeling_evil.EvilT5"}
    (src / "config.json").write_text(json.dumps(cfg))
    (src / "modeling_evil.py").write_text("raise SystemExit('ran')\n")
    before = snapshot(src)
    r = cli("export", src, "-o", tmp_path / "out")
    assert r.code == 5 and "carries its own modeling code" in r.stderr, r
    assert not (tmp_path / "out").exists()
    assert snapshot(src) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxkit")]


def test_validate_needs_all_three_files(cli, t5, tmp_path):
    out = tmp_path / "half"
    out.mkdir()
    (out / "encoder_model.onnx").write_bytes(b"not checked before the missing files are")
    r = cli("validate", t5, out)
    assert r.code == 2 and "decoder_model.onnx, decoder_with_past_model.onnx" in r.stderr, r
    assert sorted(p.name for p in out.iterdir()) == ["encoder_model.onnx"]


def test_bin_weights_are_refused_without_trust(cli, t5, tmp_path):
    src = tmp_path / "bin"
    shutil.copytree(t5, src)
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"a pickle would run code here")
    r = cli("export", src, "-o", tmp_path / "out")
    assert r.code == 5 and "pickle" in r.stderr, r
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_mt5_with_more_decoder_than_encoder_layers(cli, tmp_path):
    """T5's decoder stack has its own config: a cache sized from the top-level one ran out of
    layers, in the export and in generate() itself."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.MT5Config(vocab_size=30522, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=3,
                                 num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102)
    src = _save(transformers.MT5ForConditionalGeneration(cfg), tmp_path / "mt5")
    r = cli("export", src, "-o", tmp_path / "out", "--generate", "3", "--text", "Hello world.", "--json")
    assert r.code == 0, r
    past_in, past_out = _names(tmp_path / "out" / "decoder_with_past_model.onnx")
    assert "past_key_values.2.encoder.value" in past_in and past_out[-1] == "present.2.decoder.value"


@pytest.mark.parametrize("arch,task", [
    ("MarianMTModel", "text2text-generation"),
    ("T5ForConditionalGeneration", "text2text-generation"),
    ("ViTForImageClassification", "image-classification"),
    ("T5Model", "feature-extraction"),
])
def test_task_inferred_from_architecture(arch, task):
    from onnxkit.frameworks.hf_scan import HFFolder

    folder = HFFolder(root=Path("x"), model_dir=Path("x"), config={"architectures": [arch]}, weights="safetensors")
    assert folder.infer_task() == task


def test_text2text_on_an_encoder_only_folder_is_usage_error(cli, tmp_path):
    from test_hf_folders import tiny_bert

    src = tiny_bert(tmp_path / "bert")
    before = snapshot(src)
    r = cli("export", src, "-o", tmp_path / "out", "--task", "text2text-generation")
    assert r.code == 2 and "is not an encoder-decoder model" in r.stderr, r
    assert not (tmp_path / "out").exists() and snapshot(src) == before
