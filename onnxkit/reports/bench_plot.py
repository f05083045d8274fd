"""The bench's latency chart: p50 per batch size, whisker to p99, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxkit.errors import InputError

if TYPE_CHECKING:
    from onnxkit.runtime.bench import BenchResult


def plot_latencies(result: BenchResult, dest: str | Path) -> Path:
    """PNG bar chart of p50 latency per batch size (whisker to p99), written atomically;
    drawn by the shared report plotter."""
    from onnxkit.foundation.files import write_bytes_atomic
    from onnxkit.reports.plots import latency_plot

    png = latency_plot([(e.name + (f" ({e.kind})" if e.is_source else ""), e.batch_size, e.stats.p50_ms, e.stats.p99_ms)
                        for e in result.entries])
    if png is None:
        raise InputError("no latencies to plot")
    write_bytes_atomic(dest, png)
    result.plot = str(dest)
    return Path(dest)
