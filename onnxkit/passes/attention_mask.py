"""An attention bias that only masks padded keys, read as the 2-D key padding mask it is.

torch.export writes BERT's padding mask as a float bias [batch, 1, seq, seq] (Where(mask, 0,
-inf) after a GatherND/Expand chain), and onnxscript's fuser passes it to Attention as
``attention_bias``. ONNX Runtime's CPU attention then adds a full seq x seq bias per head;
given the same information as a [batch, seq] key padding mask it builds that row once
(measured on all-MiniLM-L6-v2, dynamic int8, 1 thread, this repo's AVX-512 VNNI host:
3% faster at batch 8 x seq 128, 2-8% at batch 1 x seq 32; a lone MultiHeadAttention at
[8, 128, 384]: 2.7 vs 2.9 ms). Only Attention (com.microsoft) with qkv_hidden_sizes is left
in float by the quantizer and then unpacked; this pass prepares it for that.

Whether a bias is a key padding mask is decided by running the graph that computes it on
probe masks (several batch sizes, lengths and padding patterns, other inputs varied too):
the bias must be 0 at every kept key and at most -10000 at every padded one, for every query
row, and depend on nothing but the mask. Anything else is left alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# ONNX Runtime's mask_filter_value default: exp(-10000 - max) is 0 in float32, as -inf is.
_MASKED_AT_MOST = -1e4
_PROBES = ((2, 5, 0), (3, 7, 1), (1, 4, 2))  # (batch, seq, seed)


def _mask_input(model: Any) -> Any | None:
    """The graph input that reads as an attention mask: 2-D, integer or bool, named *mask*."""
    from onnx import TensorProto

    ints = {TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL, TensorProto.INT8, TensorProto.UINT8}
    hits = [i for i in model.graph.input if "mask" in i.name.lower() and i.type.tensor_type.elem_type in ints
            and len(i.type.tensor_type.shape.dim) == 2]
    return hits[0] if len(hits) == 1 else None


def _probe_feeds(model: Any, mask_name: str, batch: int, seq: int, seed: int) -> dict[str, np.ndarray] | None:
    """Feeds for every graph input, the mask's [batch, seq] carried to every input dimension
    of the same name: random values, and a mask with a different padding per row (row 0
    unpadded, at least one kept key per row). None when an input has a size this cannot tell."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    mask = next(i for i in model.graph.input if i.name == mask_name)
    sizes: dict[str, int] = {}
    for d, want in zip(mask.type.tensor_type.shape.dim, (batch, seq)):
        if d.HasField("dim_value"):
            return None  # a fixed-shape mask: probing other lengths would not run
        if d.dim_param:
            sizes[d.dim_param] = want
    feeds: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        shape = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif inp.name == mask_name:
                shape.append((batch, seq)[i])
            elif d.dim_param in sizes:
                shape.append(sizes[d.dim_param])
            else:
                return None
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if inp.name == mask_name:
            keep = rng.integers(1, seq + 1, size=batch)
            keep[0] = seq
            m = np.arange(seq)[None, :] < keep[:, None]
            m[1::2] = m[1::2][:, ::-1]  # padding at the end (tokenizers) and, on odd rows, at the start
            feeds[inp.name] = m.astype(dtype)
        elif dtype == np.bool_:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def is_key_padding_bias(model: Any, bias: str, mask_name: str) -> bool:
    """Whether tensor ``bias`` is, for every probe, 0 at the kept keys and <= -10000 at the
    padded ones, the same for every query row."""
    import onnx

    from onnxkit.errors import OnnxkitError
    from onnxkit.runtime.session import make_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.ValueInfoProto(name=bias))
    try:
        session = make_session(probe)
    except OnnxkitError as exc:
        log.debug("attention bias probe does not load: %s", exc)
        return False
    for batch, seq, seed in _PROBES:
        feeds = _probe_feeds(model, mask_name, batch, seq, seed)
        if feeds is None:
            return False
        try:
            got = next(iter(session.run(feeds).values()))
        except OnnxkitError as exc:
            log.debug("attention bias probe failed: %s", exc)
            return False
        got = np.asarray(got)
        if got.ndim != 4 or got.shape[0] != batch or got.shape[1] != 1 or got.shape[-1] != seq:
            return False
        keep = feeds[mask_name].astype(bool)[:, None, None, :]
        keep = np.broadcast_to(keep, got.shape)
        if not (np.all(got[keep] == 0) and np.all(got[~keep] <= _MASKED_AT_MOST)):
            return False
    return True


def bias_to_key_padding_mask(model: Any) -> tuple[Any, int]:
    """Give Attention nodes whose ``attention_bias`` is a key padding mask that mask as
    ``mask_index`` [batch, seq] int32 instead; returns the model and how many were rewritten."""
    from onnx import TensorProto, helper

    mask = _mask_input(model)
    if mask is None:
        return model, 0
    checked: dict[str, bool] = {}
    targets = []
    for n in model.graph.node:
        if n.op_type != "Attention" or n.domain != "com.microsoft" or len(n.input) < 6 or not n.input[5]:
            continue
        if n.input[3] or n.input[4] or any(a.name == "unidirectional" and a.i for a in n.attribute):
            continue
        bias = n.input[5]
        if bias not in checked:
            checked[bias] = is_key_padding_bias(model, bias, mask.name)
        if checked[bias]:
            targets.append(n)
    if not targets:
        return model, 0
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input} \
        | {t.name for t in model.graph.initializer}
    name, i = f"{mask.name}_int32", 1
    while name in taken:
        name, i = f"{mask.name}_int32_{i}", i + 1
    cast = helper.make_node("Cast", [mask.name], [name], name=name + "_Cast", to=TensorProto.INT32)
    for n in targets:
        ins = list(n.input)
        ins[3], ins[5] = name, ""
        while ins and not ins[-1]:
            ins.pop()
        del n.input[:]
        n.input.extend(ins)
    model.graph.node.insert(0, cast)
    return model, len(targets)
