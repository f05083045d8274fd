"""The roofline's other ceiling: the bytes of weights a call reads, at this machine's measured
memory bandwidth.

In the suite's interleaved timing each call follows other models, which have evicted its
weights from the caches, so every call reads them from memory again. At a small batch that
read can take as long as the GEMM work itself: MiniLM's int8 weights are about 11 MB. The
compute bound (roofline.bound) leaves this out; this module says how long the read takes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# Initializers read only through these inputs are gathered row by row (embedding tables):
# a call reads the rows it looks up, not the table.
_GATHERED = {("Gather", 0), ("GatherElements", 0), ("GatherND", 0)}


def weight_bytes(model: Any) -> int:
    """Bytes of the initializers a call reads, embedding tables left out. Initializers that
    feed a DequantizeLinear count at their stored (int8) size, as the kernels read them."""
    from onnx import numpy_helper

    uses: dict[str, set[tuple[str, int]]] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            uses.setdefault(name, set()).add((n.op_type, i))
    total = 0
    for init in model.graph.initializer:
        u = uses.get(init.name)
        if not u or u <= _GATHERED:
            continue
        # A Gather of a quantized table goes through DequantizeLinear after the gather, so the
        # table itself is still only read by the Gather.
        total += numpy_helper.to_array(init).nbytes if init.data_location != 1 else _external_size(init)
    return total


def _external_size(init: Any) -> int:
    import onnx

    n = int(np.prod(init.dims)) if init.dims else 1
    return n * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize


def read_bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """Bytes per second one thread reads from memory: the best of a few sums over an array
    many times the size of the last-level cache."""
    a = np.ones(mb * 1024 * 1024 // 8, dtype=np.float64)
    a.sum()  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best
