"""The rest of the chain on an exported Hugging Face folder: validate FOLDER OUT/, optimize
and quantize OUT/ -o NEW/ (every ONNX file, side files copied, never overwriting), bench
OUT/ --vs FOLDER on tokenized text and, for a decoder, through its KV cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from test_hf_folders import minilm_folder, snapshot, tiny_bert, tiny_llama

pytest.importorskip("transformers")

SIDE = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"}


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".onnxkit-"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A random-init BERT classifier folder and its export."""
    from conftest import run_cli

    base = tmp_path_factory.mktemp("chain")
    src = tiny_bert(base / "src")
    out = base / "out"
    r = run_cli("export", src, "-o", out, "--no-validate")
    assert r.code == 0, r
    return src, out


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from conftest import run_cli

    base = tmp_path_factory.mktemp("chainllama")
    src = tiny_llama(base / "src")
    out = base / "out"
    r = run_cli("export", src, "-o", out, "--no-validate")
    assert r.code == 0, r
    return src, out


def test_optimize_folder_writes_every_file_and_the_side_files(cli, bert, tmp_path):
    src, out = bert
    before = snapshot(out)
    dest = tmp_path / "opt"
    r = cli("optimize", out, "-o", dest, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["task"] == "text-classification"
    assert [f["file"] for f in doc["files"]] == ["model.onnx"]
    # Fusion chosen from config.json's model_type, with its heads and hidden size.
    cfg = json.loads((out / "config.json").read_text())
    t = doc["files"][0]["transformer"]
    assert (t["model_type"], t["num_heads"], t["hidden_size"]) == ("bert", cfg["num_attention_heads"], cfg["hidden_size"])
    assert t["fused_ops"], t
    # Checked on the tokenizer's text, not random ids.
    v = doc["validation"]["model.onnx"]
    assert v["samples"] == 6 and any("texts, padded" in s for s in v["input_sets"]), v
    assert {p.name for p in dest.iterdir()} == SIDE | {"model.onnx"}
    assert all((dest / n).read_bytes() == (out / n).read_bytes() for n in SIDE)
    assert snapshot(out) == before
    assert _leftovers(tmp_path) == []
    # The optimized folder validates against the Hugging Face source, as the export did.
    r = cli("validate", src, dest, "--json")
    assert r.code == 0, r


def test_config_heads_are_used_not_guessed(cli, bert, tmp_path):
    """A config.json that states other heads than the graph has: the heads fusion is given are
    the config's, not the graph's 2 (here onnxscript's fuser, which reads the graph, wins)."""
    _, out = bert
    lying = tmp_path / "lying"
    shutil.copytree(out, lying)
    cfg = json.loads((lying / "config.json").read_text())
    cfg["num_attention_heads"] = 4
    (lying / "config.json").write_text(json.dumps(cfg))
    r = cli("optimize", lying, "-o", tmp_path / "opt", "--json")
    doc = r.json
    assert doc["files"][0]["transformer"]["num_heads"] == 4
    assert doc["config_shape"]["num_heads"] == 4


def test_quantize_folder_measures_on_tokenized_text(cli, bert, tmp_path):
    _, out = bert
    before = snapshot(out)
    dest = tmp_path / "int8"
    r = cli("quantize", out, "-o", dest, "--json")
    assert r.code == 0, r
    f = r.json["files"][0]
    assert "built-in sentences, tokenized" in f["eval_data"]
    assert f["nodes_quantized"] > 0
    assert {p.name for p in dest.iterdir()} == SIDE | {"model.onnx"}
    assert snapshot(out) == before
    assert _leftovers(tmp_path) == []


def test_a_candidate_that_differs_fails_the_text_check(bert, tmp_path):
    import onnx
    from onnx import numpy_helper

    from onnxkit.foundation.compare import Tolerance
    from onnxkit.operations.hf_folder_ops import compare_on_text
    from onnxkit.operations.hf_folder_ref import read_exported_folder

    _, out = bert
    model = onnx.load(str(out / "model.onnx"))
    big = next(t for t in model.graph.initializer if list(t.dims) == [32, 64])
    arr = numpy_helper.to_array(big) + np.random.default_rng(0).normal(0, 0.5, size=tuple(big.dims)).astype(np.float32)
    big.CopyFrom(numpy_helper.from_array(arr, big.name))
    bad = tmp_path / "model.onnx"
    onnx.save(model, str(bad))
    folder = read_exported_folder(out, trust=False)
    assert compare_on_text(folder, out / "model.onnx", bad, Tolerance(), trust=True).passed is False
    assert compare_on_text(folder, out / "model.onnx", out / "model.onnx", Tolerance(), trust=False).passed is True


@pytest.mark.parametrize("command", ["optimize", "quantize"])
def test_existing_output_folder_is_refused(cli, bert, tmp_path, command):
    _, out = bert
    dest = tmp_path / "exists"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    r = cli(command, out, "-o", dest)
    assert r.code == 2 and "output folder already exists" in r.stderr, r
    assert [p.name for p in dest.iterdir()] == ["keep.txt"] and (dest / "keep.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["optimize", "quantize"])
def test_folder_without_onnx_files(cli, bert, tmp_path, command):
    src, _ = bert
    r = cli(command, src, "-o", tmp_path / "new")
    assert r.code == 2 and "holds no .onnx file" in r.stderr, r
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


def test_output_inside_the_input_folder(cli, bert):
    _, out = bert
    before = snapshot(out)
    r = cli("optimize", out, "-o", out / "opt")
    assert r.code == 2 and "inside the input folder" in r.stderr, r
    assert snapshot(out) == before


def test_folder_without_config_or_tokenizer(cli, bert, tmp_path):
    _, out = bert
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(out / "model.onnx", bare / "model.onnx")
    r = cli("quantize", bare, "-o", tmp_path / "q")
    assert r.code == 2 and "no config.json" in r.stderr, r
    shutil.copyfile(out / "config.json", bare / "config.json")
    r = cli("quantize", bare, "-o", tmp_path / "q")
    assert r.code == 2 and "no tokenizer files" in r.stderr, r
    assert not (tmp_path / "q").exists() and _leftovers(tmp_path) == []


def test_folder_with_custom_code_needs_trust(cli, bert, tmp_path):
    _, out = bert
    evil = tmp_path / "evil"
    shutil.copytree(out, evil)
    cfg = json.loads((evil / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["tok.EvilTokenizer", None]}
    (evil / "tokenizer_config.json").write_text(json.dumps(cfg))
    for command in (["optimize", evil, "-o", tmp_path / "o"], ["bench", evil]):
        r = cli(*command)
        assert r.code == 5 and "auto_map in tokenizer_config.json" in r.stderr, r
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("command", [["optimize", "--auto"], ["quantize", "--mode", "auto"]])
def test_auto_modes_take_one_file(cli, bert, tmp_path, command):
    _, out = bert
    r = cli(command[0], out, "-o", tmp_path / "x", *command[1:])
    assert r.code == 2 and "takes one ONNX file" in r.stderr, r
    assert not (tmp_path / "x").exists()


def test_bench_encoder_folder_on_tokenized_text(cli, bert):
    src, out = bert
    r = cli("bench", out, "--vs", src, "--text", "a first sentence", "--text", "and a second, longer one to pad",
            "-n", "3", "--warmup", "1", "--threads", "1", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["batch_sizes"] == [2]
    assert len(doc["entries"]) == 2 and doc["entries"][1]["is_source"], doc["entries"]
    assert any("2 --text sentence(s) tokenized" in n for n in doc["notes"]), doc["notes"]
    r = cli("bench", out, "--seq", "24", "--batch-size", "3", "-n", "3", "--warmup", "1", "--json")
    assert r.code == 0, r
    assert "batch 3: 24 tokens" in " ".join(r.json["notes"])


def test_bench_decoder_folder_through_the_cache(cli, llama):
    src, out = llama
    r = cli("bench", out, "--vs", src, "--context", "8,128", "--new-tokens", "4", "-n", "5", "--threads", "1", "--json")
    assert r.code == 0, r
    entries = r.json["entries"]
    phases = {(e["name"], e["phase"], e["context"]) for e in entries}
    for name in ("out/model.onnx", "src (transformers)"):
        for ctx in (8, 128):
            assert {(name, "prompt", ctx), (name, "per-token decode", ctx)} <= phases, phases
    by = {(e["name"], e["phase"], e["context"]): e["stats"]["p50_ms"] for e in entries}
    # Through the cache a step reads the context; it does not recompute it.
    assert by[("out/model.onnx", "per-token decode", 128)] < by[("out/model.onnx", "prompt", 128)]
    assert "out/model.onnx" in r.json["cache_scaling"]


@pytest.mark.parametrize("args,message", [
    (["--seq", "8"], "--seq applies to exported Hugging Face folders"),
    (["--context", "16"], "--context applies to exported Hugging Face folders"),
])
def test_folder_only_bench_options_on_a_file(cli, bert, args, message):
    _, out = bert
    r = cli("bench", out / "model.onnx", *args)
    assert r.code == 2 and message in r.stderr, r


def test_bench_option_that_does_not_fit_the_task(cli, bert, llama):
    r = cli("bench", bert[1], "--context", "16")
    assert r.code == 2 and "apply to text-generation" in r.stderr, r
    r = cli("bench", llama[1], "--seq", "16")
    assert r.code == 2 and "--text and --seq apply to encoders" in r.stderr, r
    r = cli("bench", llama[1], "--context", "600")  # the tiny Llama has 512 positions
    assert r.code == 2 and "exceeds the model's 512 positions" in r.stderr, r
    r = cli("bench", bert[1], llama[1])
    assert r.code == 2 and "different tasks" in r.stderr, r


@pytest.mark.slow
def test_decoder_folder_optimize_and_quantize_keep_the_cache(cli, llama, tmp_path):
    src, out = llama
    r = cli("optimize", out, "-o", tmp_path / "opt", "--json")
    assert r.code == 0, r
    v = r.json["validation"]["model.onnx"]
    assert any(o["name"].startswith("generated_ids") and o["passed"] for o in v["outputs"]), v
    assert "generation_config.json" in {p.name for p in (tmp_path / "opt").iterdir()}
    r = cli("quantize", out, "-o", tmp_path / "q", "--json")
    assert r.code == 0, r
    r = cli("validate", src, tmp_path / "opt", "--generate", "4")
    assert r.code == 0, r


@pytest.mark.slow
def test_minilm_chain_against_sentence_transformers(cli, tmp_path):
    """export with no flag matches encode() (cosine >= 0.99999); quantize of the folder stays
    close: measured 2026-11-27 on these five sentences, mean cosine 0.991, min 0.975 (the
    one-word "ok"); the issue's goal of 0.99 is the quantization work's, not this chain's."""
    st = pytest.importorskip("sentence_transformers")
    import onnxruntime as ort
    import transformers

    from test_hf_minilm import SENTENCES

    src = minilm_folder()
    out, q = tmp_path / "out", tmp_path / "int8"
    assert cli("export", src, "-o", out).code == 0
    r = cli("quantize", out, "-o", q, "--json")
    assert r.code == 0, r
    want = st.SentenceTransformer(str(src), device="cpu", local_files_only=True).encode(SENTENCES)
    cosines = {}
    for folder in (out, q):
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
        enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="np")
        sess = ort.InferenceSession(str(folder / "model.onnx"))
        got = sess.run(["sentence_embedding"], {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        cosines[folder.name] = (float(cos.mean()), float(cos.min()))
    print("(mean, min) cosine vs sentence-transformers encode:", cosines)
    assert cosines["out"][1] >= 0.99999, cosines
    assert cosines["int8"][0] >= 0.98 and cosines["int8"][1] >= 0.95, cosines


@pytest.mark.slow
def test_llama_per_token_latency_does_not_grow_with_context(cli, tmp_path):
    """The issue's check: a Llama-style decoder (4 layers, hidden 256, grouped-query
    attention) decodes a token at context 256 in at most 1.5x the time at 16."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=30522, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                   num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                                   eos_token_id=102, bos_token_id=101, pad_token_id=0)
    src = tmp_path / "llama"
    transformers.LlamaForCausalLM(cfg).eval().save_pretrained(str(src))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(minilm_folder() / name, src / name)
    out = tmp_path / "out"
    assert cli("export", src, "-o", out, "--no-validate").code == 0
    r = cli("bench", out, "--context", "16,256", "--new-tokens", "16", "-n", "20", "--threads", "1", "--json")
    assert r.code == 0, r
    assert r.json["cache_scaling"]["out/model.onnx"] <= 1.5, r.json["entries"]


def test_init_on_a_folder_writes_its_task(cli, bert, llama, tmp_path):
    import tomllib

    src, _ = bert
    before = snapshot(src)
    config = tmp_path / "onnxkit.toml"
    r = cli("init", src, "-o", config)
    assert r.code == 0, r
    doc = tomllib.loads(config.read_text())
    assert doc["source"]["framework"] == "hf" and doc["source"]["task"] == "text-classification"
    assert doc["source"]["inputs"] == [] and (tmp_path / doc["source"]["path"]).resolve() == src.resolve()
    assert doc["optimize"]["mode"] == "fixed" and doc["quantize"]["mode"] == "dynamic"
    assert snapshot(src) == before
    r = cli("init", llama[0], "-o", tmp_path / "llama.toml")
    assert r.code == 0, r
    doc = tomllib.loads((tmp_path / "llama.toml").read_text())
    assert doc["source"]["task"] == "text-generation" and doc["bench"]["batch_sizes"] == [1]


def _config(tmp_path, model, **extra):
    from onnxkit.operations.config_init import render_template

    values = {"source": {"path": str(model)}, "output": {"dir": str(tmp_path / "out")}}
    for section, kv in extra.items():
        values.setdefault(section, {}).update(kv)
    path = tmp_path / "onnxkit.toml"
    path.write_text(render_template(values))
    return path


def test_pipeline_config_keys_that_do_not_fit_the_source(cli, bert, linear_onnx, tmp_path):
    r = cli("pipeline", _config(tmp_path, linear_onnx, source={"task": "text-classification"}))
    assert r.code == 2 and "source.task applies to a Hugging Face folder source" in r.stderr, r
    data = tmp_path / "x.npz"
    np.savez(data, input_ids=np.ones((1, 4), np.int64))
    r = cli("pipeline", _config(tmp_path, bert[0], validate={"data": str(data)}))
    assert r.code == 2 and "validate.data does not apply to a Hugging Face folder" in r.stderr, r
    r = cli("pipeline", _config(tmp_path, bert[0], source={"inputs": ["input_ids:[batch,seq]:int64"]}))
    assert r.code == 2 and "source.inputs does not apply" in r.stderr, r
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pipeline_on_a_folder(cli, bert, tmp_path):
    src, _ = bert
    config = tmp_path / "onnxkit.toml"
    assert cli("init", src, "-o", config).code == 0
    text = config.read_text().replace("iterations = 50", "iterations = 5")
    config.write_text(text)
    for _ in range(2):  # a second run replaces the first run's folders
        r = cli("pipeline", config, "--json")
        assert r.code == 0, r
    doc = r.json
    steps = {s["name"]: s["status"] for s in doc["steps"]}
    assert steps == {"export": "passed", "validate export": "passed", "optimize": "passed", "validate optimized": "passed",
                     "quantize": "passed", "validate quantized": "passed", "bench": "passed"}, steps
    out = tmp_path / "onnxkit-out"
    for name in ("src", "src.opt", "src.int8"):
        assert SIDE | {"model.onnx"} <= {p.name for p in (out / name).iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_folder_into_an_onnx_file_name_is_refused(cli, bert, tmp_path):
    _, out = bert
    r = cli("quantize", out, "-o", tmp_path / "model.int8.onnx")
    assert r.code == 2 and "names an ONNX file" in r.stderr, r
    assert not (tmp_path / "model.int8.onnx").exists() and _leftovers(tmp_path) == []


def test_folder_with_a_broken_tokenizer(cli, bert, tmp_path):
    _, out = bert
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "tokenizer.json").unlink()
    (broken / "vocab.txt").write_bytes(b"garbage\x00\x01")  # no [UNK]: loads, then fails on text
    before = snapshot(broken)
    for command in (["quantize", broken, "-o", tmp_path / "q"], ["bench", broken, "-n", "3"]):
        r = cli(*command)
        assert r.code == 2 and "the tokenizer of broken cannot be loaded" in r.stderr, r
    assert snapshot(broken) == before and not (tmp_path / "q").exists() and _leftovers(tmp_path) == []
