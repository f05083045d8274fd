"""A benchmark sets the source framework's thread count to match ONNX Runtime's; used as a
library, it must put the process-wide settings back when it is done."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper


def _model(path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


class _Source:
    """The least a bench source needs: its framework's name and a predict."""

    def __init__(self, framework):
        self.framework = framework
        self.input_specs = []

    def predict(self, feeds):
        return {"y": np.maximum(feeds["x"], 0)}


def test_torch_threads_are_restored_after_bench(tmp_path):
    import torch

    from onnxkit.runtime.bench import bench_models

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    feeds = {2: {"x": np.ones((2, 4), np.float32)}}
    res = bench_models([_model(tmp_path / "m.onnx")], feeds, threads=wanted, warmup=1, iterations=3,
                       source=_Source("torch"))
    assert any(e.is_source for e in res.entries)
    assert torch.get_num_threads() == before


def test_blas_pools_are_restored_after_bench(tmp_path):
    from threadpoolctl import threadpool_info

    from onnxkit.runtime.bench import bench_models

    before = [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]
    assert before, "no BLAS/OpenMP pool loaded: the test would check nothing"
    wanted = 2 if all(n == 1 for _, n in before) else 1  # a count that changes something
    feeds = {2: {"x": np.ones((2, 4), np.float32)}}
    bench_models([_model(tmp_path / "m.onnx")], feeds, threads=wanted, warmup=1, iterations=3, source=_Source("sklearn"))
    assert [(p["internal_api"], p["num_threads"]) for p in threadpool_info()] == before


def test_thread_probe_restores_torch_threads(tmp_path):
    import torch

    from onnxkit.runtime.threads_probe import probe_threads

    before = torch.get_num_threads()
    torch.set_num_threads(3)  # none of the probed counts
    try:
        probe_threads([_model(tmp_path / "m.onnx")], ["m"], {"x": np.ones((2, 4), np.float32)}, source=_Source("torch"),
                      source_name="src", counts=[1, 2])
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
