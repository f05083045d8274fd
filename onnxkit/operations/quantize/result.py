"""What quantize returns: its result, with the counts of quantized nodes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.operations.optimize import histogram_table
from onnxkit.operations.quantize.options import QUANT_OPS, WEIGHTED_OPS
from onnxkit.results import Result, Table, fmt_bytes, fmt_num

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult(Result):
    model: str = ""
    output: str = ""
    mode: str = ""
    format: str | None = None
    per_channel: bool | None = None
    weight_type: str | None = None
    reduce_range: bool = False
    target_cpu: dict[str, Any] | None = None
    calibration: str | None = None
    size_before: int = 0
    size_after: int = 0
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency_feeds: str = ""
    metric: str = "cosine"
    max_error: float | None = None
    error: dict[str, Any] | None = None
    error_first: dict[str, Any] | None = None
    eval_data: str = ""
    budget_met: bool | None = None
    nodes_quantized: int = 0
    quantized_ops: dict[str, int] = field(default_factory=dict)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    preprocess_notes: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        speed = (self.latency_ms_before / self.latency_ms_after) if self.latency_ms_before and self.latency_ms_after else None
        ratio = self.size_after / self.size_before if self.size_before else None
        e = self.error or {}
        rows = [
            ["file size", fmt_bytes(self.size_before), fmt_bytes(self.size_after) + (f" ({100 * ratio:.0f}%)" if ratio else "")],
            [f"latency CPU ({self.latency_feeds})", f"{fmt_num(self.latency_ms_before)} ms",
             f"{fmt_num(self.latency_ms_after)} ms" + (f" ({speed:.2f}x)" if speed else "")],
            ["nodes quantized", "-", self.nodes_quantized],
            ["nodes kept in float (excluded)", "-", len(self.excluded)],
            ["cosine vs float", "1", fmt_num(e.get("cosine"))],
            ["max abs diff vs float", "0", fmt_num(e.get("max_abs"))],
            ["label/top-1 agreement", "1", fmt_num(e.get("agreement"))],
        ]
        if self.max_error is not None:
            first = (self.error_first or {}).get("error")
            rows.append([f"error ({self.metric}) vs budget {fmt_num(self.max_error)}",
                         f"first try {fmt_num(first)}", f"{fmt_num(e.get('error'))} ({'met' if self.budget_met else 'MISSED'})"])
        head = f"quantize {Path(self.model).name} -> {Path(self.output).name} ({self.mode}" + \
            (f", {self.format}" if self.format else "") + (", per-channel" if self.per_channel else "") + ")"
        tables = [Table(head, ["", "float", "quantized"], rows)]
        if self.excluded:
            tables.append(Table("Kept in float", ["node", "op", "why"], [[x["node"], x.get("op", ""), x["reason"]] for x in self.excluded]))
        tables.append(histogram_table("Operators", self.ops_before, self.ops_after))
        return tables


def _quantized_count(model: Any) -> tuple[int, dict[str, int]]:
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    int_tables = {t.name for t in model.graph.initializer if t.data_type in (2, 3) and len(t.dims) == 2}  # UINT8, INT8
    hist: dict[str, int] = {}
    n_q = 0
    for n in model.graph.node:
        q = (n.op_type in QUANT_OPS
             or (n.op_type in WEIGHTED_OPS and any(produced_by.get(i) == "DequantizeLinear" for i in n.input))
             or (n.op_type == "Gather" and bool(n.input) and n.input[0] in int_tables))
        if q:
            n_q += 1
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return n_q, hist


def _fp16_count(model: Any) -> tuple[int, dict[str, int]]:
    # fp16: a node computes in half precision when its first float input is fp16. Subgraphs
    # count too: a model whose float work sits in If/Loop branches was "nothing quantized".
    from onnxkit.foundation.onnx_io import _iter_graphs

    graphs = list(_iter_graphs(model.graph))  # If branches, Loop and Scan bodies too
    types: dict[str, int] = {}
    for g in graphs:
        types.update({vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)})
        types.update({t.name: t.data_type for t in g.initializer})
    hist: dict[str, int] = {}
    for n in (n for g in graphs for n in g.node):
        if n.op_type != "Cast" and any(types.get(i) == 10 for i in n.input):
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return sum(hist.values()), hist
