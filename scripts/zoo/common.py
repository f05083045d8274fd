"""What every zoo family shares: the case record, the by-hand comparison with ONNX Runtime and
the onnxkit subprocess.

The by-hand comparison deliberately does not use onnxkit.foundation.compare: it is the yardstick
onnxkit is measured against, so it must not share onnxkit's bugs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# The fp32 preset of onnxkit (docs/validation.md), so both routes are judged alike.
ATOL = 2e-5
RTOL = 1e-4
SEED = 0


@dataclass
class Case:
    """One built model: how onnxkit is asked to export it and how the raw converter is."""

    family: str
    model: str
    route: str  # the form handed to onnxkit: .pt2, factory, .keras, .skops, .json, .txt
    export_args: list[str]  # SOURCE and options for `onnxkit export`, without -o/--json
    raw_export: Callable[[Path], None]  # writes the raw converter's ONNX file to the path
    inputs: Callable[[int], list[np.ndarray]]  # positional inputs for a batch size
    reference: Callable[[list[np.ndarray]], list[np.ndarray]]  # the source model's outputs
    carries_code: bool = False  # a refusal without --trust is then the right answer
    batches: tuple[int, ...] = (1, 8)
    notes: list[str] = field(default_factory=list)


def env_for_children() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_onnxkit_export(case: Case, out: Path, timeout: float) -> dict:
    """`onnxkit export ... --json` in its own process, as a user runs it."""
    cmd = [PYTHON, "-m", "onnxkit", "export", *case.export_args, "-o", str(out), "--json"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env_for_children())
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "verdict": "TIMEOUT", "seconds": round(time.perf_counter() - t0, 2), "error": f"no answer in {timeout:.0f} s"}
    seconds = round(time.perf_counter() - t0, 2)
    result: dict = {"exit_code": proc.returncode, "seconds": seconds}
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = None
        result["error"] = "stdout is not one JSON document: " + (proc.stdout.strip()[-300:] or "(empty)")
    if "Traceback" in proc.stderr:
        result["traceback"] = proc.stderr.strip().splitlines()[-1][:300]
    if isinstance(doc, dict):
        if "error" in doc:
            result["error"] = str(doc["error"])[:500]
            result["verdict"] = doc.get("kind", "error")
        else:
            result["verdict"] = doc.get("verdict")
            outs = ((doc.get("validation") or {}).get("outputs")) or []
            diffs = [o.get("max_abs") for o in outs if o.get("max_abs") is not None]
            rels = [o.get("max_rel") for o in outs if o.get("max_rel") is not None]
            result["max_abs"] = max(diffs) if diffs else None
            result["max_rel"] = max(rels) if rels else None
            problems = [p for o in outs for p in (o.get("problems") or [])]
            if not problems and doc.get("verdict") != "PASSED":
                # Failed before any output was compared (the checker, a load error): the notes say why.
                problems = [n for n in (doc.get("notes") or []) + ((doc.get("validation") or {}).get("notes") or [])
                            if not n.startswith("opset ")]
            if problems:
                result["problems"] = problems[:3]
    result["command"] = "onnxkit export " + " ".join(_short(a) for a in case.export_args) + " -o m.onnx"
    return result


def run_onnxkit_validate(case: Case, onnx_file: Path, timeout: float) -> dict:
    """`onnxkit validate SOURCE FILE --json`: onnxkit's own verdict on another file (the raw
    converter's), on the very inputs and tolerance its export validated with."""
    args = [a for a in case.export_args]
    cmd = [PYTHON, "-m", "onnxkit", "validate", args[0], str(onnx_file), *args[1:], "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env_for_children())
    except subprocess.TimeoutExpired:
        return {"exit_code": None}
    result: dict = {"exit_code": proc.returncode}
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return result
    outs = (doc.get("outputs") or (doc.get("validation") or {}).get("outputs") or []) if isinstance(doc, dict) else []
    diffs = [o.get("max_abs") for o in outs if o.get("max_abs") is not None]
    result["max_abs"] = max(diffs) if diffs else None
    result["verdict"] = doc.get("verdict") if isinstance(doc, dict) else None
    return result


def _short(arg: str) -> str:
    return Path(arg).name if os.sep in arg and ":" not in arg else (arg if os.sep not in arg else arg.split(os.sep)[-1])


def run_onnx(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {}
    for meta, arr in zip(sess.get_inputs(), inputs):
        feed[meta.name] = np.ascontiguousarray(arr.astype(_np_dtype(meta.type), copy=False))
    if len(sess.get_inputs()) != len(inputs):
        raise ValueError(f"the ONNX file takes {len(sess.get_inputs())} inputs, the source {len(inputs)}")
    outs = sess.run(None, feed)
    return [_densify(o) for o in outs]


def _np_dtype(ort_type: str):
    table = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16, "tensor(string)": object}
    return table.get(ort_type, np.float32)


def _densify(out) -> np.ndarray:
    # ZipMap: a list of {class: probability}; compare it as a [rows, classes] array.
    if isinstance(out, list) and out and isinstance(out[0], dict):
        keys = sorted(out[0])
        return np.array([[row[k] for k in keys] for row in out], dtype=np.float64)
    return np.asarray(out)


def compare(refs: list[np.ndarray], cands: list[np.ndarray]) -> dict:
    """Pair every source output with the ONNX output of the same position, or failing that
    the same number of elements; numbers are judged with allclose, labels exactly."""
    max_abs = max_rel = 0.0
    problems: list[str] = []
    used: set[int] = set()
    for i, ref in enumerate(refs):
        ref = np.asarray(ref)
        j = i if i < len(cands) and np.asarray(cands[i]).size == ref.size else next(
            (k for k, c in enumerate(cands) if k not in used and np.asarray(c).size == ref.size), None)
        if j is None:
            problems.append(f"output {i}: no ONNX output with {ref.size} elements (shapes {[np.shape(c) for c in cands]})")
            continue
        used.add(j)
        cand = np.asarray(cands[j]).reshape(ref.shape)
        if ref.dtype.kind in "iubUSO" or cand.dtype.kind in "iubUSO":
            bad = int(np.sum(ref.astype(str) != cand.astype(str))) if ref.dtype.kind in "USO" or cand.dtype.kind in "USO" \
                else int(np.sum(ref.astype(np.int64) != cand.astype(np.int64)))
            if bad:
                problems.append(f"output {i}: {bad}/{ref.size} labels differ")
            continue
        r = ref.astype(np.float64)
        c = cand.astype(np.float64)
        nan_mismatch = int(np.sum(np.isnan(r) != np.isnan(c)))
        if nan_mismatch:
            problems.append(f"output {i}: NaN on one side only in {nan_mismatch} elements")
        finite = np.isfinite(r) & np.isfinite(c)
        d = np.abs(r - c)[finite]
        if d.size:
            max_abs = max(max_abs, float(d.max()))
            max_rel = max(max_rel, float((d / np.maximum(np.abs(r[finite]), 1e-12)).max()))
            over = int(np.sum(d > ATOL + RTOL * np.abs(r[finite])))
            if over:
                problems.append(f"output {i}: {over}/{ref.size} elements out of tolerance (max abs {d.max():.3g})")
    return {"ok": not problems, "max_abs": max_abs, "max_rel": max_rel, "problems": problems[:3]}


def check_onnx_file(case: Case, path: Path) -> dict:
    """Run the ONNX file on the case's inputs at each batch size and compare with the source."""
    worst = {"ok": True, "max_abs": 0.0, "max_rel": 0.0, "problems": []}
    for b in case.batches:
        xs = case.inputs(b)
        got = compare(case.reference(xs), run_onnx(path, xs))
        worst["ok"] = worst["ok"] and got["ok"]
        worst["max_abs"] = max(worst["max_abs"], got["max_abs"])
        worst["max_rel"] = max(worst["max_rel"], got["max_rel"])
        worst["problems"] += [f"batch {b}: {p}" for p in got["problems"]]
    worst["problems"] = worst["problems"][:3]
    return worst
