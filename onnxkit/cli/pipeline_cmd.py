"""onnxkit pipeline CONFIG.toml"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


@app.command("pipeline")
def pipeline_command(
    config: Annotated[Path, typer.Argument(help="The pipeline config (write one with `onnxkit init MODEL`).", show_default=False)],
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Where the reports go (default: OUTPUT_DIR/report).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write the JUnit XML here.")] = None,
    gate: Annotated[list[str] | None, typer.Option("--gate", metavar="NAME=VALUE", help="Set or override a gate: NAME=VALUE (min_speedup, max_size_mb, max_latency_ms, min_cosine, max_error.max_abs|max_rel|mean_abs|p99_abs); VALUE off clears it. Repeatable.")] = None,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Export, validate, optimize, validate, quantize, validate and bench, as configured; then gates and reports.

    Writes JSON, JUnit XML, Markdown (appended to $GITHUB_STEP_SUMMARY when set) and a
    self-contained HTML report. Exit 1 when a step or gate fails, 2 for a bad config
    (naming the key and line), 3/4/5 when a step hit that kind of error.
    """
    common.setup(json_out, verbose, quiet)
    from onnxkit.operations.config import load_config
    from onnxkit.operations.pipeline import run_pipeline
    from onnxkit.reports.pipeline_files import write_reports
    from onnxkit.operations.pipeline_preflight import preflight_pipeline

    cfg = load_config(config, gate)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    reports_to = report_dir or cfg.output_dir / "report"
    step_summary = Path(summary) if summary else None
    # Data, paths and folders are checked before the first stage: a mistake found after the
    # export has cost the run, and a report path naming the source would destroy it.
    preflight_pipeline(cfg, reports_to, junit=junit, step_summary=step_summary)

    def progress(msg: str) -> None:
        if not common.STATE.quiet:
            sys.stderr.write(f"[pipeline] {msg}\n")
            sys.stderr.flush()

    result = run_pipeline(cfg, progress=progress)
    write_reports(result, reports_to, junit=junit, step_summary=step_summary)
    common.emit(result)
