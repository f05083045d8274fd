"""The intra-op thread count is measured on the machine, not assumed: `bench --threads auto`
(and --vs by default), `--auto` and the pipeline time 1, 2, 4, ... usable cores briefly,
time every side at one count, and record the fastest per model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxkit.runtime import threads_probe
from onnxkit.runtime.threads_probe import candidate_counts, probe_threads


@pytest.mark.parametrize(("usable", "counts"), [
    (None, [1]), (1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8]),
])
def test_counts_tried(usable, counts):
    assert candidate_counts(usable) == counts


def test_each_model_gets_its_fastest_count_and_all_are_timed_at_the_best_together(monkeypatch, linear_onnx):
    """Fake timings: the model is fastest at 4 threads, the source at 1 (a spin-waiting
    framework on a busy machine); together, 2 costs least (geometric mean)."""
    import onnxkit.runtime.bench  # noqa: F401  (imported first, so it keeps the real timing loop)
    from onnxkit.runtime import timing

    table = {"m": {1: 8.0, 2: 3.0, 4: 2.0}, "src": {1: 10.0, 2: 12.0, 4: 40.0}}
    calls = iter([1, 2, 4])

    def fake_round_robin(runners, **_):
        count = next(calls)
        for r in runners:
            r.times = [table[r.name][count]] * 7

    monkeypatch.setattr(timing, "time_round_robin", fake_round_robin)

    class Source:
        framework = "onnx"

        def predict(self, feeds):
            return None

    import numpy as np

    probe = probe_threads([linear_onnx], ["m"], {"x": np.ones((2, 4), np.float32)}, source=Source(), source_name="src",
                          counts=[1, 2, 4])
    assert probe.best == {"m": 4, "src": 1}
    assert probe.common == 2
    assert probe.p50_ms["src"] == {1: 10.0, 2: 12.0, 4: 40.0}
    assert "all timed at 2" in probe.summary()


def test_bench_threads_auto_reports_the_measured_count(cli, linear_onnx):
    r = cli("bench", linear_onnx, "--threads", "auto", "-n", "5", "--warmup", "1", "--json")
    assert r.code == 0, r
    doc = r.json
    counts = candidate_counts(threads_probe.usable_cores())
    assert doc["threads_from"] == "measured" and doc["threads"] in counts
    assert set(doc["thread_probe"]["linear"]) == {str(c) for c in counts}
    assert doc["recommended_threads"]["linear"] in counts
    r = cli("bench", linear_onnx, "--threads", "auto", "-n", "5", "--warmup", "1")
    assert r.code == 0 and "p50 ms by intra-op thread count" in r.stdout


def test_bench_vs_measures_by_default_and_times_both_sides_alike(cli, linear_onnx):
    r = cli("bench", linear_onnx, "--vs", linear_onnx, "-n", "5", "--warmup", "1", "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["threads_from"] == "measured" and isinstance(doc["threads"], int)
    assert set(doc["recommended_threads"]) == {"linear", "linear.onnx"}


def test_bench_without_vs_keeps_onnx_runtimes_default(cli, linear_onnx):
    r = cli("bench", linear_onnx, "-n", "3", "--warmup", "0", "--json")
    assert r.code == 0, r
    assert r.json["threads"] is None and r.json["thread_probe"] is None


def test_optimize_auto_records_the_recommended_thread_count(linear_onnx, tmp_path):
    from onnxkit.operations.autotune import auto_optimize

    res = auto_optimize(linear_onnx, tmp_path / "o.onnx", iterations=3, warmup=1, batch_sizes=(2,))
    counts = candidate_counts(threads_probe.usable_cores())
    assert res.threads_from == "measured" and res.threads in counts
    assert res.recommended_threads and set(res.recommended_threads.values()) <= set(counts)
    assert any("recommended intra_op_num_threads" in n for n in res.notes)
    assert f"{res.threads} threads (measured)" in res.tables()[0].title


def test_pipeline_writes_the_thread_count_into_provenance_and_reports(cli, linear_onnx, tmp_path):
    cfg = tmp_path / "p.toml"
    out = tmp_path / "out"
    cfg.write_text("\n".join([
        "[source]", f'path = "{linear_onnx.as_posix()}"', "[output]", f'dir = "{out.as_posix()}"',
        "[optimize]", "enabled = false", "[quantize]", "enabled = false",
        "[bench]", "iterations = 3", "warmup = 1", "batch_sizes = [2]",
    ]) + "\n")
    r = cli("pipeline", cfg, "--json")
    assert r.code == 0, r
    threads = r.json["provenance"]["threads"]
    assert threads["chosen_by"] == "measured" and threads["timed_at"] in candidate_counts(threads_probe.usable_cores())
    assert threads["recommended"] and len(threads["load_before"]) == 3
    report = Path(r.json["report_dir"])
    assert "recommended intra_op_num_threads" in (report / "summary.md").read_text()
    assert json.loads((report / "pipeline.json").read_text())["provenance"]["threads"]["recommended"]
