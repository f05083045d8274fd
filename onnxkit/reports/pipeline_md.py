"""What a pipeline run says in text: the Markdown job summary, the JUnit cases, the gate
conditions and the latency table that the HTML report shares.

Kept out of :mod:`onnxkit.operations.pipeline`, which runs the steps: rendering reads a finished
:class:`~onnxkit.operations.pipeline.PipelineResult` and changes nothing in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxkit.operations.gate_text import gate_condition
from onnxkit.results import Table, fmt_bytes, fmt_num, shown

if TYPE_CHECKING:
    from onnxkit.operations.pipeline import PipelineResult

def failure_lines(res: PipelineResult) -> list[str]:
    """Every failed or errored step and every failed gate (as its condition), one line each."""
    return res.failures()


def fmt_speedup(speedup: float | None, ci: Any = None) -> str:
    """``3.97x (95% CI 3.81-4.12x)``; ``-`` when not measured."""
    if not isinstance(speedup, (int, float)):
        return "-"
    text = f"{speedup:.2f}x"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        text += f" (95% CI {ci[0]:.2f}-{ci[1]:.2f}x)"
    return text


def _ms(v: float) -> str:
    """Milliseconds with three decimals, or three significant digits below 1 ms: a model
    that runs in 9.12 us prints 0.00912, not 0.009."""
    return f"{v:.3f}" if v >= 1 else f"{v:.3g}"


def latency_table(res: PipelineResult) -> Table | None:
    """The bench step's timings, the source first at each batch size, with the speed-up of
    every variant against the source and its bootstrap interval. None when nothing was timed."""
    bench = res.step("bench")
    entries = list(getattr(bench.result, "entries", None) or []) if bench else []
    if not entries:
        return None
    entries.sort(key=lambda e: (e.batch_size, not e.is_source))
    rows = []
    for e in entries:
        name = f"{e.name} ({e.kind}, source)" if e.is_source else e.name
        speed = "1x (reference)" if e.is_source else fmt_speedup(e.speedup_vs_source, getattr(e, "speedup_ci95", None))
        rows.append([name, e.batch_size, _ms(e.stats.p50_ms), _ms(e.stats.p99_ms), speed])
    return Table("Latency (bench step)", ["variant", "batch", "p50 ms", "p99 ms", "speed-up vs source (p50)"], rows)


def junit_cases(res: PipelineResult) -> list[tuple[str, bool, str, str]]:
    """One testcase per step and per gate, as (name, passed, message, details) for the
    JUnit writer. A skipped step passes (it checked nothing) and says why in its output."""
    from onnxkit.operations.pipeline import PASSED, SKIPPED

    cases = []
    for s in res.steps:
        details = ""
        if s.result is not None:
            details = "\n\n".join(
                f"{shown(t.title)}\n" + "\n".join(" | ".join(shown(c) if isinstance(c, str) else fmt_num(c) for c in row) for row in t.rows)
                for t in s.result.tables()
            )
        if s.status == SKIPPED:
            details = f"skipped: {shown(s.reason)}"
        message = f"{s.status}: {s.reason}" if s.reason else s.status
        cases.append((f"step: {s.name}", s.status in (PASSED, SKIPPED), message, details))
    for g in res.gates:
        line = gate_condition(g)
        cases.append((f"gate: {g.name}", g.passed, line, line))
    step = res.step("targets")
    if step is not None and step.result is not None:
        from onnxkit.reports.targets_table import junit_cases as target_cases

        cases += target_cases(step.result)
    return cases


def pipeline_junit(res: PipelineResult) -> str:
    from onnxkit.reports.junit import junit_xml

    props = {"config": res.config, "source": res.source, "final_model": res.final_model or "", "exit_code": str(res.exit_code)}
    if res.provenance:
        props |= {k: str(v) for k, v in res.provenance.rows()}
    return junit_xml(f"onnxkit pipeline {Path(res.config).name}", junit_cases(res), classname="onnxkit.pipeline",
                     properties=props, time_s=res.seconds)


def pipeline_markdown(res: PipelineResult) -> str:
    """The job summary: verdict, what failed, steps, gates, artifacts, latency, accuracy per
    stage, provenance in a fold."""
    from onnxkit.reports.markdown import md_cell, result_markdown, table_markdown

    ok = res.passed and not res.error_code
    head = f"onnxkit pipeline `{Path(res.config).name}` ({Path(res.source).name}, {res.seconds:.1f} s)"
    heading, _, tables = result_markdown(res, title=head).rstrip().partition("\n")
    parts = [heading]
    if not ok:  # first, so a reader of a failed job sees why before the tables
        parts += ["", "**What failed**", ""] + [f"- {md_cell(f)}" for f in failure_lines(res)]
    parts.append(tables)
    latency = latency_table(res)
    if latency is not None:
        parts += ["", table_markdown(latency)]
    parts += _targets_markdown(res)
    for s in res.steps:
        if s.name.startswith("validate ") and s.result is not None:
            first = s.result.tables()[0]
            parts += ["", table_markdown(Table(f"{s.name}: {first.title}", first.columns, first.rows))]
    if res.provenance:
        p = res.provenance
        parts += ["", "<details><summary>Provenance</summary>", "", table_markdown(Table("Versions and machine", ["property", "value"], p.rows())),
                  "", table_markdown(Table("Files", ["role", "file", "size", "sha256"],
                                           [[a.role, Path(a.path).name, fmt_bytes(a.size), a.sha256] for a in p.artifacts])),
                  "", "</details>"]
    if "html" in res.reports:
        parts += ["", f"HTML report: `{res.reports['html']}`"]
    return "\n".join(parts) + "\n"


def _targets_markdown(res: PipelineResult) -> list[str]:
    """The targets table of the final model, and why each target that did not pass."""
    from onnxkit.reports.markdown import md_cell, table_markdown
    from onnxkit.reports.targets_table import reasons, targets_table

    step = res.step("targets")
    table = targets_table(step.result if step else None, title=f"Targets: {Path(step.artifact or '').name} "
                          "against ONNX Runtime CPU") if step else None
    if table is None:
        return []
    return ["", table_markdown(table)] + [f"- {md_cell(r)}" for r in reasons(step.result)]
