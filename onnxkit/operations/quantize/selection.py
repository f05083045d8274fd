"""Which nodes a quantization touches: --exclude-nodes/--exclude-ops matching, and the names
that survive pre-processing."""

from __future__ import annotations

import ast
import fnmatch
import math
import logging
from typing import Any

from onnxkit.errors import UsageError

log = logging.getLogger(__name__)


def source_layers(node: Any) -> list[str]:
    """The framework module paths a node came from: torch.export records them in
    ``pkg.torch.onnx.name_scopes``; TorchScript exports in node names like
    ``/encoder/layer.0/output/dense/MatMul``."""
    out: list[str] = []
    for p in node.metadata_props:
        if p.key.endswith("name_scopes"):
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                continue
            # the last entry is the FX node itself, not a module
            out.extend(s for s in scopes[:-1] if s)
    if node.name.startswith("/") and node.name.count("/") >= 2:
        parts = node.name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.append(".".join(parts[:i]))
    return out


def _layer_matches(pattern: str, layer: str) -> bool:
    # A wrapper module adds a prefix (``m.encoder...``); the user names the inner module.
    return layer == pattern or layer.endswith("." + pattern) or fnmatch.fnmatchcase(layer, pattern) \
        or fnmatch.fnmatchcase(layer, "*." + pattern)


def select_nodes(model: Any, patterns: list[str], *, what: str = "--exclude-nodes") -> dict[str, list[str]]:
    """pattern -> node names. A pattern is a node name, a glob over node names, or a source
    layer name (exact, suffix or glob). One that matches nothing is an error."""
    found: dict[str, list[str]] = {}
    nodes = list(model.graph.node)
    layers = {n.name: source_layers(n) for n in nodes}
    for pat in patterns:
        hits = [n.name for n in nodes if n.name == pat or fnmatch.fnmatchcase(n.name, pat)]
        if not hits:
            hits = [n.name for n in nodes if any(_layer_matches(pat, lay) for lay in layers[n.name])]
        if not hits:
            raise UsageError(f"{what} pattern {pat!r} matches no node (by node name, glob or source layer)",
                             hint="see node names with `onnxkit inspect`")
        found[pat] = hits
    return found


def select_ops(model: Any, ops: list[str]) -> dict[str, list[str]]:
    present = {n.op_type for n in model.graph.node}
    out: dict[str, list[str]] = {}
    for op in ops:
        if op not in present:
            raise UsageError(f"--exclude-ops {op!r} matches no node; the model's ops are: {', '.join(sorted(present))}")
        out[op] = [n.name for n in model.graph.node if n.op_type == op]
    return out


def map_to_prepared(original: Any, prepared: Any, names: list[str]) -> list[str]:
    """Names in the prepared graph of the given original nodes: the same name where it
    survived, else the node that now produces the same output tensor."""
    have = {n.name for n in prepared.graph.node}
    producer = {o: n.name for n in prepared.graph.node for o in n.output}
    outputs = {n.name: list(n.output) for n in original.graph.node}
    out: list[str] = []
    for name in names:
        if name in have:
            hit = name
        else:
            hit = next((producer[o] for o in outputs.get(name, []) if o in producer), None)
        if hit and hit not in out:
            out.append(hit)
    return out


def _name_nodes(model: Any) -> None:
    # Quantizers select nodes by name; unnamed nodes could neither be excluded nor reported.
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def _has_weight(node: Any, weights: set[str]) -> bool:
    # Only nodes with a constant weight are quantized (MatMulConstBOnly); activation x
    # activation MatMuls (attention scores) stay float whatever the budget says.
    return any(i in weights for i in node.input)


def left_in_float(base: Any, qmodel: Any) -> set[str]:
    """Names of ``base`` nodes that the quantizer passed through untouched (same name, op and
    inputs in ``qmodel``). ORT skips some weighted nodes on its own: an Attention with
    qkv_hidden_sizes (as the onnxscript BERT fuser writes it) never becomes QAttention."""
    out = {n.name: (n.domain or "", n.op_type, tuple(n.input)) for n in qmodel.graph.node if n.name}
    return {n.name for n in base.graph.node if n.name and out.get(n.name) == (n.domain or "", n.op_type, tuple(n.input))}


# A convolution this shallow (input channels x kernel area) gains little from int8 GEMMs and
# pays for quantizing the full-resolution input: residual CNN at 3x64x64 (K = 27), static int8,
# 1 thread, AVX-512 VNNI, batch 8: 4.12x -> 4.28x eager with the stem in float.
STEM_MAX_DEPTH = 32


def stem_conv(model: Any) -> str | None:
    """The name of a Conv that reads a graph input directly and is shallow (<= STEM_MAX_DEPTH
    multiplies per output), as quantize names nodes; None when there is none or several."""
    _name_nodes(model)
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    hits = [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs
            and len(dims.get(n.input[1], [])) >= 3 and math.prod(dims[n.input[1]][1:]) <= STEM_MAX_DEPTH]
    return hits[0] if len(hits) == 1 else None
