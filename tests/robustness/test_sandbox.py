"""run_isolated: every way a child can end becomes one onnxkit error."""

from __future__ import annotations

import time

import numpy as np
import pytest

from onnxkit.foundation.sandbox import run_isolated
from onnxkit.runtime.contained import run_onnx_isolated
from onnxkit.errors import InputError, UnsafeInput

from . import _payloads as p


def test_returns_result():
    assert run_isolated(p.add, 2, 3, timeout_s=60) == 5


def test_segfault_is_contained():
    with pytest.raises(InputError) as ei:
        run_isolated(p.segfault, timeout_s=60, what="model evil.onnx")
    assert str(ei.value) == "model evil.onnx crashed its parser/runtime (signal SIGSEGV); the file is corrupt or hostile"


def test_timeout_kills_child():
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"took longer than 2 s"):
        run_isolated(p.sleep_forever, timeout_s=2)
    assert time.monotonic() - t0 < 20


def test_memory_limit():
    with pytest.raises(InputError, match=r"needed more than 1024 MB"):
        run_isolated(p.allocate, 4096, timeout_s=60, memory_mb=1024)


def test_memory_limit_allows_small():
    assert run_isolated(p.allocate, 8, timeout_s=60, memory_mb=2048) == 8 * 1024 * 1024


def test_onnxkit_error_keeps_type_and_message():
    with pytest.raises(InputError) as ei:
        run_isolated(p.raise_input_error, "no such tensor", timeout_s=60)
    assert type(ei.value) is InputError
    assert ei.value.message == "no such tensor" and ei.value.hint == "a hint"
    with pytest.raises(UnsafeInput, match="^refused$"):
        run_isolated(p.raise_unsafe, "refused", timeout_s=60)


def test_other_exception_is_one_line():
    with pytest.raises(InputError) as ei:
        run_isolated(p.raise_value_error, timeout_s=60, what="model m.onnx")
    assert str(ei.value) == "model m.onnx: ValueError: bad thing happened"


def test_run_onnx_isolated(linear_onnx):
    x = np.ones((2, 4), np.float32)
    out = run_onnx_isolated(linear_onnx, {"x": x}, timeout_s=120)
    assert out["y"].shape == (2, 3)
    from onnxkit.runtime.session import make_session

    np.testing.assert_allclose(out["y"], make_session(str(linear_onnx)).run({"x": x})["y"])


def test_ctrl_c_kills_child(tmp_path, sigint_raises):
    import os
    import signal
    import threading

    from onnxkit.errors import Interrupted

    pidfile = tmp_path / "pid"

    def interrupt_when_started():
        for _ in range(600):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    with pytest.raises(Interrupted):
        run_isolated(p.sleep_with_pidfile, str(pidfile), timeout_s=60)
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_dynamic_huge_allocation_contained_by_memory_limit(tmp_path):
    """A shape computed at run time cannot be checked statically; the memory limit holds."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        "dyn", [helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    small = run_onnx_isolated(path, {"s": np.array([2, 3], np.int64)}, timeout_s=120, memory_mb=1536)
    assert small["y"].shape == (2, 3)
    with pytest.raises(InputError) as ei:
        run_onnx_isolated(path, {"s": np.array([2**16, 2**16], np.int64)}, timeout_s=120, memory_mb=1536)
    assert "\n" not in str(ei.value)
