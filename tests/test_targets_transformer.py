"""`onnxkit targets` on a real transformer before and after `optimize --transformer bert`:
which com.microsoft fused ops each target runs, as measured."""

from __future__ import annotations

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _only(doc: dict, name: str) -> dict:
    return next(t for t in doc["targets"] if t["target"] == name)


@pytest.mark.slow
def test_tiny_bert_before_and_after_optimize_on_every_target_here(cli, tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=100, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.ones(2, 8, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2, max=60)
    fp32 = tmp_path / "bert.onnx"
    torch.onnx.export(Hidden(model), (ids, ids), str(fp32), dynamo=True, input_names=["input_ids", "attention_mask"],
                      output_names=["hidden"], dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                                                "attention_mask": {0: batch, 1: seq}},
                      external_data=False)
    opt = tmp_path / "bert_opt.onnx"
    r = cli("optimize", fp32, "-o", opt, "--transformer", "bert")
    assert r.code == 0, r.stderr

    from onnxkit.runtime import targets_web

    wanted = ["mobile"] + (["openvino"] if importlib.util.find_spec("openvino") else []) + \
        (["web"] if targets_web.availability() is None else [])
    fused_ops = set()
    for path in (fp32, opt):
        r = cli("targets", path, "-t", ",".join(wanted), "--precision", "f32", "--json")
        assert r.code == 0, (path.name, r.stderr)
        doc = json.loads(r.stdout)
        for name in wanted:
            t = _only(doc, name)
            assert t["status"] == "passed" and t["max_abs_diff"] <= 1e-4, (path.name, name, t)
            assert t["unsupported"] == []  # measured: every target here runs the fused ops
        parts = _only(doc, "mobile")["details"]["partitions"]
        if path == opt:
            fused_ops = {op for op in parts["nnapi"]["unsupported_ops"] if op.startswith("com.microsoft:")}
    # the fused ops the NNAPI partition does not take (they run on the phone's CPU)
    # (this tiny BERT gets SkipLayerNormalization but not Attention fused; MiniLM gets both)
    assert "com.microsoft:SkipLayerNormalization" in fused_ops
