"""`onnxkit targets` attacked: verdicts on quantized models, hostile files through each target,
option combinations, and the reports' tables with hostile names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _save(model, path: Path) -> Path:
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _only(doc: dict, name: str) -> dict:
    return next(t for t in doc["targets"] if t["target"] == name)


@pytest.fixture
def qdq_wide(tmp_path) -> Path:
    """A QDQ int8 MatMul with 32 outputs per row (wide enough for the cosine to judge)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in (
        ("xs", 0.02, np.float32), ("xz", 0, np.int8), ("ws", 0.01, np.float32), ("wz", 0, np.int8))]
    inits.append(numpy_helper.from_array(rng.integers(-127, 127, (16, 32), dtype=np.int8), "wq"))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dq_w"),
        helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "qdq_wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "qdq_wide.onnx")


def _fake_openvino(monkeypatch, distort):
    """The openvino target replaced by ONNX Runtime's answers passed through ``distort``: a
    runtime whose numbers are known, to check the verdict rather than OpenVINO."""
    from onnxkit.operations import targets as targets_op
    from onnxkit.runtime import targets_ort

    real = targets_op._runner

    def fake_run(model_path, feeds, precision, options):
        got = targets_ort.run("cpu", model_path, feeds, None, options)
        got["outputs"] = [{k: distort(v) for k, v in o.items()} for o in got["outputs"]]
        got["precision"] = precision or "bf16"
        return got

    monkeypatch.setattr(targets_op, "_runner", lambda name: (lambda: None, fake_run) if name == "openvino" else real(name))


def test_quantized_model_on_a_target_that_drifts_like_a_second_quantization_is_not_passed(cli, qdq_wide, monkeypatch):
    """The same int8 graph on two runtimes differs by rounding ties (measured on an int8
    MiniLM: OpenVINO at f32 cosine 0.99995, onnxruntime-web 0.998), not by a quantization
    error: a target whose answers are off by 12% of their norm (cosine 0.993) must not pass
    under the int8 preset meant for float vs int8."""
    rng = np.random.default_rng(0)
    _fake_openvino(monkeypatch, lambda v: (v + 0.12 * np.linalg.norm(v, axis=-1, keepdims=True) / np.sqrt(v.shape[-1])
                                           * rng.standard_normal(v.shape)).astype(v.dtype))
    before = _snapshot(qdq_wide.parent)
    r = cli("targets", qdq_wide, "-t", "openvino", "--trust", "--json")
    ov = _only(r.json, "openvino")
    assert ov["outputs"][0]["cosine"] > 0.99  # what the int8 preset let through
    assert r.code == 1 and ov["status"] == "disagrees", ov
    assert _snapshot(qdq_wide.parent) == before


def test_quantized_model_one_rounding_step_apart_still_passes(cli, qdq_wide, monkeypatch):
    """Measured: OpenVINO rounds a tie to the next int8 step on a few elements; that is agreement."""
    def one_step(v):
        v = v.copy()
        v.flat[::97] += 0.02 * 0.01 * 127  # one step of the product's scale on 1% of elements
        return v

    _fake_openvino(monkeypatch, one_step)
    r = cli("targets", qdq_wide, "-t", "openvino", "--trust", "--json")
    assert r.code == 0, r.json
    assert any("quantized" in n for n in _only(r.json, "openvino")["notes"])


def _allocating_model(path: Path, floats: int) -> Path:
    """Allocates ``floats`` float32 at run time (a shape computed from the input's), then sums
    them to one number: no static check sees the size, and only the allocation is big."""
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
            helper.make_node("Mul", ["s", "k"], ["n"]),
            helper.make_node("ConstantOfShape", ["n"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("ReduceMax", ["big"], ["y"], keepdims=1),
        ],
        "allocates", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([floats // 2], np.int64), "k")],  # batch 2 of the random inputs
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_untrusted_model_runs_each_target_under_the_memory_limit(cli, tmp_path, monkeypatch):
    """3 GB asked for at run time by an untrusted model, with a 2.5 GB limit: the allocation
    fails in the contained child (the reference cannot run it: FAILED, the allocation named)
    instead of taking the machine's memory."""
    from onnxkit.runtime import contained

    monkeypatch.setattr(contained, "default_memory_mb", lambda: 2500)
    model = _allocating_model(tmp_path / "allocates.onnx", 3 * 2**28)
    before = _snapshot(tmp_path)
    r = cli("targets", model, "-t", "mobile", "--json")
    assert r.code == 1, r.stderr
    cpu = _only(r.json, "cpu")
    assert cpu["status"] == "failed" and "allocate memory" in cpu["reason"], cpu
    assert _only(r.json, "mobile")["status"] == "skipped"
    assert "Traceback" not in r.stderr and _snapshot(tmp_path) == before


@pytest.mark.parametrize("browser", ["none", "chromium"])
def test_web_runtime_is_stopped_when_its_resident_memory_passes_the_limit(tmp_path, browser, monkeypatch):
    """Node.js and Chromium cannot start under RLIMIT_AS, so their resident size is watched:
    with a limit below what the runtime itself needs, the run is stopped and says why."""
    import shutil

    from onnxkit.runtime import targets_web

    if targets_web.availability() is not None or (browser != "none" and shutil.which(browser) is None):
        pytest.skip("the web target is not set up here")
    monkeypatch.delenv("ONNXKIT_BROWSER", raising=False)
    model = _allocating_model(tmp_path / "small.onnx", 8)
    feeds = [{"x": np.ones((2, 4), np.float32)}]
    got = targets_web.run(str(model), feeds, None, {"browser": browser, "memory_mb": 5})
    assert got["stage"] == "run" and "used more than 5 MB of memory" in got["error"], got
    ok = targets_web.run(str(model), feeds, None, {"browser": browser, "memory_mb": 16000})
    assert ok["error"] is None and ok["outputs"][0]["y"].tolist() == [1.0], ok


def test_run_json_names_the_precision_openvino_used(cli, tmp_path):
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    from onnxkit.runtime.session import available_providers

    if "OpenVINOExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime has its own OpenVINO provider")
    model = _allocating_model(tmp_path / "small.onnx", 8)
    r = cli("run", model, "--provider", "openvino", "--precision", "f32", "--json")
    assert r.code == 0 and r.json["precision"] == "f32", r.stderr
    plain = cli("run", model, "--json")
    assert plain.code == 0 and plain.json["precision"] is None  # ONNX Runtime: the graph's own types


def _string_model(path: Path) -> Path:
    """Strings in and out (a tokenizer-like front end): Identity on a string tensor, and a
    string Equal to a constant as a bool side output."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"], name="ident"),
         helper.make_node("Equal", ["s", "word"], ["is_word"], name="eq")],
        "strings", [helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 3])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["N", 3]),
         helper.make_tensor_value_info("is_word", TensorProto.BOOL, ["N", 3])],
        [numpy_helper.from_array(np.array(["héllo"], dtype=object), "word")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), path)


@pytest.mark.parametrize("browser", ["none", "chromium"])
def test_web_target_passes_string_tensors_in_and_out(cli, tmp_path, browser):
    """onnxruntime-web takes string tensors; a target reported as failing on them because
    onnxkit's runner could not pass them was a false refusal."""
    import shutil

    from onnxkit.runtime import targets_web

    if targets_web.availability() is not None or (browser != "none" and shutil.which(browser) is None):
        pytest.skip("the web target is not set up here")
    model = _string_model(tmp_path / "strings.onnx")
    data = tmp_path / "words.npz"
    np.savez(data, s=np.array([["héllo", "a|b\"c", ""], ["日本", "héllo", "x\ny"]]))
    before = _snapshot(tmp_path)
    r = cli("targets", model, "-t", "web", "--browser", browser, "--data", data, "--json")
    web = _only(r.json, "web")
    assert r.code == 0 and web["status"] == "passed", web
    assert {o["name"] for o in web["outputs"]} == {"t", "is_word"} and all(o["passed"] for o in web["outputs"])
    assert _snapshot(tmp_path) == before


def _endless_loop_model(path: Path) -> Path:
    """A Loop whose condition stays true for 2^62 iterations: a hang on every runtime."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "endless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(2**62, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _processes_mentioning(text: str) -> list[int]:
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


class _Watch:
    """Polls ``probe()`` in a thread while a contained run lasts and keeps whether it was ever
    true: a time limit short enough for a fast suite must still find the runtime started (or
    its scratch folder made), or the test would prove nothing."""

    def __init__(self, probe):
        import threading

        self.seen = False
        self._probe, self._done = probe, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._done.is_set():
            self.seen = self.seen or bool(self._probe())
            self._done.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


@pytest.mark.parametrize("browser", ["none", "chromium"])
def test_web_runtime_dies_with_the_contained_child_that_timed_out(tmp_path, browser, monkeypatch):
    """An endless model on web: the contained child is killed at its time limit, and the
    Node.js or Chromium it started must not live on spinning."""
    import os
    import shutil
    import time

    from onnxkit.errors import InputError
    from onnxkit.foundation.sandbox import run_isolated
    from onnxkit.runtime import targets_web

    if targets_web.availability() is not None or (browser != "none" and shutil.which(browser) is None):
        pytest.skip("the web target is not set up here")
    import tempfile

    # the child's job folder, so that its processes can be found by it; short, because
    # Chromium's profile lock is a socket whose path must fit in 108 bytes
    scratch = Path(tempfile.mkdtemp(prefix="okw-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(scratch))
    model = _endless_loop_model(tmp_path / "endless.onnx")
    # 6 s: Node.js or Chromium is up within one here; the watch proves it was, at the kill.
    with _Watch(lambda: _processes_mentioning(str(scratch))) as runtime, pytest.raises(InputError, match="took longer than"):
        run_isolated(targets_web.run, str(model), [{"x": np.ones((1, 4), np.float32)}], None, {"browser": browser},
                     timeout_s=6, what="endless on web")
    assert runtime.seen, "the runtime never started: the time limit is too short to test anything"
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(scratch)) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert _processes_mentioning(str(scratch)) == []
    finally:
        for pid in _processes_mentioning(str(scratch)):  # only what this test started
            os.kill(pid, 9)
        shutil.rmtree(scratch, ignore_errors=True)


def test_named_browser_that_cannot_start_is_unavailable_not_a_model_failure(cli, tmp_path):
    """A browser that exits before asking for the page said nothing about the model: exit 3
    (environment) naming the browser's words, not exit 1 (the model fails on web)."""
    from onnxkit.runtime import targets_web

    if targets_web.availability() is not None:
        pytest.skip("the web target is not set up here")
    fake = tmp_path / "fakebrowser"
    fake.write_text('#!/bin/sh\necho "cannot open display" >&2\nexit 1\n')
    fake.chmod(0o755)
    model = _allocating_model(tmp_path / "small.onnx", 8)
    before = _snapshot(tmp_path)
    r = cli("targets", model, "-t", "web", "--browser", fake, "--json")
    web = _only(r.json, "web")
    assert r.code == 3 and web["status"] == "unavailable", web
    assert "fakebrowser exited with code 1" in web["reason"] and "cannot open display" in web["reason"]
    assert r.json["verdict"] == "UNAVAILABLE" and _snapshot(tmp_path) == before


def test_openvino_says_when_it_did_not_compute_in_the_precision_asked(cli, tmp_path):
    """Measured here (AVX-512 BF16, no FP16 compute): --precision f16 compiles to bf16. The
    precision column says bf16; a note must say that f16 was asked and not used."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    model = _allocating_model(tmp_path / "small.onnx", 8)
    r = cli("targets", model, "-t", "openvino", "--precision", "f16", "--json")
    ov = _only(r.json, "openvino")
    assert r.code == 0, ov
    if ov["precision"] == "f16":
        pytest.skip("this CPU computes f16: OpenVINO honoured the hint")
    assert any(n.startswith(f"--precision f16 asked, but OpenVINO computed in {ov['precision']}") for n in ov["notes"]), ov["notes"]


@pytest.mark.parametrize("keep", [0, 1])
def test_a_target_that_answers_fewer_batches_than_it_was_given_is_not_passed(cli, qdq_wide, monkeypatch, keep):
    """Two input batches go to every target; answers for fewer must not be compared as if
    complete (zip would stop at the shorter list, and no answer at all would compare nothing)."""
    from onnxkit.operations import targets as targets_op
    from onnxkit.runtime import targets_ort

    real = targets_op._runner

    def short_run(model_path, feeds, precision, options):
        got = targets_ort.run("cpu", model_path, feeds, None, options)
        got["outputs"] = got["outputs"][:keep]
        return got

    monkeypatch.setattr(targets_op, "_runner", lambda name: (lambda: None, short_run) if name == "openvino" else real(name))
    r = cli("targets", qdq_wide, "-t", "openvino", "--trust", "--json")
    ov = _only(r.json, "openvino")
    assert r.code == 1 and ov["status"] == "failed", ov
    assert f"answered {keep} of the 2 input batches" in ov["reason"]


def test_openvino_rehearsal_of_an_untrusted_model_runs_under_the_memory_limit(cli, tmp_path, monkeypatch):
    """run --provider openvino first runs an untrusted model once in a contained child: that
    child gets the same memory limit as ONNX Runtime's contained worker (it had none, and the
    3 GB were allocated twice: in the rehearsal, then in-process)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    from onnxkit.runtime import contained

    monkeypatch.setattr(contained, "default_memory_mb", lambda: 2500)
    model = _allocating_model(tmp_path / "allocates.onnx", 3 * 2**28)
    before = _snapshot(tmp_path)
    r = cli("run", model, "--provider", "openvino", "--batch-size", "2")
    assert r.code == 2 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(tmp_path) == before


def _pipeline_config(tmp_path: Path, targets: str) -> Path:
    from tests.conftest import make_linear_onnx

    src = make_linear_onnx(tmp_path / "lin.onnx")
    cfg = tmp_path / "p.toml"
    cfg.write_text("\n".join(["[source]", f'path = "{src.as_posix()}"', "[optimize]", "enabled = false",
                              "[quantize]", "enabled = false", "[bench]", "enabled = false",
                              "[targets]", targets]) + "\n")
    return cfg


def test_pipeline_malformed_targets_tol_is_exit_2_before_any_stage(cli, tmp_path):
    cfg = _pipeline_config(tmp_path, 'require = ["cpu"]\ntol = ["x=abc"]')
    r = cli("pipeline", cfg)
    assert r.code == 2 and r.stderr.startswith("Error: p.toml:11: ") and "'abc' is not a number" in r.stderr, r.stderr
    assert not (tmp_path / "onnxkit-out").exists()


def test_pipeline_targets_step_whose_required_targets_all_were_unavailable_is_not_passed(cli, tmp_path, monkeypatch):
    """allow_unavailable: a required target absent here is skipped; when none of the required
    targets ran, the step checked nothing that was asked and is skipped, not passed."""
    from onnxkit.runtime import targets_openvino

    monkeypatch.setattr(targets_openvino, "availability", lambda: "the openvino package is not installed")
    cfg = _pipeline_config(tmp_path, 'require = ["openvino"]\nallow_unavailable = true')
    r = cli("pipeline", cfg, "--json")
    assert r.code == 0, r.stderr
    step = next(s for s in r.json["steps"] if s["name"] == "targets")
    assert step["status"] == "skipped" and "openvino" in step["reason"], step


def test_web_outputs_are_read_only_from_the_job_folder(tmp_path):
    """The page's result names each output's file; a forged result (anything that can POST to
    the page's server) must not make onnxkit read a file outside the job folder."""
    from onnxkit.runtime import targets_web

    job = tmp_path / "job"
    job.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    for name in ("../secret.bin", str(secret), "out_0_0.bin/../../secret.bin"):
        with pytest.raises(ValueError, match="not an output file"):
            targets_web._read_outputs(job, [{"y": {"dtype": "float32", "shape": [4], "file": name}}])


@pytest.mark.parametrize("depth", [1, 6])
def test_chromium_leaves_nothing_in_the_temporary_folder_and_runs_under_a_long_one(cli, tmp_path, monkeypatch, depth):
    """Chromium, killed when the page has answered, left an org.chromium.Chromium.* folder in
    $TMPDIR on every run; under a long $TMPDIR its zygote socket path did not fit and it
    crashed (SIGABRT), reported as web unavailable."""
    import shutil
    import tempfile

    from onnxkit.runtime import targets_web

    if targets_web.availability() is not None or shutil.which("chromium") is None:
        pytest.skip("the web target in Chromium is not set up here")
    scratch = Path(tempfile.mkdtemp(prefix="okc-", dir="/tmp"))
    try:
        tmpdir = scratch.joinpath(*["a-rather-long-folder-name"] * (depth - 1))
        tmpdir.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
        model = _allocating_model(tmp_path / "small.onnx", 8)
        r = cli("targets", model, "-t", "web", "--browser", "chromium", "--trust", "--json")
        web = _only(r.json, "web")
        assert r.code == 0 and web["details"]["runtime_kind"] == "chromium", web
        left = [q.name for q in tmpdir.iterdir() if "chromium" in q.name.lower() or q.name.startswith("onnxkit")]
        assert left == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_a_float16_model_is_held_to_what_float16_can_resolve(cli, tmp_path, monkeypatch):
    """Measured: onnxruntime-web on a float16 MiniLM, 0.002 from ONNX Runtime CPU (one fp16
    step at that magnitude), cosine 0.9999997, was failed against fp32's 2e-5. A float16 graph
    is held to the fp16 preset, with a note; a target off by far more still disagrees."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16), helper.make_node("MatMul", ["xh", "w"], ["yh"]),
         helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)],
        "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])], [w])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "half.onnx")
    _fake_openvino(monkeypatch, lambda v: (v * (1 + 2.0 ** -10)).astype(v.dtype))  # one fp16 step
    r = cli("targets", model, "-t", "openvino", "--precision", "f32", "--trust", "--json")
    ov = _only(r.json, "openvino")
    assert r.code == 0, ov
    assert any("fp16 tolerance preset" in n and "float16" in n for n in ov["notes"]), ov["notes"]
    _fake_openvino(monkeypatch, lambda v: (v * 1.1).astype(v.dtype))
    r = cli("targets", model, "-t", "openvino", "--precision", "f32", "--trust", "--json")
    assert r.code == 1 and _only(r.json, "openvino")["status"] == "disagrees"


def test_an_ort_format_file_given_to_targets_is_named_as_such(cli, tmp_path):
    """optimize -o model.ort writes the ORT format; handed to targets, it is exit 2 saying what
    it is (not only "truncated or not ONNX"), and nothing is written."""
    model = _allocating_model(tmp_path / "small.onnx", 8)
    ort_file = tmp_path / "small.ort"
    assert cli("optimize", model, "-o", ort_file).code == 0
    before = _snapshot(tmp_path)
    r = cli("targets", ort_file, "-t", "mobile")
    assert r.code == 2 and r.stderr.startswith("Error: ") and "ORT format" in r.stderr, r.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["mobile", "web"])
def test_a_target_child_killed_at_its_time_limit_leaves_no_temporary_folder(tmp_path, monkeypatch, target):
    """The runners' scratch folders (the ORT-format conversion, the web job, the browser
    profile) are removed by the child itself; a child killed at the time limit cannot, so the
    parent owns the folder they live in."""
    import shutil
    import tempfile

    from onnxkit.errors import InputError
    from onnxkit.operations import targets as targets_op
    from onnxkit.runtime import targets_web

    if target == "web" and targets_web.availability() is not None:
        pytest.skip("the web target is not set up here")
    scratch = Path(tempfile.mkdtemp(prefix="okt-", dir="/tmp"))
    try:
        monkeypatch.setenv("TMPDIR", str(scratch))
        monkeypatch.setattr(tempfile, "tempdir", None)
        monkeypatch.setattr(targets_op, "TARGET_TIMEOUT_S", 4.0)
        model = _endless_loop_model(tmp_path / "endless.onnx")
        run = targets_op._runner(target)[1]

        def child_folders():  # inside the parent's onnxkit-<target>-* folder: made by the child
            return [p for p in scratch.glob("onnxkit*/*") if p.is_dir()]

        with _Watch(child_folders) as made, pytest.raises(InputError, match="took longer than"):
            targets_op._execute(run, str(model), [{"x": np.ones((1, 4), np.float32)}], None, {"browser": "none"},
                                trust=False, target=target)
        assert made.seen, "the child was killed before it made a folder: the time limit is too short to test anything"
        assert [p.name for p in scratch.iterdir() if p.name.startswith("onnxkit")] == []
    finally:
        for pid in _processes_mentioning(str(scratch)):
            os.kill(pid, 9)
        shutil.rmtree(scratch, ignore_errors=True)
