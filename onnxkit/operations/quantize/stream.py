"""Dynamic int8 quantization of a model over 2 GB, one weight at a time.

ONNX Runtime's ``quantize_dynamic`` loads the float model, then builds each quantized weight
beside its float original: 3.3x the model size at peak on a 2.1 GB model. Here the graph is
rewritten without its weights, and each weight is read from its external-data file in row
chunks, twice (column ranges, then the int8 values), and written straight into the output's
data file. No step holds more than one chunk of one weight.

What is quantized, as ``quantize_dynamic`` does with onnxkit's defaults (per-channel int8
weights, symmetric, MatMul with a constant weight only):
- ``MatMul(x, W)`` with a constant 2-D float32 ``W`` becomes com.microsoft
  ``DynamicQuantizeMatMul(x, W_int8, scale[N], zero_point[N])``; so does a plain
  ``Gemm(x, W, b)`` (transB allowed; the bias becomes the op's bias input);
- ``Gather(T, indices)`` on axis 0 of a constant 2-D float32 table becomes
  ``Gather(T_int8, indices)`` -> ``Cast`` -> ``Mul(Gather(row_scale, indices))``: one scale per
  row, since a row is what is read and rows of a table differ widely in range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from onnxkit.passes.large import CHUNK, save_streaming

MS_DOMAIN = "com.microsoft"


@dataclass
class StreamedQuantization:
    path: Path
    quantized: dict[str, str] = field(default_factory=dict)  # node name -> op it became
    skipped: dict[str, str] = field(default_factory=dict)    # node name -> why it stayed float


class _WeightReader:
    """Row chunks of one 2-D float32 initializer, from its external-data file or inline bytes."""

    def __init__(self, tensor: Any, base_dir: Path) -> None:
        from onnx.external_data_helper import uses_external_data

        self.rows, self.cols = (int(d) for d in tensor.dims)
        self.row_bytes = self.cols * 4
        self.inline: bytes | None = None
        self.file: Path | None = None
        self.offset = 0
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            self.file = base_dir / info["location"]
            self.offset = int(info.get("offset", 0) or 0)
        elif tensor.HasField("raw_data"):
            self.inline = tensor.raw_data
        else:
            from onnx import numpy_helper

            self.inline = numpy_helper.to_array(tensor).astype("<f4").tobytes()

    def chunks(self) -> Any:
        step = max(1, CHUNK // max(self.row_bytes, 1))
        if self.inline is not None:
            whole = np.frombuffer(self.inline, dtype="<f4").reshape(self.rows, self.cols)
            for start in range(0, self.rows, step):
                yield whole[start:start + step]
            return
        with open(self.file, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(self.offset)
            for start in range(0, self.rows, step):
                n = min(step, self.rows - start)
                buf = fh.read(n * self.row_bytes)
                if len(buf) != n * self.row_bytes:
                    raise OSError(f"short read in the external data of a {self.rows}x{self.cols} weight")
                yield np.frombuffer(buf, dtype="<f4").reshape(n, self.cols)


def _scales(absmax: np.ndarray, qmax: int) -> np.ndarray:
    scale = (absmax / np.float32(qmax)).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero channel: any scale represents it exactly
    return scale


def _int8_by_column(reader: _WeightReader, qmax: int) -> tuple[np.ndarray, Callable[[BinaryIO], int]]:
    """W [K, N] with one scale per column (output channel): a pass for the ranges, then the
    writer quantizes chunk by chunk straight into the data file."""
    absmax = np.zeros(reader.cols, dtype=np.float32)
    for chunk in reader.chunks():
        np.maximum(absmax, np.abs(chunk).max(axis=0), out=absmax)
    scale = _scales(absmax, qmax)

    def write(out: BinaryIO) -> int:
        written = 0
        for chunk in reader.chunks():
            q = np.clip(np.rint(chunk / scale), -qmax, qmax).astype(np.int8)
            out.write(q.tobytes())
            written += q.nbytes
        return written

    return scale, write


def _row_absmax(reader: _WeightReader) -> np.ndarray:
    absmax = np.empty(reader.rows, dtype=np.float32)
    start = 0
    for chunk in reader.chunks():
        absmax[start:start + len(chunk)] = np.abs(chunk).max(axis=1)
        start += len(chunk)
    return absmax


def _int8_by_row(reader: _WeightReader, qmax: int) -> tuple[np.ndarray, Callable[[BinaryIO], int]]:
    """An embedding table [rows, D] with one scale per row: a row is what Gather reads, and
    rows of one table can differ in range by orders of magnitude."""
    scale = _scales(_row_absmax(reader), qmax)

    def write(out: BinaryIO) -> int:
        written, pos = 0, 0
        for chunk in reader.chunks():
            q = np.clip(np.rint(chunk / scale[pos:pos + len(chunk), None]), -qmax, qmax).astype(np.int8)
            out.write(q.tobytes())
            written += q.nbytes
            pos += len(chunk)
        return written

    return scale, write


def _int8_by_row_transposed(reader: _WeightReader, qmax: int) -> tuple[np.ndarray, Callable[[BinaryIO], int]]:
    """Gemm(transB=1): W is [N, K], output channels are rows; the int8 weight must be [K, N].
    The transpose is assembled in memory (a quarter of W's bytes), then written."""
    scale = _scales(_row_absmax(reader), qmax)

    def write(out: BinaryIO) -> int:
        q = np.empty((reader.cols, reader.rows), dtype=np.int8)
        pos = 0
        for chunk in reader.chunks():
            rows = slice(pos, pos + len(chunk))
            q[:, rows] = np.clip(np.rint(chunk / scale[rows, None]), -qmax, qmax).astype(np.int8).T
            pos += len(chunk)
        out.write(q.tobytes())
        return q.nbytes

    return scale, write


def _placeholder(name: str, dims: list[int], data_type: int) -> Any:
    """An initializer whose bytes ``save_streaming`` will get from a writer."""
    from onnx import TensorProto

    t = TensorProto()
    t.name, t.data_type = name, data_type
    t.dims.extend(dims)
    return t


def _rewire(model: Any, nodes: list[Any], replaced: set[str], new_inits: list[Any]) -> None:
    """Put the new nodes in, drop the float weights nothing reads any more, add the int8 ones."""
    from onnx import helper

    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    # A subgraph (If/Loop body) may read an outer initializer without listing it: keep them all.
    if any(a.type in (5, 10) for node in graph.node for a in node.attribute):  # GRAPH, GRAPHS
        still_read |= replaced
    keep = [t for t in graph.initializer if t.name not in replaced or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    if any(n.domain == MS_DOMAIN for n in graph.node) and not any(i.domain == MS_DOMAIN for i in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def quantize_dynamic_streaming(model: Any, base_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                               exclude: set[str] | frozenset[str] = frozenset(), reduce_range: bool = False) -> StreamedQuantization:
    """Quantize ``model`` (graph only; its external tensors resolve in ``base_dir``) into
    ``dest`` + ``<dest>.data``. The proto is edited in place. ``reduce_range``: 7-bit weights
    (for CPUs without VNNI, whose u8 x s8 kernels saturate)."""
    from onnx import TensorProto, helper, numpy_helper

    base = Path(base_dir)
    # 7-bit weights only where they feed the u8 x s8 GEMM kernels; a gathered table is
    # dequantized by DequantizeLinear, which has no such limit.
    gemm_qmax = 64 if reduce_range else 127
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    result = StreamedQuantization(Path(dest))
    writers: dict[str, Callable[[BinaryIO], int]] = {}
    new_inits: list[Any] = []
    nodes: list[Any] = []
    replaced: set[str] = set()

    def quantizable(name: str) -> str | None:
        t = inits.get(name)
        if t is None:
            return "weight is not a constant"
        if t.data_type != TensorProto.FLOAT or len(t.dims) != 2 or 0 in t.dims:
            return "weight is not a non-empty 2-D float32 constant"
        return None

    def quantize_weight(name: str, *, transposed: bool = False, qmax: int = 127) -> tuple[str, str, str]:
        """int8 [K, N] weight, scale [N], zero point [N]; from W [K, N] or, transposed, [N, K]."""
        t = inits[name]
        reader = _WeightReader(t, base)
        suffix = ("_t" if transposed else "") + ("" if qmax == 127 else f"_q{qmax}")
        qname, sname, zname = f"{name}{suffix}_int8", f"{name}{suffix}_scale", f"{name}{suffix}_zero_point"
        if qname not in writers:
            make = _int8_by_row_transposed if transposed else _int8_by_column
            scale, writers[qname] = make(reader, qmax)
            dims = [reader.cols, reader.rows] if transposed else [reader.rows, reader.cols]
            new_inits.append(_placeholder(qname, dims, TensorProto.INT8))
            new_inits.append(numpy_helper.from_array(scale.astype(np.float32), sname))
            new_inits.append(numpy_helper.from_array(np.zeros(dims[1], np.int8), zname))
        return qname, sname, zname

    def plain_gemm(node: Any) -> str | None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return "Gemm with transA, alpha or beta"
        if len(node.input) > 2 and node.input[2]:
            bias = inits.get(node.input[2])
            n_out = inits[node.input[1]].dims[0 if attrs.get("transB", 0) else 1]
            if bias is None or list(bias.dims) != [n_out] or bias.data_type != TensorProto.FLOAT:
                return "Gemm bias is not a constant float vector"
        return None

    for node in graph.node:
        dom = node.domain or ""
        if node.op_type in ("MatMul", "Gemm") and dom in ("", "ai.onnx") and node.name not in exclude:
            gemm = node.op_type == "Gemm"
            why = quantizable(node.input[1]) or (plain_gemm(node) if gemm else None)
            if why is None:
                transposed = gemm and any(a.name == "transB" and a.i for a in node.attribute)
                q, s, z = quantize_weight(node.input[1], transposed=transposed, qmax=gemm_qmax)
                bias = [node.input[2]] if gemm and len(node.input) > 2 and node.input[2] else []
                nodes.append(helper.make_node("DynamicQuantizeMatMul", [node.input[0], q, s, z, *bias], list(node.output),
                                              name=f"{node.name}_quant", domain=MS_DOMAIN))
                result.quantized[node.name] = "DynamicQuantizeMatMul"
                replaced.add(node.input[1])
                continue
            result.skipped[node.name] = why
        elif node.op_type == "Gather" and dom in ("", "ai.onnx") and node.name not in exclude:
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
            why = quantizable(node.input[0])
            if why is None and axis != 0:
                why = "gathers along an axis other than 0"
            if why is None:
                qname, sname = f"{node.input[0]}_int8_rows", f"{node.input[0]}_row_scale"
                if qname not in writers:  # a table read by several Gathers is quantized once
                    reader = _WeightReader(inits[node.input[0]], base)
                    scale, writers[qname] = _int8_by_row(reader, 127)
                    new_inits.append(_placeholder(qname, [reader.rows, reader.cols], TensorProto.INT8))
                    new_inits.append(numpy_helper.from_array(scale.reshape(-1, 1), sname))
                out = node.output[0]
                nodes.append(helper.make_node("Gather", [qname, node.input[1]], [f"{out}_int8"], name=f"{node.name}_quant", axis=0))
                nodes.append(helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{node.name}_cast",
                                              to=TensorProto.FLOAT))
                nodes.append(helper.make_node("Gather", [sname, node.input[1]], [f"{out}_scale"], name=f"{node.name}_scale", axis=0))
                nodes.append(helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node.name}_dequant"))
                result.quantized[node.name] = "Gather (int8 rows) + Mul(row scale)"
                replaced.add(node.input[0])
                continue
            result.skipped[node.name] = why
        nodes.append(node)
    _rewire(model, nodes, replaced, new_inits)
    save_streaming(model, base, dest, produce=writers)
    return result
