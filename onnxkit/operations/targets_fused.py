"""Which of a model's com.microsoft fused ops (what ``optimize --transformer`` writes:
Attention, SkipLayerNormalization, BiasGelu, ...) each target cannot run, as measured on
this run, and which the mobile accelerators (NNAPI, CoreML) leave to the phone's CPU."""

from __future__ import annotations

import re
from typing import Any

from onnxkit.results import Table

CONTRIB = "com.microsoft"
# "com.microsoft.Attention", "com.microsoft:Attention", "com.microsoft.Attention-1" -> "Attention"
_PREFIX = re.compile(r"^com\.microsoft[.:]")
_VERSION = re.compile(r"-\d+$")


def contrib_ops(model: Any) -> list[str]:
    from onnxkit.foundation.onnx_walk import iter_nodes

    return sorted({n.op_type for n in iter_nodes(model) if n.domain == CONTRIB})


def _bare(op: str) -> str | None:
    """The op's name when it is a com.microsoft op (named with its domain), else None."""
    if not _PREFIX.match(op):
        return None
    return _VERSION.sub("", _PREFIX.sub("", op))


def summarize(targets: list, model: Any) -> dict[str, Any] | None:
    """{"in_model": [ops], "cannot_run": {target: [ops] or None when unknown}} (None: no fused ops)."""
    ops = contrib_ops(model)
    if not ops:
        return None
    cannot: dict[str, list[str] | None] = {}
    for t in targets:
        if t.status in ("unavailable", "skipped"):
            continue
        named = sorted({b for u in t.unsupported for b in [_bare(u["op"]) or u["op"]] if b in ops})
        # a target that failed without naming the ops it lacks says nothing about the fused ones
        cannot[t.target] = named if named or t.status != "failed" or t.unsupported else None
        for ep, info in (t.details.get("partitions") or {}).items() if t.target == "mobile" else ():
            if "error" in info:
                cannot[f"mobile {ep}"] = None
                continue
            cannot[f"mobile {ep}"] = sorted({_bare(op) for op in info.get("unsupported_ops", []) if _bare(op)})
    return {"in_model": ops, "cannot_run": cannot}


def table(summary: dict[str, Any], targets: list) -> Table:
    why = {t.target: f"unknown: it failed at {t.stage or 'run'}" for t in targets}
    rows = []
    for name, ops in summary["cannot_run"].items():
        if ops is None:
            text = why.get(name, "unknown: the usability check failed")
        else:
            text = ", ".join(ops) or "none (runs them all)"
        where = "the phone's CPU runs them" if name.startswith("mobile ") and ops else ""
        rows.append([name, text, where or "-"])
    return Table(f"com.microsoft fused ops in the model ({', '.join(summary['in_model'])}): which each target cannot run",
                 ["target", "cannot run", "note"], rows)
