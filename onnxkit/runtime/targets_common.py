"""What every deployment-target runner returns, and the helpers they share.

A runner is a top-level function ``run(model_path, feeds, precision, options) -> dict`` so
that it can be sent to a contained child process (:func:`onnxkit.foundation.sandbox.run_isolated`)
for untrusted models; its reply is plain data: outputs as arrays, everything else as text
and numbers. A runner never raises for a model the target cannot take: that is the answer,
given as ``stage`` and ``error``."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The stage of a reply whose target cannot run on this machine at all (a browser that cannot
# start): reported as unavailable, not as the model failing there.
UNAVAILABLE = "unavailable"

# Runs timed after one warm-up run: few, because some targets are slow and the point is
# an order of magnitude next to the CPU reference, not a benchmark.
TIMED_RUNS = 5

# ONNX Runtime's words for "no kernel for this node" (the op type and the node's name).
_ORT_NO_KERNEL = re.compile(
    r"Could not find an implementation for (?P<op>[\w.]+)\(\d+\) node with name '(?P<node>[^']*)'")
_ORT_NO_SCHEMA = re.compile(r"Unrecognized attribute|No Op registered for (?P<op>[\w.]+) with domain_version of \d+")
_ORT_NODE = re.compile(r"Node \((?P<node>[^)]*)\)")


def reply(*, stage: str = "ran", error: str | None = None, outputs: list[dict] | None = None,
          precision: str | None = None, latency_ms: float | None = None,
          unsupported: list[list[str]] | None = None, notes: list[str] | None = None,
          extra: dict[str, Any] | None = None) -> dict:
    return {
        "stage": stage, "error": error, "outputs": outputs or [], "precision": precision,
        "latency_ms": latency_ms, "unsupported": unsupported or [], "notes": notes or [],
        "extra": extra or {},
    }


def first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip()
    # ORT prefixes its messages with "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : "
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def ort_unsupported(message: str) -> list[list[str]]:
    """[op type, node name] pairs an ONNX Runtime error names as having no kernel."""
    found = [[m["op"], m["node"]] for m in _ORT_NO_KERNEL.finditer(message)]
    if not found:
        m = _ORT_NO_SCHEMA.search(message)
        if m and m.group("op"):
            node = _ORT_NODE.search(message)
            found.append([m["op"], node["node"] if node else ""])
    return found


def timed(fn: Callable[[], Any]) -> float:
    """Median wall time of ``fn`` in milliseconds over TIMED_RUNS runs (after one warm-up
    run that the caller already made)."""
    times = []
    for _ in range(TIMED_RUNS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def run_ort_session(sess: Any, feeds: list[dict]) -> tuple[list[dict], float]:
    """Outputs of an ONNX Runtime session on each feed, and the latency on the first."""
    from onnxkit.runtime.session import _as_array

    names = [o.name for o in sess.get_outputs()]
    outs = []
    for f in feeds:
        outs.append({n: _as_array(v) for n, v in zip(names, sess.run(None, f))})
    latency = timed(lambda: sess.run(None, feeds[0])) if feeds else None
    return outs, latency


def external_files(src: Path) -> list[str]:
    """The external-data files a model names (relative to its folder; load_onnx has checked them)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(src), load_external_data=False)
    found = []
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            found.extend(e.value for e in t.external_data if e.key == "location")
    return sorted(set(found))


def session_rss_mb(sid: int) -> float:
    """Resident memory, in MB, of every process in session ``sid``: a browser started with
    ``start_new_session`` and the renderer, GPU and zygote processes it forks."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    pages = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
            # the fields after "(comm)": state, ppid, pgrp, session ... rss is the 22nd
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[3]) == sid:
                pages += int(fields[21])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return pages * page / 2**20


def over_memory(proc: Any, memory_mb: int | None) -> str | None:
    """Why ``proc`` (started in its own session) must be stopped for memory, or None."""
    if not memory_mb:
        return None
    used = session_rss_mb(proc.pid)
    if used > memory_mb:
        return f"used more than {memory_mb} MB of memory ({used:.0f} MB resident) and was stopped"
    return None
