"""Shared test helpers: run the CLI in-process and capture what a user would see."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

# One BLAS thread for the test process and the workers it starts (set before numpy loads):
# on a 2-core CI runner, OpenBLAS's spinning pool competed with ONNX Runtime's and torch's
# own threads in the same process and made numpy-heavy tests several times slower (an RFE
# fit went from 0.4 s to 2.8 s). No test measures BLAS itself; bench sizes a source's pool
# with threadpoolctl regardless, and Ray actors set their own share.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"CliRun(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


def run_cli(*args: str | Path) -> CliRun:
    """Invoke `onnxkit ARGS...` in this process, as the console script would."""
    from onnxkit.cli import app as app_mod
    from onnxkit.cli import common

    common.STATE.verbose = common.STATE.quiet = common.STATE.json = False
    app_mod._register()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = common.invoke(app_mod.app, [str(a) for a in args], prog="onnxkit")
    return CliRun(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


def make_linear_onnx(path: Path, *, in_features: int = 4, out_features: int = 3, seed: int = 0, opset: int = 17) -> Path:
    """A tiny real model (Gemm + Relu, dynamic batch) built with onnx.helper, no framework."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_features, in_features)).astype(np.float32)
    b = rng.standard_normal(out_features).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc"),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_features])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnxkit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def linear_onnx(tmp_path_factory) -> Path:
    return make_linear_onnx(tmp_path_factory.mktemp("linear") / "linear.onnx")


@pytest.fixture
def sigint_raises():
    """Ctrl-C as a terminal delivers it. A test run started in the background by a
    non-interactive shell (`cmd &` in a CI script) inherits SIGINT ignored, and a test that
    interrupts itself would then wait for a KeyboardInterrupt that never comes."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def t5_folder(tmp_path_factory) -> Path:
    """The tiny T5 folder of test_hf_seq2seq, saved once for every module that reads it."""
    pytest.importorskip("transformers")
    from test_hf_seq2seq import tiny_t5

    return tiny_t5(tmp_path_factory.mktemp("t5") / "t5")


@pytest.fixture(scope="session")
def t5_exported(t5_folder):
    """``(run, out)``: t5_folder exported once to ``out`` beside it, validated with 6 generated
    tokens. An encoder-decoder export is among the slowest steps of the suite, and the modules
    that use it only read it (or copy it). The source is checked unchanged here."""
    from test_hf_folders import snapshot

    before = snapshot(t5_folder)
    out = t5_folder.parent / "out"
    r = run_cli("export", t5_folder, "-o", out, "--generate", "6", "--json")
    assert snapshot(t5_folder) == before
    return r, out


def make_runaway_onnx(path: Path) -> Path:
    """A model whose output shape is computed at run time from its input's shape: 2^38
    floats (1 TiB) for any batch. No static check can see it; only containment can."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Mul", ["s", "k"], ["big"]),
            helper.make_node("ConstantOfShape", ["big"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        ],
        "runaway",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([2**20, 2**18], np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (2 CPUs, a small object store, no dashboard,
    Ray's token authentication: its servers cannot be bound to loopback alone), shut down at
    the end. onnxkit's --engine ray uses a Ray already running in
    the process instead of starting its own, so tests pay Ray's start-up once."""
    ray = pytest.importorskip("ray")
    import logging

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, object_store_memory=200 << 20, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


# --------------------------------------------------------------------------- slow tests
# A whole-suite run (the README's test command, .ci/run) takes every fast test and one slow
# test per family, so it stays within the ten minutes CI allows; `--slow all` runs every slow
# test, `--slow none` none. A run that names files or tests runs what it names.
SLOW_SUBSET = (
    "tests/test_hf_generate.py::test_llama_folder_exports_with_cache_and_decodes_like_generate",
    "tests/test_hf_minilm.py::test_minilm_folder_matches_sentence_transformers_encode",
    "tests/test_hf_seq2seq.py::test_t5_exports_optimum_files_and_decodes_like_generate",
    "tests/test_hf_vision.py::test_perturbed_classifier_fails_validation",
    "tests/test_ray_run.py::test_killed_actor_loses_and_duplicates_no_row",
    "tests/test_ray_validate.py::test_ray_and_local_agree_on_verdict_and_numbers",
    "tests/test_targets.py::test_web_runs_cnn_fused_and_qdq",
    "tests/test_zoo_subset.py::test_fast_subset_onnxkit_at_least_as_good_as_the_raw_converters",
)


def pytest_addoption(parser):
    parser.addoption("--slow", choices=("subset", "all", "none"), default="subset",
                     help="slow tests in a whole-suite run: one per family (default), all, or none")


def _whole_suite(config) -> bool:
    root = Path(str(config.rootpath))
    args = [a for a in config.args if not a.startswith("-")]
    return not args or all((root / a).resolve() == root / "tests" or Path(a).resolve() == root / "tests" for a in args)


def pytest_collection_modifyitems(config, items):
    mode = config.getoption("--slow")
    if mode == "all" or (mode == "subset" and not _whole_suite(config)):
        return
    keep, drop = [], []
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        chosen = mode == "subset" and item.nodeid.split("[")[0] in SLOW_SUBSET
        (drop if slow and not chosen else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
