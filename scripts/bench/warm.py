"""Back-to-back calls: each model timed alone, after its own previous call.

The suite's main timing interleaves every variant and the source call by call, so drift hits
all alike. The price: each call starts after other models have run, with its weights evicted
from the caches (MiniLM's int8 weights are 22 MB, the fp32 ones 90 MB, the L3 cache a few tens
of MB). A server calling one model in a loop does not pay that. This pass times each model's
calls back to back, so the page can say how much of an interleaved call is refetching weights,
and what a dedicated server would see. The goals stay judged on the interleaved timing.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _median_call_ms(call: Callable[[], object], *, calls: int, warmup: int, cpu: bool) -> float:
    for _ in range(warmup):
        call()
    clock = time.process_time_ns if cpu else time.perf_counter_ns
    times = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(calls):
            t0 = clock()
            call()
            times.append((clock() - t0) / 1e6)
    finally:
        if was_enabled:
            gc.enable()
    return float(np.median(times))


def _session_call(path: str, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    from onnxkit.runtime.session import ort

    rt = ort()
    so = rt.SessionOptions()
    so.intra_op_num_threads = threads  # 0: ONNX Runtime's default, as the interleaved timing had it
    so.inter_op_num_threads = 1
    sess = rt.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32}
    specs = sess.get_inputs()
    # By name where the names match, else by position (skl2onnx and onnxkit name inputs apart).
    arrays = [feeds[s.name] for s in specs] if {s.name for s in specs} == set(feeds) else list(feeds.values())
    mine = {}
    for spec, arr in zip(specs, arrays):
        want = types.get(spec.type)
        mine[spec.name] = arr.astype(want) if want is not None and arr.dtype != want else arr
    return lambda: sess.run(None, mine)


def warm_rows(variants: list[tuple[str, str]], source_call: Callable[[dict[str, np.ndarray]], Callable[[], object]],
              feeds_by_batch: dict[int, dict[str, np.ndarray]], rows: list[dict], threads: int,
              *, budget_s: float = 2.0) -> None:
    """Add ``row["warm_ms"]`` to every timed row (the source's and each variant's) and
    ``row["warm_speedup"]`` to the variants'. At one thread the figure is per-call process CPU
    time, as the interleaved speed-ups are; otherwise wall clock."""
    paths = dict(variants)
    cpu = threads == 1
    for b, feeds in feeds_by_batch.items():
        src_ms = None
        for r in sorted((r for r in rows if r["batch"] == b), key=lambda r: not r["source"]):
            try:
                call = source_call(feeds) if r["source"] else _session_call(paths[r["variant"]], feeds, threads)
                probe = _median_call_ms(call, calls=3, warmup=2, cpu=cpu)
                # Enough calls for a stable median, within a time budget per row.
                n = int(min(200, max(15, budget_s * 1000 / max(probe, 1e-3))))
                r["warm_ms"] = _median_call_ms(call, calls=n, warmup=0, cpu=cpu)
            except Exception as exc:  # noqa: BLE001 - a row that cannot be re-timed is reported, not fatal
                print(f"  back-to-back {r['variant']} b{b} failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                continue
            if r["source"]:
                src_ms = r["warm_ms"]
            elif src_ms:
                r["warm_speedup"] = src_ms / r["warm_ms"]


def warm_section(doc: dict[str, Any]) -> list[str]:
    """The page's table of interleaved against back-to-back timing."""
    rows = [(m, r) for m in doc["models"]
            for r in sorted(m["rows"], key=lambda r: (r["batch"], not r["source"])) if r.get("warm_ms")]
    if not rows:
        return []
    L = ["## Interleaved against back-to-back calls", "",
         "The tables above time every variant and the source call by call in turn, so each call starts after other "
         "models have evicted its weights from the caches. Here each model is timed alone, call after call, as a "
         "server running one model would run it (same thread count; per-call CPU time at 1 thread). The goals are "
         "judged on the interleaved figures.", "",
         "| model | variant | batch | interleaved ms | back-to-back ms | speed-up interleaved | speed-up back-to-back |",
         "|---|---|---:|---:|---:|---:|---:|"]
    for m, r in rows:
        inter = r.get("work_ms") or r["p50_ms"]
        name = r["variant"] + (" (default chain)" if r.get("default") else "")
        sp = "-" if r["source"] else f"{r['speedup']:.2f}x"
        wsp = "-" if r["source"] or not r.get("warm_speedup") else f"{r['warm_speedup']:.2f}x"
        L.append(f"| {m['name']} | {name} | {r['batch']} | {inter:.2f} | {r['warm_ms']:.2f} | {sp} | {wsp} |")
    L.append("")
    return L
