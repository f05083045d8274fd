"""Working on models over the protobuf limit without holding their weights.

A large model is handled as a graph-only ``ModelProto`` (external tensors stay references)
plus the folder its references resolve in. Tools that need the weights get a file path
(ONNX Runtime maps external data instead of copying it); tools that serialize the whole
model into one protobuf (onnxoptimizer, onnxscript's deserialize/serialize round trip,
SerializeToString for an in-memory session) are not run on it. Writing copies tensor bytes
in chunks, so no step holds more than one chunk of weights in Python.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

# Bytes copied per read/write while streaming tensor data between files.
CHUNK = 16 << 20
# ONNX Runtime maps external data only when the tensor's offset is page-aligned (else it
# reads it into its own buffer); 64 KiB covers every page size it runs on. Smaller tensors
# are not worth the padding: they are read, not mapped, and only get 64-byte alignment.
ALIGN = 64 << 10
ALIGN_FROM = 1 << 20
SMALL_ALIGN = 64
# Tensors this small stay inside the .onnx file.
INLINE_MAX = 1024


def is_large(model: Any) -> bool:
    """Whether ``model`` (graph-only or not) needs the large-model path: its tensors,
    counted from their shapes, exceed the threshold at which files get external data."""
    from onnxkit.foundation import onnx_io

    # Read at call time: tests lower the threshold to exercise this path on small models.
    return onnx_io.model_size_bytes(model) > onnx_io.EXTERNAL_DATA_THRESHOLD


def _external_info(tensor: Any) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _copy_range(src: Any, dst: Any, offset: int, length: int) -> None:
    src.seek(offset)
    left = length
    while left > 0:
        buf = src.read(min(CHUNK, left))
        if not buf:
            raise OSError(f"short read: {left} bytes missing")
        dst.write(buf)
        left -= len(buf)


def _tensors(graph: Any) -> Any:
    """(tensor, movable): initializers may move to the data file; tensors inside node
    attributes keep their place (not every runtime reads external data there), but one that
    already is external is copied like the rest."""
    for t in graph.initializer:
        yield t, True
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t, False
            for t in attr.tensors:
                yield t, False
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def save_streaming(model: Any, base_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                   produce: dict[str, Callable[[BinaryIO], int]] | None = None) -> Path:
    """Write ``model`` to ``dest`` with every tensor over 1 KiB in ``<dest>.data``.

    Tensors that are external references (resolved in ``base_dir``) are copied in chunks;
    inline ones are moved out. ``produce`` maps the names of placeholder tensors (dims and
    type, no data) to writers that stream their bytes into the data file and return the
    count: a tensor computed from another one is never held whole. The proto is edited in place (it ends up pointing at the new
    data file), which is what callers want: it describes ``dest`` afterwards. Both files are
    written atomically, data first."""
    import numpy as np
    from onnx import TensorProto, external_data_helper, numpy_helper

    from onnxkit.foundation.files import atomic_output

    dest = Path(dest)
    base = Path(base_dir)
    data_name = dest.name + ".data"
    handles: dict[str, Any] = {}
    try:
        with atomic_output(dest) as tmp_model, atomic_output(dest.parent / data_name) as tmp_data:
            with open(tmp_data, "wb") as out:
                pos = 0
                for t, movable in _tensors(model.graph):
                    if produce and t.name in produce:
                        from onnxkit.foundation.onnx_io import _tensor_nbytes

                        length = _tensor_nbytes(t)
                        pad = (-pos) % (ALIGN if length >= ALIGN_FROM else SMALL_ALIGN)
                        out.write(b"\0" * pad)
                        pos += pad
                        written = produce[t.name](out)
                        if written != length:
                            raise OSError(f"tensor {t.name}: {written} bytes written, {length} expected")
                    elif external_data_helper.uses_external_data(t):
                        info = _external_info(t)
                        loc = info["location"]
                        length = int(info.get("length", 0) or 0)
                        if not length:
                            from onnxkit.foundation.onnx_io import _tensor_nbytes

                            length = _tensor_nbytes(t)
                        fh = handles.get(loc)
                        if fh is None:
                            fh = handles[loc] = open(base / loc, "rb")  # noqa: SIM115 - closed below
                        pad = (-pos) % (ALIGN if length >= ALIGN_FROM else SMALL_ALIGN)
                        out.write(b"\0" * pad)
                        pos += pad
                        _copy_range(fh, out, int(info.get("offset", 0) or 0), length)
                    else:
                        if not movable or t.data_type == TensorProto.STRING:
                            continue
                        raw = t.raw_data if t.HasField("raw_data") else None
                        if raw is None:
                            arr = numpy_helper.to_array(t)
                            if arr.nbytes <= INLINE_MAX:
                                continue
                            raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
                        if len(raw) <= INLINE_MAX:
                            continue
                        length = len(raw)
                        pad = (-pos) % (ALIGN if length >= ALIGN_FROM else SMALL_ALIGN)
                        out.write(b"\0" * pad)
                        pos += pad
                        out.write(raw)
                        # Drop the bytes from the proto at once: they are on disk now.
                        name, dims, dtype = t.name, list(t.dims), t.data_type
                        t.Clear()
                        t.name, t.data_type = name, dtype
                        t.dims.extend(dims)
                    del t.external_data[:]
                    t.data_location = TensorProto.EXTERNAL
                    for k, v in (("location", data_name), ("offset", str(pos)), ("length", str(length))):
                        e = t.external_data.add()
                        e.key, e.value = k, v
                    pos += length
                out.flush()
                os.fsync(out.fileno())
            with open(tmp_model, "wb") as fh_model:
                fh_model.write(model.SerializeToString())  # graph only: the weights are in the data file
    finally:
        for fh in handles.values():
            fh.close()
    return dest


def load_graph(path: str | os.PathLike[str]) -> Any:
    """A file we wrote ourselves (ORT's or a quantizer's output), graph only."""
    import onnx

    return onnx.load(str(path), load_external_data=False)


def ort_optimize_file(src: str | os.PathLike[str], dest: str | os.PathLike[str], level: str) -> None:
    """ONNX Runtime offline optimization from a path to a path, weights to ``<dest>.data``."""
    from onnxkit.runtime.session import make_session

    session = make_session(
        src, level=level, optimized_model_path=str(dest),
        session_config={
            "session.optimized_model_external_initializers_file_name": Path(dest).name + ".data",
            "session.optimized_model_external_initializers_min_size_in_bytes": str(INLINE_MAX),
        },
    )
    del session
    gc.collect()


def sequential_latency(paths: list[str], feeds: dict, *, rounds: int = 10, warmup: int = 2, threads: int | None = None) -> list[float]:
    """Median milliseconds per run of each model, one session alive at a time: two sessions
    of a large model would hold its weights twice."""
    from onnxkit.foundation.data import feeds_rows
    from onnxkit.runtime.bench import bench_models

    batch = feeds_rows(feeds)
    out = []
    for p in paths:
        res = bench_models([p], {batch: feeds}, iterations=rounds, warmup=warmup, threads=threads, names=["m"])
        out.append(res.entry("m", batch).stats.p50_ms)
        del res
        gc.collect()
    return out


class Replay:
    """Outputs of one model recorded on a first pass over the inputs and played back on a
    second, so that two large models are compared with one session alive at a time. The
    inputs must come back in the same order, which seeded random inputs and files do."""

    def __init__(self, predict: Any) -> None:
        self.predict: Any = predict
        self.outputs: list[dict] = []
        self.i = 0

    def record(self, feeds: dict) -> dict:
        out = self.predict(feeds)
        self.outputs.append(out)
        return out

    def play(self, feeds: dict) -> dict:
        out = self.outputs[self.i]
        self.i += 1
        return out


__all__ = ["is_large", "save_streaming", "load_graph", "ort_optimize_file", "sequential_latency", "Replay"]
