"""Where an ONNX model's time goes: ONNX Runtime's profiler, aggregated by op type.

The profile is of the session as ORT runs it, after its own graph fusions, so op types can
differ from the file's (MatMul + Add -> FusedMatMul, QDQ pairs -> QLinearConv). The GEMM
rates divide the work counted from the file (roofline.count_work) by the time of the
runtime's GEMM kernels of the same precision.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from typing import Any

import numpy as np

INT8_KERNELS = {"DynamicQuantizeMatMul", "MatMulInteger", "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat",
                "QGemm", "ConvInteger", "NhwcQLinearConv"}
FLOAT_KERNELS = {"MatMul", "Gemm", "Conv", "FusedConv", "FusedMatMul", "FusedGemm", "NhwcFusedConv", "NhwcConv",
                 "ConvTranspose", "MatMulNBits"}


def _cast(sess: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
    out = {}
    for i in sess.get_inputs():
        a = np.asarray(feeds[i.name])
        want = types.get(i.type)
        out[i.name] = a.astype(want) if want is not None and a.dtype != want else a
    return out


def profile(path: str, feeds: dict[str, np.ndarray], threads: int, runs: int = 10) -> dict[str, Any]:
    """Per-op-type median time per call over ``runs`` calls (the first, warm-up call left out)."""
    from onnxkit.runtime.session import ort

    rt = ort()
    so = rt.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="onnxkit-prof-") as tmp:
        so.profile_file_prefix = os.path.join(tmp, "p")
        sess = rt.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        f = _cast(sess, feeds)
        for _ in range(runs + 1):
            sess.run(None, f)
        with open(sess.end_profiling()) as fh:
            events = json.load(fh)
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[1:]
    if not model_runs:
        return {}
    # Per call, then the median over calls: on a shared machine one stalled call would
    # otherwise dominate a sum.
    per_run: list[dict[str, float]] = [{} for _ in model_runs]
    starts = [e["ts"] for e in model_runs]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        k = next((i for i in range(len(model_runs) - 1, -1, -1) if starts[i] <= e["ts"]), None)
        if k is None or e["ts"] > starts[k] + model_runs[k]["dur"]:
            continue  # the warm-up call, or between calls
        op = (e.get("args") or {}).get("op_name", "?")
        per_run[k][op] = per_run[k].get(op, 0.0) + e["dur"] / 1000.0
    ops_seen = {op for r in per_run for op in r}
    by_op = {op: statistics.median(r.get(op, 0.0) for r in per_run) for op in ops_seen}
    kernel_ms = sum(by_op.values())
    ops = sorted(({"op": k, "ms": v, "pct": 100 * v / max(kernel_ms, 1e-12)} for k, v in by_op.items()),
                 key=lambda d: -d["ms"])
    return {"runs": len(model_runs), "threads": threads,
            "model_run_ms": statistics.median(e["dur"] / 1000.0 for e in model_runs), "kernel_ms": kernel_ms, "by_op": ops}


def gemm_rates(prof: dict[str, Any], roof: dict[str, Any], peak_gops: dict[str, float]) -> dict[str, Any]:
    """Achieved GOP/s of the int8 and the float GEMM kernels, and their share of the peak."""
    if not prof:
        return {}
    t = prof["threads"]
    out = {}
    for dtype, kernels, ops in (("int8", INT8_KERNELS, roof.get("ops_int8", 0)),
                                ("float", FLOAT_KERNELS, roof.get("ops_float", 0) - roof.get("ops_float_in_attention", 0))):
        ms = sum(o["ms"] for o in prof["by_op"] if o["op"] in kernels)
        if ms <= 0 or ops <= 0:
            continue
        gops = ops / (ms / 1000) / 1e9
        peak = peak_gops.get(f"{dtype} {t}t")
        out[dtype] = {"ms": ms, "pct": 100 * ms / prof["kernel_ms"], "gops": gops,
                      "of_peak": gops / peak if peak else None}
    return out


def profile_rows(variants: list[tuple[str, str]], feeds_by_batch: dict[int, dict[str, np.ndarray]], rows: list[dict],
                 limits: dict[str, Any], *, min_int8_share: float = 0.5) -> list[dict[str, Any]]:
    """Profiles of the int8 GEMM-dominated variants (int8 work >= ``min_int8_share`` of all GEMM work)."""
    paths = dict(variants)
    out = []
    for r in rows:
        roof = r.get("roofline") or {}
        total = roof.get("ops_int8", 0) + roof.get("ops_float", 0)
        if r["source"] or not total or roof["ops_int8"] / total < min_int8_share or r["variant"] not in paths:
            continue
        try:
            prof = profile(paths[r["variant"]], feeds_by_batch[r["batch"]], limits.get("threads") or 1)
        except Exception as exc:  # noqa: BLE001 - a profile that fails is reported, not fatal
            print(f"  profile {r['variant']} b{r['batch']} failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        gemm = gemm_rates(prof, roof, limits.get("peak_gops", {}))
        prof["by_op"] = prof.get("by_op", [])[:8]
        out.append({"variant": r["variant"], "batch": r["batch"], "int8_share": roof["ops_int8"] / total, **prof,
                    "gemm": gemm})
    return out


def main(argv: list[str] | None = None) -> int:
    """Profile again the variants a suite run left in its work folder (``--work``), into its
    results.json: ``profile_ops.py WORK/results.json``. Only the profiles change."""
    import sys
    from pathlib import Path

    import models as M

    args = argv if argv is not None else sys.argv[1:]
    results = Path(args[0])
    work = results.parent
    doc = json.loads(results.read_text())
    bundles = {"minilm": lambda: M.minilm(work / "minilm"), "resnet": lambda: M.cnn(work / "cnn")}
    folders = {"minilm": "minilm", "resnet": "cnn"}
    for m in doc["models"]:
        if m["name"] not in bundles:
            continue
        b = bundles[m["name"]]()
        names = {r["variant"] for r in m["rows"] if not r["source"]}
        clean = {n: n.replace(" ", "_").replace("+", "").replace("(", "").replace(")", "") for n in names}
        variants = [(n, str(work / folders[m["name"]] / f"{b.name}_{c}.onnx")) for n, c in clean.items()]
        variants = [(n, p) for n, p in variants if Path(p).exists()]
        feeds = {k: _positional(f, variants[0][1]) for k, f in b.bench_feeds.items()} if variants else {}
        m["profiles"] = profile_rows(variants, feeds, m["rows"], m.get("limits") or {})
    results.write_text(json.dumps(doc, indent=1, default=str))
    print(f"re-profiled into {results}")
    return 0


def _positional(feeds: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """The bundle's arrays under the model's input names (the export may rename them)."""
    from onnxkit.runtime.session import ort

    names = [i.name for i in ort().InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()]
    return feeds if set(names) == set(feeds) else dict(zip(names, feeds.values()))


if __name__ == "__main__":
    raise SystemExit(main())
