"""A self-contained HTML report of a pipeline run.

One file, no network: CSS inline, plots embedded as base64 PNG, no scripts. It opens the
same from a CI artifact download, an e-mail attachment or an air-gapped machine.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxkit.results import Table, fmt_bytes, fmt_num, shown

if TYPE_CHECKING:
    from onnxkit.operations.pipeline import PipelineResult

log = logging.getLogger(__name__)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1em;margin:1.2em 0 .3em}
.verdict{display:inline-block;padding:.25em .8em;border-radius:4px;font-weight:700;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}.skip{background:#757575}.err{background:#6a1b9a}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:13px}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fdecea}code{font-size:12px;word-break:break-all}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.muted{color:#666}details{margin:.5em 0}summary{cursor:pointer}
"""


def _e(v: Any) -> str:
    return html.escape(shown(v) if isinstance(v, str) else fmt_num(v))


def _table(t: Table, bad_col: int | None = None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        bad = bad_col is not None and bad_col < len(row) and str(row[bad_col]).upper() in ("FAIL", "FAILED", "ERROR", "DISAGREES")
        cells = "".join(
            f"<td class=num>{_e(c)}</td>" if isinstance(c, (int, float)) and not isinstance(c, bool) else f"<td>{_e(c)}</td>"
            for c in row
        )
        body.append(f"<tr{' class=bad' if bad else ''}>{cells}</tr>")
    title = f"<h3>{_e(t.title)}</h3>" if t.title else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}">'


def _plots(res: PipelineResult) -> list[str]:
    """Every plot we can draw; a missing matplotlib costs the plots, not the report."""
    from onnxkit.operations.gates import bench_rows
    from onnxkit.operations.pipeline import validation_stages
    from onnxkit.errors import MissingDependency
    from onnxkit.reports import plots

    out: list[str] = []
    try:
        stages = validation_stages(res)
        out.append(_img(plots.error_plot(stages), "error per output and stage"))
        bench = res.step("bench")
        rows = bench_rows(bench.result if bench else None)
        out.append(_img(plots.latency_plot([(r["variant"], r["batch"], r.get("p50_ms"), r.get("p99_ms")) for r in rows]),
                        "latency per variant"))
        sizes = [(a.role, a.size) for a in (res.provenance.artifacts if res.provenance else [])]
        out.append(_img(plots.size_plot(sizes), "size per variant"))
    except MissingDependency as exc:
        out.append(f"<p class=muted>Plots left out: {_e(exc.message)}</p>")
    return [o for o in out if o]


def pipeline_html(res: PipelineResult) -> str:
    """The whole report as one HTML document."""
    from onnxkit.operations.pipeline import ERROR, FAILED, PASSED, SKIPPED
    from onnxkit.reports.pipeline_md import failure_lines, latency_table

    ok = res.passed and not res.error_code
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>onnxkit pipeline: {'PASSED' if ok else 'FAILED'} — {html.escape(Path(res.source).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>onnxkit pipeline <span class='verdict {'pass' if ok else 'fail'}'>{'PASSED' if ok else 'FAILED'}</span></h1>",
        f"<p class=muted>config <code>{_e(res.config)}</code> · source <code>{_e(res.source)}</code>"
        + (f" · final model <code>{_e(res.final_model)}</code>" if res.final_model else "")
        + f" · {res.seconds:.1f} s · exit code {res.exit_code}</p>",
    ]
    failures = failure_lines(res)
    if failures:
        parts.append("<h2>What failed</h2><ul>" + "".join(f"<li>{_e(f)}</li>" for f in failures) + "</ul>")

    cls = {PASSED: "pass", FAILED: "fail", SKIPPED: "skip", ERROR: "err"}
    rows = "".join(
        f"<tr{' class=bad' if s.status in (FAILED, ERROR) else ''}><td>{_e(s.name)}</td>"
        f"<td><span class='verdict {cls[s.status]}'>{_e(s.status)}</span></td>"
        f"<td class=num>{s.seconds:.2f} s</td><td>{_e(Path(s.artifact).name) if s.artifact else '-'}</td>"
        f"<td>{_e(s.reason or '-')}</td></tr>"
        for s in res.steps
    )
    parts.append("<h2>Steps</h2><table><thead><tr><th>step</th><th>status</th><th>time</th><th>artifact</th><th>detail</th></tr>"
                 f"</thead><tbody>{rows}</tbody></table>")
    if res.gates:
        grows = "".join(
            f"<tr{'' if g.passed else ' class=bad'}><td><code>{_e(g.name)}</code></td><td class=num>{_e(g.threshold)}</td>"
            f"<td class=num>{_e(g.actual) if g.actual is not None else 'not measured'}</td>"
            f"<td><span class='verdict {'pass' if g.passed else 'fail'}'>{_e(_gate_status(g))}</span></td>"
            f"<td>{_e(g.detail or '-')}</td></tr>"
            for g in res.gates
        )
        parts.append("<h2>Gates</h2><table><thead><tr><th>gate</th><th>threshold</th><th>actual</th><th>verdict</th><th>detail</th>"
                     f"</tr></thead><tbody>{grows}</tbody></table>")

    latency = latency_table(res)
    if latency is not None:
        parts.append("<h2>Latency</h2>" + _table(Table("", latency.columns, latency.rows)))
    parts += _targets_html(res)
    plots = _plots(res)
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(plots))

    parts.append("<h2>Step details</h2>")
    for s in res.steps:
        if s.result is None:
            continue
        inner = "".join(_table(t, bad_col=len(t.columns) - 1) for t in s.result.tables())
        notes = "".join(f"<li>{_e(n)}</li>" for n in s.result.notes)
        parts.append(f"<details{' open' if s.status in (FAILED, ERROR) else ''}><summary><b>{_e(s.name)}</b> — {_e(s.status)}</summary>"
                     f"{inner}{'<ul>' + notes + '</ul>' if notes else ''}</details>")

    if res.provenance:
        p = res.provenance
        parts.append("<h2>Provenance</h2>")
        parts.append(_table(Table("", ["property", "value"], p.rows())))
        if p.artifacts:
            parts.append(_table(Table("Files", ["role", "path", "size", "sha256", "opsets"], [
                [a.role, a.path, fmt_bytes(a.size), a.sha256, ", ".join(f"{d} {v}" for d, v in a.opsets.items()) or "-"]
                for a in p.artifacts
            ])))
    if res.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in res.notes) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _gate_status(g) -> str:
    """pass, FAIL or INCONCLUSIVE (a timed gate whose interval straddles its threshold)."""
    status = getattr(g, "status", "") or ("pass" if g.passed else "fail")
    return status if g.passed else status.upper()


def _targets_html(res: PipelineResult) -> list[str]:
    """The final model on each deployment target, with the reason of each that did not pass."""
    from onnxkit.reports.targets_table import reasons, targets_table

    step = res.step("targets")
    table = targets_table(step.result, title="") if step is not None and step.result is not None else None
    if table is None:
        return []
    why = reasons(step.result)
    return ["<h2>Targets</h2>", f"<p class=muted>{_e(Path(step.artifact or '').name)} against ONNX Runtime CPU</p>",
            _table(table, bad_col=len(table.columns) - 1)
            + ("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in why) + "</ul>" if why else "")]
