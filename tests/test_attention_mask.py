"""An Attention's float bias that only masks padded keys becomes a [batch, seq] key padding
mask (faster in ONNX Runtime's CPU attention); any other bias is left as it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.passes.attention_mask import bias_to_key_padding_mask
from onnxkit.passes.transformer import unpack_attention
from onnxkit.runtime.session import make_session

D, HEADS = 8, 2


def _model(kind: str = "padding", masked: float = float("-inf")):
    """x [b, s, D] and attention_mask [b, s] (int64) -> Attention(qkv_hidden_sizes) with a bias
    built from the mask the way torch.export writes it: Where(mask, 0, masked) expanded to
    [b, 1, s, s]. ``kind``: padding | causal (a triangle added) | input-dependent (x adds in)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((D, 3 * D)).astype(np.float32), "wqkv"),
             numpy_helper.from_array(rng.standard_normal(3 * D).astype(np.float32), "bqkv"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(masked, np.float32), "masked"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([1], np.int64), "i1"),
             numpy_helper.from_array(np.array([2], np.int64), "i2")]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mb"], to=TensorProto.BOOL),
        helper.make_node("Where", ["mb", "zero", "masked"], ["b2"]),
        helper.make_node("Unsqueeze", ["b2", "axes12"], ["b4"]),
        helper.make_node("Shape", ["attention_mask"], ["ms"]),
        helper.make_node("Slice", ["ms", "i0", "i1"], ["nb"]),
        helper.make_node("Slice", ["ms", "i1", "i2"], ["ns"]),
        helper.make_node("Concat", ["nb", "one", "ns", "ns"], ["shape4"], axis=0),
        helper.make_node("Expand", ["b4", "shape4"], ["bias"]),
    ]
    bias = "bias"
    if kind == "causal":
        inits.append(numpy_helper.from_array(np.triu(np.full((5, 5), -1e4, np.float32), 1), "tri"))
        nodes.append(helper.make_node("Add", ["bias", "tri"], ["bias2"]))
        bias = "bias2"
    elif kind == "input-dependent":
        nodes += [helper.make_node("ReduceMean", ["x"], ["xm"], keepdims=1),
                  helper.make_node("Unsqueeze", ["xm", "one"], ["xm4"]),
                  helper.make_node("Add", ["bias", "xm4"], ["bias2"])]
        bias = "bias2"
    nodes.append(helper.make_node("Attention", ["x", "wqkv", "bqkv", "", "", bias], ["y"], name="attn",
                                  domain="com.microsoft", num_heads=HEADS, qkv_hidden_sizes=[D, D, D]))
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", D]),
                           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", D])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def _feeds(seq: int = 5):
    rng = np.random.default_rng(1)
    mask = np.ones((3, seq), np.int64)
    mask[1, 3:] = 0   # padded at the end
    mask[2, :2] = 0   # padded at the start
    return {"x": rng.standard_normal((3, seq, D)).astype(np.float32), "attention_mask": mask}


def _real_rows(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return y[mask.astype(bool)]  # outputs at padded query positions are don't-care


def test_a_padding_bias_becomes_a_key_padding_mask_and_answers_the_same():
    before = _model()
    ref = make_session(before).run(_feeds())["y"]
    out, count = bias_to_key_padding_mask(onnx.load_from_string(before.SerializeToString()))
    assert count == 1
    attn = next(n for n in out.graph.node if n.op_type == "Attention")
    assert attn.input[3] == "attention_mask_int32" and len(attn.input) == 4
    unpacked, n_unpacked = unpack_attention(out)
    assert n_unpacked == 1
    mha = next(n for n in unpacked.graph.node if n.op_type == "MultiHeadAttention")
    assert mha.input[4] == "attention_mask_int32" and (len(mha.input) < 6 or not mha.input[5])
    assert not any(n.op_type in ("Where", "Expand") for n in unpacked.graph.node)  # the bias chain is gone
    onnx.checker.check_model(unpacked)
    feeds = _feeds()
    for model in (out, unpacked):
        got = make_session(model).run(feeds)["y"]
        np.testing.assert_allclose(_real_rows(got, feeds["attention_mask"]), _real_rows(ref, feeds["attention_mask"]),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, masked", [("causal", float("-inf")), ("input-dependent", float("-inf")),
                                          ("padding", -1.0)])
def test_any_other_bias_is_left_alone(kind, masked):
    before = _model(kind, masked).SerializeToString()
    out, count = bias_to_key_padding_mask(onnx.load_from_string(before))
    assert count == 0
    assert out.SerializeToString() == before


def test_a_model_without_a_mask_input_is_left_alone():
    m = _model()
    m.graph.input[1].name = "lengths"
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            if name == "attention_mask":
                n.input[i] = "lengths"
    before = m.SerializeToString()
    out, count = bias_to_key_padding_mask(onnx.load_from_string(before))
    assert count == 0 and out.SerializeToString() == before
