"""text-generation: a Llama-style decoder folder exports with its KV cache, and greedy decoding
through ONNX Runtime gives generate()'s token ids."""

from __future__ import annotations

import numpy as np
import pytest

from test_hf_folders import snapshot, tiny_llama

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("hfg") / "llama")


def _greedy(sess, prompt: np.ndarray, layers: int, kv: int, hd: int, n: int) -> np.ndarray:
    """Greedy decoding written against the I/O names alone, as another tool would."""
    past = {f"past_key_values.{i}.{k}": np.zeros((1, kv, 0, hd), np.float32) for i in range(layers) for k in ("key", "value")}
    seq, cur, plen = prompt, prompt, 0
    names = [o.name for o in sess.get_outputs()]
    for _ in range(n):
        feeds = {"input_ids": cur, "attention_mask": np.ones((1, plen + cur.shape[1]), np.int64),
                 "position_ids": np.arange(plen, plen + cur.shape[1], dtype=np.int64)[None], **past}
        out = dict(zip(names, sess.run(None, feeds)))
        nxt = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        plen += cur.shape[1]
        past = {f"past_key_values.{i}.{k}": out[f"present.{i}.{k}"] for i in range(layers) for k in ("key", "value")}
        seq, cur = np.concatenate([seq, nxt], 1), nxt
    return seq


@pytest.mark.slow
def test_llama_folder_exports_with_cache_and_decodes_like_generate(cli, llama, tmp_path):
    import onnxruntime as ort
    import torch
    import transformers

    before = snapshot(llama)
    out = tmp_path / "out"
    r = cli("export", llama, "-o", out, "--generate", "16", "--json")
    assert r.code == 0, r
    doc = r.json
    names = [i["name"] for i in doc["inputs"]]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:] == [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
    assert [o["name"] for o in doc["outputs"]] == ["logits"] + [f"present.{i}.{k}" for i in range(2) for k in ("key", "value")]
    ids = [o for o in doc["validation"]["outputs"] if o["name"].startswith("generated_ids")]
    assert len(ids) == 2 and all(o["passed"] for o in ids)
    assert (out / "generation_config.json").is_file()
    assert snapshot(llama) == before

    # Independently of onnxkit's own check: 16 greedy tokens from a prompt it never saw.
    sess = ort.InferenceSession(str(out / "model.onnx"))
    prompt = np.array([[101, 7592, 2088, 2003, 1037, 3231]], dtype=np.int64)
    got = _greedy(sess, prompt, layers=2, kv=2, hd=16, n=16)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    with torch.no_grad():
        want = model.generate(torch.from_numpy(prompt), attention_mask=torch.ones(1, 6, dtype=torch.long),
                              do_sample=False, max_new_tokens=16, pad_token_id=0).numpy()
    assert want.shape[1] > 6 + 4  # enough new tokens to mean something (generate stops at EOS)
    np.testing.assert_array_equal(got[:, :want.shape[1]], want)


@pytest.mark.slow
def test_tampered_decoder_fails_generation_check(cli, llama, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "out"
    assert cli("export", llama, "-o", out, "--no-validate").code == 0
    model = onnx.load(str(out / "model.onnx"))
    w = next(t for t in model.graph.initializer if list(t.dims) == [64, 128])
    arr = numpy_helper.to_array(w) + np.random.default_rng(0).normal(0, 1.0, size=(64, 128)).astype(np.float32)
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    r = cli("validate", llama, bad, "--task", "text-generation", "--json")
    assert r.code == 1, r
    assert r.json["passed"] is False


def test_generate_must_be_positive(cli, llama, tmp_path):
    r = cli("export", llama, "-o", tmp_path / "out", "--generate", "0")
    assert r.code == 2 and "--generate 0" in r.stderr, r
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gpt2_folder_decodes_every_token_even_through_eos(cli, tmp_path):
    from test_hf_folders import tiny_gpt2

    src = tiny_gpt2(tmp_path / "gpt2")
    r = cli("export", src, "-o", tmp_path / "out", "--generate", "6", "--text", "Hello world.", "--json")
    assert r.code == 0, r
    ids = [o for o in r.json["validation"]["outputs"] if o["name"].startswith("generated_ids")]
    prompt_len = 5  # [CLS] hello world . [SEP]
    assert [o["cand_shape"] for o in ids] == [[1, prompt_len + 6]]
    assert all(o["passed"] for o in ids)
