"""bench --vs with an ONNX source that is not trusted: it runs in a contained worker, which must
run at the bench's thread count and spin policy and time its own calls, so that a speed-up gate
on it passes, fails or is inconclusive on the same grounds as on an in-process source."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

WIDTH = 512


def _mlp(path: Path, layers: int) -> Path:
    """x [N, 512] through ``layers`` MatMul+Relu; 0 layers: a single Relu (next to no work)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(layers)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        x = f"r{i}"
    if not layers:
        nodes, x = [helper.make_node("Relu", ["x"], ["r"])], "r"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A heavy fp32 source (about 1-3 ms per batch of 32 at one thread) and a trivial model on
    the same inputs: a true speed-up in the tens, far from the thresholds below."""
    d = tmp_path_factory.mktemp("untrusted_vs")
    return _mlp(d / "heavy.onnx", 8), _mlp(d / "light.onnx", 0)


def _bench(cli, pair, *extra):
    heavy, light = pair
    return cli("bench", light, "--vs", heavy, "--batch-size", "32", "-n", "30", "--warmup", "3", *extra, "--json")


def _source(doc):
    return next(e for e in doc["entries"] if e["is_source"])


def test_gate_far_below_the_true_speedup_passes(cli, pair):
    # True speed-up here about 35x. Before, the source's "CPU time" was this process's share of
    # the pipe (3-11x) and the gate said inconclusive at any threshold between that and the wall clock.
    r = _bench(cli, pair, "--threads", "1", "--min-speedup", "8")
    assert r.code == 0, r
    gate = r.json["speedup_gate"]
    assert gate["status"] == "pass", gate


def test_gate_far_above_the_true_speedup_fails(cli, pair):
    r = _bench(cli, pair, "--threads", "1", "--min-speedup", "5000")
    assert r.code == 1, r
    gate = r.json["speedup_gate"]
    # Judged on CPU time where the intervals disagree; before, the untrusted source's CPU time
    # was the pipe's and the gate could only say inconclusive.
    assert gate["status"] == "fail", gate


def test_json_shows_the_source_cpu_time_measured_in_its_worker(cli, pair):
    r = _bench(cli, pair, "--threads", "1")
    assert r.code == 0, r
    doc = r.json
    src = _source(doc)
    assert doc["source"]["runs_in"] == "a contained worker process"
    # The heavy model's own work, not the parent's share of a pipe round trip (tens of us).
    assert src["stats"]["cpu_p50_ms"] > 0.5, src["stats"]
    model = next(e for e in doc["entries"] if not e["is_source"])
    assert model["speedup_cpu"] > 3 and len(model["speedup_cpu_ci95"]) == 2, model
    # The pipe round trip is measured and reported apart, not added to the source's times.
    assert src["handover_p50_ms"] > 0
    assert any("pipe round trip" in n and "not counted" in n for n in doc["notes"])


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_thread_count_and_spin_policy_reach_the_worker(cli, pair, threads):
    r = _bench(cli, pair, "--threads", threads, "-n", "5")
    assert r.code == 0, r
    src = r.json["source"]
    # Read back from the worker's ONNX Runtime session, not echoed from the request.
    assert src["intra_op_threads"] == int(threads) and src["spinning"] is False, src
    assert "the ONNX source's (in its contained worker) alike" in r.json["spin_policy"]


def test_measured_threads_reach_the_worker_too(cli, pair):
    r = _bench(cli, pair, "-n", "5")
    assert r.code == 0, r
    doc = r.json
    assert doc["threads_from"] == "measured" and doc["source"]["intra_op_threads"] == doc["threads"]


def test_a_trusted_onnx_source_gets_the_threads_as_well(cli, pair):
    r = _bench(cli, pair, "--threads", "1", "-n", "5", "--trust")
    assert r.code == 0, r
    src = r.json["source"]
    assert src["runs_in"] == "this process" and src["intra_op_threads"] == 1 and src["spinning"] is False
    assert _source(r.json)["handover_p50_ms"] is None  # timed here: no pipe to leave out


def test_contained_session_rebuilds_at_the_asked_threads_and_times_itself(pair):
    from onnxkit.runtime.contained import ContainedSession

    heavy, _ = pair
    with ContainedSession(heavy) as sess:
        assert sess.threads is None and sess.spinning is True  # ONNX Runtime's defaults
        sess.configure(threads=1, spinning=False)
        assert sess.threads == 1 and sess.spinning is False
        out = sess.run({"x": np.ones((4, WIDTH), np.float32)})
        assert out[sess.output_names[0]].shape == (4, WIDTH)
        wall, cpu = sess.last_call_ms
        assert wall > 0 and cpu > 0


def test_round_robin_takes_a_runner_own_times_and_keeps_the_rest_apart():
    from onnxkit.runtime.timing import Runner, time_round_robin

    r = Runner("far", "onnx", lambda: None, own_times=lambda: (0.25, 0.2))
    time_round_robin([r], warmup=0, iterations=4, duration=None)
    assert r.times == [0.25] * 4 and r.cpu_times == [0.2] * 4
    assert len(r.overhead_ms) == 4 and all(x >= 0 for x in r.overhead_ms)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("threads,message", [("0", "--threads must be at least 1"),
                                             ("two", "malformed --threads 'two'")])
def test_bad_threads_with_an_untrusted_source(cli, pair, tmp_path, threads, message):
    heavy, light = pair
    before = {p: _digest(p) for p in pair}
    baseline = tmp_path / "base.json"
    r = cli("bench", light, "--vs", heavy, "--threads", threads, "--min-speedup", "2", "--save-baseline", baseline)
    assert r.code == 2, r
    assert r.stderr.startswith("Error: ") and message in r.stderr and "Traceback" not in r.stderr
    assert not baseline.exists() and list(tmp_path.iterdir()) == []
    assert {p: _digest(p) for p in pair} == before


def test_a_corrupt_untrusted_source_is_refused_before_timing(cli, pair, tmp_path):
    _, light = pair
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf model" * 4)
    digest = _digest(bad)
    baseline = tmp_path / "base.json"
    r = cli("bench", light, "--vs", bad, "--threads", "1", "--min-speedup", "2", "--save-baseline", baseline)
    assert r.code == 2, r
    assert r.stderr.startswith("Error: ") and "bad.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not baseline.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]
    assert _digest(bad) == digest


def _looping(path: Path) -> Path:
    """Takes x [N, 512] like the pair, then loops 10^12 times: hostile, or far too slow."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    v = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", WIDTH]) for n in ("v", "v_out")]
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Neg", ["v"], ["v_out"])],
                             "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                      helper.make_tensor_value_info("c", TensorProto.BOOL, []), v[0]],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), v[1]])
    graph = helper.make_graph([helper.make_node("Loop", ["M", "cond", "x"], ["y"], body=body)], "looping",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])],
                              [numpy_helper.from_array(np.array(10**12, np.int64), "M"),
                               numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_looping_untrusted_source_is_stopped_at_the_bench_timeout(cli, pair, tmp_path):
    import multiprocessing

    _, light = pair
    src = _looping(tmp_path / "loops.onnx")
    digest = _digest(src)
    baseline = tmp_path / "base.json"
    r = cli("bench", light, "--vs", src, "--threads", "1", "--timeout", "2", "-n", "5", "--save-baseline", baseline)
    assert r.code == 2, r
    assert r.stderr.startswith("Error: model loops.onnx did not finish") and "--timeout 2 s" in r.stderr, r.stderr
    assert not baseline.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["loops.onnx"]
    assert _digest(src) == digest
    assert not multiprocessing.active_children()  # the worker was killed, not left spinning


def test_a_failed_rebuild_ends_the_worker_and_every_later_run(pair):
    import multiprocessing

    from onnxkit.errors import InputError, UsageError
    from onnxkit.runtime.contained import ContainedSession

    heavy, _ = pair
    sess = ContainedSession(heavy)
    with pytest.raises(UsageError, match="--threads must be at least 1"):
        sess.configure(threads=-1, spinning=False)
    with pytest.raises(InputError, match="--threads must be at least 1"):
        sess.run({"x": np.ones((1, WIDTH), np.float32)})
    sess.close()
    assert not multiprocessing.active_children()
