"""The files a pipeline run leaves: JSON, JUnit XML, the Markdown summary and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxkit.reports.pipeline_md import pipeline_junit, pipeline_markdown

if TYPE_CHECKING:
    from onnxkit.operations.pipeline import PipelineResult


def write_reports(res: PipelineResult, report_dir: Path, *, junit: Path | None = None,
                  step_summary: Path | None = None) -> dict[str, str]:
    """JSON, JUnit XML, Markdown and HTML into ``report_dir``; ``junit`` is an extra JUnit
    copy where CI expects it; ``step_summary`` gets the Markdown appended."""
    from onnxkit.foundation.files import write_text_atomic
    from onnxkit.reports import html as html_report
    from onnxkit.reports.render import to_json

    from onnxkit.errors import EnvironmentProblem

    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create the report folder {report_dir}: {exc.strerror}") from None
    res.report_dir = str(report_dir)
    paths = {
        "json": report_dir / "pipeline.json",
        "junit": report_dir / "junit.xml",
        "markdown": report_dir / "summary.md",
        "html": report_dir / "report.html",
    }
    res.reports = {k: str(v) for k, v in paths.items()}
    if junit is not None:
        res.reports["junit (--junit)"] = str(junit)
    markdown = pipeline_markdown(res)
    junit_xml = pipeline_junit(res)
    write_text_atomic(paths["markdown"], markdown)
    write_text_atomic(paths["junit"], junit_xml)
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(junit, junit_xml)
    write_text_atomic(paths["html"], html_report.pipeline_html(res))
    if step_summary is not None:
        # Appended, not replaced: other steps of the same job write their own summaries.
        try:
            with open(step_summary, "a", encoding="utf-8") as f:
                f.write(markdown + "\n")
            res.reports["github step summary"] = str(step_summary)
        except OSError as exc:  # the summary is a courtesy; the files above are the record
            res.notes.append(f"could not append to $GITHUB_STEP_SUMMARY ({step_summary}): {exc.strerror}")
    write_text_atomic(paths["json"], to_json(res))
    return res.reports
