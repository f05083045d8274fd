"""Plots for the HTML report, as PNG bytes.

matplotlib is imported lazily and only through ``Figure`` + the Agg canvas, never
pyplot: no global backend is switched, no display is needed, and nothing is imported
unless a report is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

_COLORS = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5"]


def _figure(width: float = 7.0, height: float = 3.6) -> Any:
    from onnxkit._lazy import require

    require("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _positive(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


# Above this max/min ratio a linear axis flattens the small bars into the baseline (a
# framework at 12 ms next to ONNX variants at 0.04 ms), so the axis goes logarithmic.
LOG_SPAN = 10.0


def wants_log(values: Sequence[float]) -> bool:
    """Do these (positive) values span more than LOG_SPAN?"""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return bool(vals) and max(vals) / min(vals) > LOG_SPAN


def error_plot(stages: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> bytes | None:
    """Max / p99 / mean absolute error of every output, one group of bars per (stage, output).

    ``stages`` is [(stage label, [OutputComparison dicts])]. The raw differences are not
    kept by the comparator (it streams), so the distribution is drawn from its summary.
    Returns None when there is nothing numeric to draw.
    """
    groups: list[tuple[str, list[float | None]]] = []
    metrics = ("max_abs", "p99_abs", "mean_abs")
    for stage, outputs in stages:
        for o in outputs:
            vals = [_positive(o.get(m)) for m in metrics]
            if any(v is not None for v in vals):
                groups.append((f"{stage}\n{o.get('name', '?')}", vals))
    if not groups:
        return None
    fig = _figure(max(6.0, 1.1 * len(groups) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    # A perfect match (0 error) cannot sit on a log axis; draw it at a floor and say so.
    floor = 1e-12
    for j, metric in enumerate(metrics):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        ys = [max(g[1][j] or 0.0, floor) for g in groups]
        ax.bar(xs, ys, width, label=metric.replace("_", " "), color=_COLORS[j])
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    ax.set_ylabel("absolute error vs source (log)")
    ax.set_title("Error per output and stage (0 drawn at 1e-12)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def latency_plot(rows: Sequence[tuple[str, int, float | None, float | None]]) -> bytes | None:
    """p50 bars with a p99 whisker per variant, one group per batch size.

    ``rows`` is [(variant, batch size, p50 ms, p99 ms)].
    """
    rows = [r for r in rows if _positive(r[2]) is not None]
    if not rows:
        return None
    variants = list(dict.fromkeys(r[0] for r in rows))
    batches = sorted({r[1] for r in rows})
    fig = _figure(max(6.0, 1.5 * len(batches) * max(1, len(variants)) / 2 + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        xs, p50s, errs = [], [], []
        for i, b in enumerate(batches):
            hit = next((r for r in rows if r[0] == v and r[1] == b), None)
            if hit is None:
                continue
            xs.append(i + (j - (len(variants) - 1) / 2) * width)
            p50s.append(hit[2])
            p99 = _positive(hit[3])
            errs.append(max(p99 - hit[2], 0.0) if p99 is not None else 0.0)
        ax.bar(xs, p50s, width, yerr=[[0] * len(errs), errs], capsize=3, label=v, color=_COLORS[j % len(_COLORS)])
    ax.set_xticks(range(len(batches)))
    ax.set_xticklabels([f"batch {b}" for b in batches])
    # Whiskers count too: a p99 far above every p50 squeezes the bars as much.
    log = wants_log([r[2] for r in rows] + [v for r in rows if (v := _positive(r[3])) is not None])
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("latency, ms (bar p50, whisker p99)" + (", log" if log else ""))
    ax.set_title("Latency per variant", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def size_plot(sizes: Sequence[tuple[str, int]]) -> bytes | None:
    """File size per variant, in the decimal unit of the largest file; each bar is labelled
    by :func:`onnxkit.results.fmt_bytes`, as in the report's tables."""
    from onnxkit.results import BYTE_UNITS, fmt_bytes

    sizes = [s for s in sizes if s[1] and s[1] > 0]
    if not sizes:
        return None
    largest = max(n for _, n in sizes)
    unit, scale = next(((u, s) for u, s in BYTE_UNITS if largest >= s), ("B", 1.0))
    fig = _figure(max(5.0, 1.2 * len(sizes) + 2), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    vals = [n / scale for _, n in sizes]
    bars = ax.bar(range(len(sizes)), vals, 0.6, color=[_COLORS[i % len(_COLORS)] for i in range(len(sizes))])
    for bar, (_, n) in zip(bars, sizes):
        ax.annotate(fmt_bytes(n), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    log = wants_log(vals)
    if log:
        ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([s[0] for s in sizes])
    ax.set_ylabel(f"size, {unit} (1 {unit} = {scale:,.0f} bytes{', log' if log else ''})")
    ax.set_title("Size per variant", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
