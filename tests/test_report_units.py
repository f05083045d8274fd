"""What the reports say and draw: one size unit everywhere, log axes for wide spans, failed
gates written as conditions, the latency table with its speed-up interval, and the wording
of the optimize and localize reports. Everything here is built in memory: fast."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

from onnxkit.operations.pipeline import (
    FAILED,
    PASSED,
    GateOutcome,
    PipelineResult,
    StepRecord,
)
from onnxkit.results import fmt_bytes
from onnxkit.runtime.bench import BenchEntry, BenchResult, LatencyStats
from onnxkit.runtime.speedup_ci import speedup_ci

# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.00 kB"), (81_200, "81.20 kB"), (1_440_000, "1.44 MB"),
    (2_500_000_000, "2.50 GB"), (None, "-"),
])
def test_sizes_are_decimal(n, text):
    assert fmt_bytes(n) == text


def _capture_figures(monkeypatch):
    """Keep every figure a plot function draws, so the test reads its axes and labels."""
    from onnxkit.reports import plots

    figures = []
    real = plots._png

    def keep(fig):
        figures.append(fig)
        return real(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return figures


def _texts(fig) -> list[str]:
    ax = fig.axes[0]
    return [t.get_text() for t in ax.texts] + [ax.get_ylabel()]


def test_size_plot_labels_match_the_tables_and_its_axis_unit(monkeypatch):
    pytest.importorskip("matplotlib")
    from onnxkit.reports import plots

    figures = _capture_figures(monkeypatch)
    sizes = [("source", 81_200), ("exported", 79_270), ("quantized", 24_000)]
    assert plots.size_plot(sizes)
    texts = _texts(figures[0])
    for _, n in sizes:
        assert fmt_bytes(n) in texts  # "81.20 kB", as the Artifacts table writes it
    assert texts[-1].startswith("size, kB (1 kB = 1,000 bytes")
    assert figures[0].axes[0].get_yscale() == "linear"


def test_size_plot_goes_log_when_sizes_span_more_than_10x(monkeypatch):
    pytest.importorskip("matplotlib")
    from onnxkit.reports import plots

    figures = _capture_figures(monkeypatch)
    plots.size_plot([("source", 90_000_000), ("quantized", 2_000_000)])
    assert figures[0].axes[0].get_yscale() == "log"
    assert "MB" in figures[0].axes[0].get_ylabel() and "log" in figures[0].axes[0].get_ylabel()


@pytest.mark.parametrize(("p50s", "scale"), [((0.04, 0.05, 12.0), "log"), ((1.0, 1.5, 9.0), "linear"), ((1.0, 11.0), "log")])
def test_latency_plot_axis_follows_the_span(monkeypatch, p50s, scale):
    pytest.importorskip("matplotlib")
    from onnxkit.reports import plots

    figures = _capture_figures(monkeypatch)
    rows = [(f"v{i}", 8, p, p * 1.05) for i, p in enumerate(p50s)]
    assert plots.latency_plot(rows)
    assert figures[0].axes[0].get_yscale() == scale


# ---------------------------------------------------------------- gates and the summary


def _gate(name, threshold, actual, passed, detail=""):
    return GateOutcome(name=name, threshold=threshold, actual=actual, passed=passed, detail=detail)


def test_failed_gates_read_as_the_condition_that_holds():
    from onnxkit.reports.pipeline_md import gate_condition

    assert gate_condition(_gate("max_latency_ms", 0.001, 0.02669, False)) == "p99 0.02669 ms > max_latency_ms 0.001"
    assert gate_condition(_gate("min_speedup", 2.0, 1.4, False, "q.onnx vs source")) == "speed-up 1.4x < min_speedup 2 (q.onnx vs source)"
    assert gate_condition(_gate("max_size_mb", 5.0, 0.326, True)) == "size 0.326 MB <= max_size_mb 5"
    assert gate_condition(_gate("max_error.max_abs", 1e-3, 0.5, False)) == "max_abs 0.5 > max_error.max_abs 0.001"
    # Enough digits that the value does not print as its threshold.
    assert gate_condition(_gate("min_cosine", 0.9999, 0.99985, False)) == "cosine 0.99985 < min_cosine 0.9999"
    assert gate_condition(_gate("min_speedup", 1.0, None, False, "bench is disabled")) == "min_speedup >= 1: not measured (bench is disabled)"


def _entry(name, batch, times, *, source=False, speedup=None, ci=None):
    e = BenchEntry(name, "torch" if source else "onnx", batch, LatencyStats.from_times(times, batch), is_source=source)
    e.speedup_vs_source, e.speedup_ci95 = speedup, ci
    return e


def _result_with_bench(gates):
    bench = BenchResult(iterations=3, batch_sizes=[8], entries=[
        _entry("quantized", 8, [1.0, 1.1, 0.9], speedup=4.0, ci=(3.5, 4.6)),
        _entry("m.pt2", 8, [4.0, 4.2, 3.9], source=True),
    ])
    return PipelineResult(command="pipeline", config="/x/onnxkit.toml", source="/x/m.pt2", passed=False,
                          steps=[StepRecord("bench", PASSED, result=bench)], gates=gates)


def test_markdown_summary_has_the_failed_condition_first_and_a_latency_table():
    from onnxkit.reports.pipeline_md import pipeline_markdown

    md = pipeline_markdown(_result_with_bench([_gate("max_latency_ms", 0.001, 0.02669, False, "p99 of q.onnx at batch 8")]))
    failed = md.index("**What failed**")
    assert failed < md.index("**Pipeline steps**")
    assert "- gate p99 0.02669 ms &gt; max_latency_ms 0.001 (p99 of q.onnx at batch 8)" in md
    assert "0.02669 <= 0.001" not in md
    table = md[md.index("**Latency (bench step)**"):]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| variant | batch | p50 ms | p99 ms | speed-up vs source (p50) |"
    # The source comes first at its batch size, the reference of the speed-ups below it.
    assert lines[1].startswith("| m.pt2 (torch, source) | 8 | 4.000 |") and "1x (reference)" in lines[1]
    assert lines[2] == "| quantized | 8 | 1.000 | 1.098 | 4.00x (95% CI 3.50-4.60x) |"


def test_latency_table_keeps_three_significant_digits_below_a_millisecond():
    from onnxkit.reports.pipeline_md import latency_table

    res = _result_with_bench([])
    res.steps[0].result.entries.append(_entry("tiny", 1, [0.00912, 0.00913, 0.00911], speedup=1.02, ci=None))
    rows = latency_table(res).rows
    assert rows[0] == ["tiny", 1, "0.00912", "0.00913", "1.02x"]  # batch 1 before batch 8


def test_junit_and_html_use_the_same_condition():
    from onnxkit.reports.html import pipeline_html
    from onnxkit.reports.pipeline_md import junit_cases

    res = _result_with_bench([_gate("min_speedup", 5.0, 4.0, False)])
    case = junit_cases(res)[-1]
    assert case[:3] == ("gate: min_speedup", False, "speed-up 4x < min_speedup 5")
    page = pipeline_html(res)
    assert "<li>gate speed-up 4x &lt; min_speedup 5</li>" in page
    assert "<h2>Latency</h2>" in page and "4.00x (95% CI 3.50-4.60x)" in page


def test_html_plots_decode_and_have_a_sensible_size():
    pytest.importorskip("matplotlib")
    from PIL import Image

    from onnxkit.reports.html import pipeline_html

    res = _result_with_bench([])
    res.steps[0].status = FAILED
    page = pipeline_html(res)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert [alt for _, alt in images] == ["latency per variant"]
    for data, _ in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()
        assert 300 <= img.width <= 2000 and 200 <= img.height <= 1200


# ---------------------------------------------------------------- the speed-up interval


def test_speedup_interval_brackets_the_ratio_of_medians():
    rng = np.random.default_rng(0)
    model = 1.0 + rng.exponential(0.05, 60)
    source = 3.0 * model + rng.normal(0, 0.05, 60)
    low, high = speedup_ci(list(source), list(model))
    ratio = float(np.median(source) / np.median(model))
    assert low < ratio < high and 2.8 < low and high < 3.2
    assert speedup_ci(list(source), list(model)) == (low, high)  # seeded: a report is reproducible


def test_speedup_interval_is_absent_for_too_few_or_broken_rounds():
    assert speedup_ci([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) is None
    assert speedup_ci([1.0] * 10, [1.0] * 9 + [0.0]) is None
    assert speedup_ci([1.0] * 10, [1.0] * 9 + [float("nan")]) is None


# ---------------------------------------------------------------- wording


def test_optimize_latency_label_names_the_shapes_timed():
    from onnxkit.operations.optimize import feeds_label

    cnn = {"image": np.zeros((1, 3, 32, 32), np.float32)}
    assert feeds_label(cnn) == "random image 1x3x32x32"
    text = {"input_ids": np.zeros((1, 32), np.int64), "attention_mask": np.zeros((1, 32), np.int64)}
    assert feeds_label(text) == "random input_ids, attention_mask 1x32"


def _chain(path, *, first: str = "Relu", hidden: str = "h", second: str = "Mul", scale: float = 2.0):
    """x -> FIRST -> HIDDEN -> SECOND(k) -> y_mid -> Identity -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node(first, ["x"], [hidden], name="first"),
         helper.make_node(second, [hidden, "k"], ["y_mid"], name="second"),
         helper.make_node("Identity", ["y_mid"], ["y"], name="out")],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.full((4,), scale, np.float32), "k")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(("candidate", "says", "never"), [
    # The candidate computes its hidden tensor differently under another name: the node that
    # diverges has an input the reference cannot be asked about.
    ({"first": "Neg", "hidden": "h_cand"}, ("its input(s) h_cand could not be compared (no tensor of that name in the reference), "
                                            "so the difference may come from before this node (k agree)"), "inputs agree"),
    ({"scale": 3.0}, "its weight(s) k differ between the models", "inputs agree"),
    ({"second": "Add"}, "its inputs agree, so this node itself computes differently", "could not be compared"),
])
def test_localize_says_what_it_compared(tmp_path, candidate, says, never):
    from onnxkit.foundation.compare import Tolerance
    from onnxkit.operations.localize import localize

    ref = _chain(tmp_path / "ref.onnx")
    cand = _chain(tmp_path / "cand.onnx", **candidate)
    x = np.abs(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)) + 1
    loc = localize(ref, cand, {"x": x}, Tolerance())
    assert loc.found and loc.node == "second", loc.message
    assert loc.message.startswith("first divergence at node second")
    assert says in loc.message and never not in loc.message
