"""Untrusted ONNX runs in a contained worker: every batch under --timeout and a memory limit.

The attacks: a Loop whose trip count is a value in row 2 of the user's data (a hang), and a
ConstantOfShape whose size is a value in row 3 (an allocation bomb). Neither can be seen by
a static check or by a probe on the first row. Each must end as one `Error:` line, exit 2,
within the timeout, with nothing written and the inputs unchanged.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

from ._models import make_alloc_onnx, make_fixed_onnx, make_loop_onnx, make_max_onnx

HANG_ROWS = np.array([3, 10**15, 4], np.int64)  # row 2 asks the Loop for 10**15 iterations
BOMB_ROWS = np.array([3, 5, 2**28, 1], np.int64)  # row 3 asks for 2**28 x 4096 floats (4 TiB)


@pytest.fixture
def hostile(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "hang.npy", HANG_ROWS)
    np.save(d / "bomb.npy", BOMB_ROWS)
    return {
        "loop": make_loop_onnx(d / "loop.onnx"),
        "max": make_max_onnx(d / "max.onnx"),
        "alloc": make_alloc_onnx(d / "alloc.onnx"),
        "hang_rows": d / "hang.npy",
        "bomb_rows": d / "bomb.npy",
        "dir": d,
    }


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_clean_error(r) -> str:
    assert r.code == 2, r
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout.strip() == "" or r.stdout.lstrip().startswith("{")
    return r.stderr


def _no_side_effects(tmp_path: Path, before: dict[str, str], hostile: dict) -> None:
    assert _snapshot(hostile["dir"]) == before  # inputs unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written, no leftovers


# ---------------------------------------------------------------- the hang in row 2

def test_run_loop_hang_in_row_2_stops_within_timeout(hostile, tmp_path):
    before = _snapshot(hostile["dir"])
    t0 = time.monotonic()
    r = run_cli("run", hostile["loop"], "--data", hostile["hang_rows"], "--batch-size", "1", "--timeout", "2",
                "-o", tmp_path / "out.npz")
    took = time.monotonic() - t0
    err = _one_clean_error(r)
    assert "did not finish batch 2 (row 2) within --timeout 2 s" in err
    assert took < 20
    _no_side_effects(tmp_path, before, hostile)


@pytest.mark.parametrize("role", ["candidate", "reference"])
def test_validate_loop_hang_is_contained_as_candidate_and_reference(role, hostile, tmp_path):
    before = _snapshot(hostile["dir"])
    pair = (hostile["max"], hostile["loop"]) if role == "candidate" else (hostile["loop"], hostile["max"])
    t0 = time.monotonic()
    r = run_cli("validate", *pair, "--data", hostile["hang_rows"], "--timeout", "2",
                "--save-outputs", tmp_path / "refs.npz", "--junit", tmp_path / "j.xml")
    err = _one_clean_error(r)
    assert "model loop.onnx did not finish batch 1 (rows 1-3) within --timeout 2 s" in err
    assert time.monotonic() - t0 < 20
    _no_side_effects(tmp_path, before, hostile)


def test_validate_pair_passes_on_harmless_rows(hostile, tmp_path):
    """The hostile pair agrees where the loop is short: containment changes no verdict."""
    np.save(tmp_path / "in" / "small.npy", np.array([3, 7, 4], np.int64))
    r = run_cli("validate", hostile["max"], hostile["loop"], "--data", tmp_path / "in" / "small.npy", "--timeout", "10")
    assert r.code == 0, r


def test_bench_rehearsal_stops_a_hang_before_timing(hostile, tmp_path):
    model = make_loop_onnx(hostile["dir"] / "always.onnx", scale=10**12)
    r = run_cli("bench", model, "--iterations", "2", "--warmup", "0", "--timeout", "2", "--plot", tmp_path / "p.png")
    err = _one_clean_error(r)
    assert "always.onnx did not finish the timing inputs of batch size 1 within --timeout 2 s" in err
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------- the allocation bomb in row 3

def test_run_allocation_bomb_in_row_3(hostile, tmp_path):
    before = _snapshot(hostile["dir"])
    r = run_cli("run", hostile["alloc"], "--data", hostile["bomb_rows"], "--batch-size", "1", "--timeout", "10",
                "-o", tmp_path / "out.npz")
    err = _one_clean_error(r)
    assert "model alloc.onnx needed more than" in err and "on batch 3 (row 3)" in err
    _no_side_effects(tmp_path, before, hostile)


def test_validate_allocation_bomb_as_reference(hostile, tmp_path):
    before = _snapshot(hostile["dir"])
    twin = make_alloc_onnx(tmp_path / "twin.onnx")
    r = run_cli("validate", hostile["alloc"], twin, "--data", hostile["bomb_rows"], "--timeout", "10",
                "--save-outputs", tmp_path / "refs.npz")
    err = _one_clean_error(r)
    assert "model alloc.onnx needed more than" in err and "on batch 1 (rows 1-4)" in err
    assert _snapshot(hostile["dir"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "twin.onnx"]


def test_bomb_rows_before_row_3_run_fine(hostile, tmp_path):
    np.save(tmp_path / "in" / "ok.npy", BOMB_ROWS[:2])
    r = run_cli("run", hostile["alloc"], "--data", tmp_path / "in" / "ok.npy", "--json")
    assert r.code == 0, r
    assert r.json["rows"] == 2 and r.json["contained"] is True


# ---------------------------------------------------------------- fixed shapes run as they are

@pytest.mark.parametrize("shape", [(16,), (2, 4)])
def test_fixed_shape_models_run_and_validate(shape, tmp_path):
    model = make_fixed_onnx(tmp_path / "fixed.onnx", shape)
    r = run_cli("run", model, "-o", tmp_path / "out.npz", "--json")
    assert r.code == 0, r
    assert r.json["outputs"][0]["shape"] == list(shape)
    # Three batches' worth of rows: data is cut at the model's fixed first dimension.
    x = np.random.default_rng(1).standard_normal((3 * shape[0], *shape[1:])).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run_cli("run", model, "--data", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert r.code == 0, r
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), 2 * x + 1, rtol=1e-6)
    r = run_cli("validate", model, model, "--json")
    assert r.code == 0 and r.json["passed"], r
    r = run_cli("validate", model, model, "--data", tmp_path / "x.npy", "--json")
    assert r.code == 0 and r.json["samples"] == 3 * shape[0], r


# ---------------------------------------------------------------- --trust: the in-process path

def test_trust_runs_in_process(hostile, tmp_path, monkeypatch):
    from onnxkit.runtime import contained

    np.save(tmp_path / "in" / "small.npy", np.array([3, 7, 4], np.int64))
    r = run_cli("run", hostile["loop"], "--data", tmp_path / "in" / "small.npy", "-o", tmp_path / "contained.npy")
    assert r.code == 0, r

    def refuse(*a, **k):
        raise AssertionError("a contained worker was started under --trust")

    monkeypatch.setattr(contained.ContainedSession, "__init__", refuse)
    r = run_cli("run", hostile["loop"], "--data", tmp_path / "in" / "small.npy", "-o", tmp_path / "trusted.npy",
                "--trust", "--json")
    assert r.code == 0, r
    assert r.json["contained"] is False
    np.testing.assert_array_equal(np.load(tmp_path / "trusted.npy"), np.load(tmp_path / "contained.npy"))
    for argv in (["validate", hostile["max"], hostile["loop"]], ["bench", hostile["max"], "-n", "2", "--warmup", "0"]):
        r = run_cli(*argv, "--trust")
        assert r.code == 0, r


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_timeout_must_be_positive(value, hostile, tmp_path):
    before = _snapshot(hostile["dir"])
    r = run_cli("run", hostile["max"], "--timeout", value, "-o", tmp_path / "out.npz")
    assert r.code == 2 and r.stderr.strip() == "Error: --timeout must be a positive number of seconds", r
    _no_side_effects(tmp_path, before, hostile)


# ---------------------------------------------------------------- the worker itself

def test_contained_session_answers_like_an_in_process_one(linear_onnx):
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.runtime.session import make_session

    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    here = make_session(str(linear_onnx))
    with ContainedSession(linear_onnx, profile=True) as there:
        assert there.output_names == here.output_names and there.input_specs == here.input_specs
        assert there.providers == here.providers
        np.testing.assert_array_equal(there.run({"x": x})["y"], here.run({"x": x})["y"])
        assert set(there.node_providers()) == {"CPUExecutionProvider"}
        pid = there._proc.pid
    assert not _alive(pid)


def test_a_bad_batch_does_not_kill_the_worker(linear_onnx):
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.errors import InputError

    with ContainedSession(linear_onnx) as s:
        with pytest.raises(InputError, match=r"could not run the model on these inputs.*\(batch 1 \(rows 1-2\)\)"):
            s.run({"x": np.ones((2, 7), np.float32)})
        assert s.run({"x": np.ones((2, 4), np.float32)})["y"].shape == (2, 3)


def test_session_build_limit(linear_onnx):
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.errors import InputError

    with pytest.raises(InputError, match="session-build limit of 0.001 s"):
        ContainedSession(linear_onnx, session_timeout_s=0.001)


def test_worker_crash_names_the_signal_and_batch(hostile):
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.errors import InputError

    s = ContainedSession(hostile["loop"], timeout_s=30)
    threading.Timer(1.0, os.kill, (s._proc.pid, signal.SIGSEGV)).start()
    with pytest.raises(InputError, match=r"crashed its runtime \(signal SIGSEGV\) on batch 1 \(row 1\)"):
        s.run({"n": np.array([10**15], np.int64)})
    with pytest.raises(InputError, match="SIGSEGV"):  # a dead worker stays dead
        s.run({"n": np.array([1], np.int64)})


def test_ctrl_c_kills_the_worker(hostile, sigint_raises):
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.errors import Interrupted

    s = ContainedSession(hostile["loop"], timeout_s=60)
    pid = s._proc.pid
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        s.run({"n": np.array([10**15], np.int64)})
    # A busy worker never reads a polite stop: waiting for one kept the user at Ctrl-C for 5 s.
    assert time.monotonic() - t0 < 3.5
    assert not _alive(pid)


def test_resident_size_watch_for_device_providers(hostile, monkeypatch):
    """GPU providers cannot live under RLIMIT_AS (CUDA reserves address space at start-up):
    their worker's resident size is watched instead. Forced on here, on CPU."""
    from onnxkit.runtime import contained
    from onnxkit.errors import InputError

    monkeypatch.setattr(contained, "_uses_device", lambda providers: True)
    monkeypatch.setattr(contained, "default_memory_mb", lambda: 400)
    s = contained.ContainedSession(hostile["alloc"], timeout_s=30)
    assert s.watch_rss
    assert s.run({"n": np.array([2], np.int64)})["y"].shape == (1,)
    with pytest.raises(InputError, match=r"used more than 400 MB of memory on batch 2"):
        s.run({"n": np.array([2**16], np.int64)})  # 1 GiB of zeros


def test_limits_chosen_per_provider():
    from onnxkit.runtime.contained import DEFAULT_SESSION_TIMEOUT_S, ENGINE_BUILD_TIMEOUT_S, _uses_device, session_timeout_for

    assert session_timeout_for(["CPUExecutionProvider"]) == DEFAULT_SESSION_TIMEOUT_S
    assert session_timeout_for(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == ENGINE_BUILD_TIMEOUT_S
    assert _uses_device(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not _uses_device(["CPUExecutionProvider"])


@pytest.mark.skipif("CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-gpu and a GPU")
def test_cuda_worker_keeps_provider_options(linear_onnx):
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.runtime.providers import provider_options_for

    provs = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with ContainedSession(linear_onnx, providers=provs, provider_options=provider_options_for(provs)) as s:
        assert s.watch_rss  # no RLIMIT_AS under CUDA
        assert s.providers[0] == "CUDAExecutionProvider"
        assert s.run({"x": np.ones((2, 4), np.float32)})["y"].shape == (2, 3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except OSError:
        return False


def test_pipeline_onnx_source_hang_is_contained(hostile, tmp_path, monkeypatch):
    """An untrusted ONNX source runs contained, and so does every step that runs the model
    it was copied to on the data (quantize measures its error there)."""
    from onnxkit.runtime import contained

    monkeypatch.setattr(contained, "DEFAULT_BATCH_TIMEOUT_S", 2.0)
    # Weighted, so that quantize has work to do and runs the model on the data.
    source = make_loop_onnx(hostile["dir"] / "weighted.onnx", weighted=True)
    cfg = tmp_path / "in" / "onnxkit.toml"
    cfg.write_text("\n".join([
        "[source]", f'path = "{source.as_posix()}"',
        "[validate]", f'data = "{hostile["hang_rows"].as_posix()}"',
        "[output]", f'dir = "{(tmp_path / "out").as_posix()}"',
        "[bench]", "enabled = false",
    ]) + "\n")
    t0 = time.monotonic()
    r = run_cli("pipeline", cfg, "--json")
    assert r.code == 2, r
    assert time.monotonic() - t0 < 60
    steps = {s["name"]: s for s in r.json["steps"]}
    assert steps["validate export"]["status"] == "error"
    assert "did not finish" in steps["validate export"]["reason"]
    assert steps["quantize"]["status"] == "error" and "did not finish" in steps["quantize"]["reason"]


@pytest.mark.parametrize("command", [["optimize"], ["quantize", "--mode", "dynamic"], ["optimize", "--auto"]])
def test_optimize_and_quantize_rehearse_the_input(command, hostile, tmp_path, monkeypatch):
    """They run the input in-process after a contained rehearsal on the same inputs: a model
    that hangs on any of them stops in the rehearsal."""
    from onnxkit.runtime import contained

    monkeypatch.setattr(contained, "DEFAULT_BATCH_TIMEOUT_S", 2.0)
    # Weighted: a model with nothing to quantize is refused before anything runs it.
    model = make_loop_onnx(hostile["dir"] / "always.onnx", scale=10**12, weighted=True)
    before = _snapshot(hostile["dir"])
    t0 = time.monotonic()
    r = run_cli(command[0], model, "-o", tmp_path / "out.onnx", *command[1:])
    err = _one_clean_error(r)
    assert "model always.onnx did not finish random inputs" in err and "within --timeout 2 s" in err
    assert time.monotonic() - t0 < 30
    _no_side_effects(tmp_path, before, hostile)


def test_validate_large_models_one_worker_at_a_time(linear_onnx, tmp_path, monkeypatch):
    """Models over the large-model threshold are validated one session after the other; both
    are contained, and no worker outlives the command."""
    from onnxkit.runtime import contained
    from onnxkit.foundation import onnx_io

    monkeypatch.setattr(onnx_io, "EXTERNAL_DATA_THRESHOLD", 16)
    started: list = []
    real = contained.ContainedSession.__init__

    def record(self, model, **kw):
        real(self, model, **kw)
        started.append(self)

    monkeypatch.setattr(contained.ContainedSession, "__init__", record)
    r = run_cli("validate", linear_onnx, linear_onnx, "--json")
    assert r.code == 0 and r.json["passed"], r
    assert len(started) == 3  # candidate (closed unused), reference, candidate again
    assert all(not s._proc.is_alive() for s in started)
