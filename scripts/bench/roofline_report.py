"""The page's roofline sections: the lead table, the machine's measured limits, the profiles."""

from __future__ import annotations

from typing import Any


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _gop(n: int | None) -> str:
    return "-" if not n else f"{n / 1e9:.2f}"


def _gbps(doc: dict) -> str:
    bws = sorted({round(m["limits"]["read_gbps"], 1) for m in doc["models"] if (m.get("limits") or {}).get("read_gbps")})
    return ", ".join(f"{b:g} GB/s" for b in bws) or "not measured"


def _mem(rf: dict) -> str:
    if rf.get("weights_mb") is None or rf.get("memory_ms") is None:
        return "-"
    return f"{rf['weights_mb']:.1f}, {_ms(rf['memory_ms'])}"


def lead_table(doc: dict, acc_text: Any, ordered: list[dict]) -> list[str]:
    threads = {m["limits"].get("threads") for m in doc["models"] if m.get("limits")}
    t = ", ".join(str(x) for x in sorted(t for t in threads if t)) or "?"
    L = ["## Results against this machine's limits", "",
         f"Every variant's median latency next to its **roofline bound**: the GEMM work counted from its ONNX file "
         "(MatMul, Gemm, Conv and their int8, fused and contrib forms, attention's Q.K^T and .V products included; "
         "shapes inferred at the benchmark batch) divided by the GEMM peak measured on this machine in this run at "
         f"the same thread count ({t}): int8 work at the int8 peak, float work at the fp32 peak (see *Measured "
         "limits* below). **Efficiency** = bound / latency: 100% would be every GEMM at peak speed and nothing else. "
         "*At own shapes*: each GEMM at the rate measured at its own shape instead (small GEMMs cannot reach the "
         "peak). *Best possible speed-up*: the source's latency over the bound. *Weights from memory*: the roofline's "
         "other ceiling, the bytes of weights a call reads (embedding tables left out) at the read bandwidth of one "
         f"thread measured in this run ({_gbps(doc)}); in interleaved timing each call reads them again.", "",
         "| model | variant | batch | p50 ms | GEMM G ops (fp / int8) | bound ms | efficiency | at own shapes | "
         "weights MB, from memory ms | speed-up vs source | best possible | accuracy vs source |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in ordered:
        src = {r["batch"]: r for r in m["rows"] if r["source"]}
        for r in sorted(m["rows"], key=lambda r: (r["batch"], not r["source"])):
            rf = r.get("roofline") or {}
            s = src.get(r["batch"])
            best = (s.get("work_ms") or s["p50_ms"]) / rf["bound_ms"] if s and rf.get("bound_ms") else None
            name = r["variant"] + (" (default chain)" if r["default"] else "")
            L.append(f"| {m['name']} | {name} | {r['batch']} | {_ms(r['p50_ms'])} | "
                     f"{_gop(rf.get('ops_float'))} / {_gop(rf.get('ops_int8'))} | {_ms(rf.get('bound_ms'))} | "
                     f"{_pct(rf.get('efficiency'))} | {_pct(rf.get('shape_efficiency'))} | {_mem(rf)} | "
                     f"{'-' if r['source'] else format(r['speedup'], '.2f') + 'x'} | "
                     f"{'-' if best is None else format(best, '.1f') + 'x'} | {acc_text(r['acc'])} |")
    L.append("")
    uncounted = sorted({u for m in doc["models"] for r in m["rows"] for u in (r.get("roofline") or {}).get("uncounted", [])})
    if uncounted:
        L += ["GEMM work not counted (so those bounds are too low): " + "; ".join(uncounted[:8]), ""]
    return L


def limits_section(doc: dict) -> list[str]:
    L = ["## Measured limits", "",
         "GEMM rates measured in this run with one-op ONNX models at each model's own GEMM shapes (ONNX Runtime, "
         "CPU provider; fp32 MatMul/Conv, and int8 as MatMulInteger/QLinearConv with u8 activations x s8 weights, the "
         "kernels ORT runs for quantized models), median of repeated calls. The peak of a model is the best rate "
         "over its shapes.", "",
         "| model | threads | fp32 peak GFLOP/s | int8 peak GOP/s | int8 / fp32 | shapes timed | took s |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for m in doc["models"]:
        lim = m.get("limits") or {}
        peaks = lim.get("peak_gops") or {}
        for t in sorted({int(k.split()[1][:-1]) for k in peaks}):
            f, q = peaks.get(f"float {t}t") or 0, peaks.get(f"int8 {t}t") or 0
            n = len([p for p in lim.get("probes", []) if p["threads"] == t])
            L.append(f"| {m['name']} | {t} | {f:.0f} | {q:.0f} | {q / f if f else 0:.2f}x | {n} | {lim.get('measure_s', 0):.0f} |")
    L.append("")
    for m in doc["models"]:
        probes = (m.get("limits") or {}).get("probes") or []
        if not probes:
            continue
        L += [f"<details><summary>{m['name']}: rate at each shape</summary>", "",
              "| shape | precision | threads | G ops/s |", "|---|---|---:|---:|"]
        L += [f"| {p['probe']} | {'fp32' if p['dtype'] == 'float' else 'int8'} | {p['threads']} | {p['gops']:.0f} |"
              for p in probes]
        L += ["", "</details>", ""]
    return L


def profiles_section(doc: dict) -> list[str]:
    profs = [(m, p) for m in doc["models"] for p in m.get("profiles") or []]
    if not profs:
        return []
    L = ["## Where the time goes (int8 variants)", "",
         "ONNX Runtime's profiler (`enable_profiling`) on each int8 GEMM-dominated variant, after ORT's own fusions, "
         "summed by op type per call, median over 10 calls after one warm-up call, at the run's thread count. The GEMM rate divides "
         "the int8 work counted from the file by the time of the int8 GEMM kernels (DynamicQuantizeMatMul includes "
         "quantizing its input).", "",
         "| model | variant | batch | run ms | top op types (% of kernel time) | int8 GEMM: % of time, G ops/s, of peak | "
         "fp32 GEMM: % of time, G ops/s, of peak |", "|---|---|---:|---:|---|---|---|"]
    for m, p in profs:
        tops = ", ".join(f"{o['op']} {o['pct']:.0f}%" for o in p.get("by_op", [])[:5])
        cells = []
        for d in ("int8", "float"):
            g = (p.get("gemm") or {}).get(d)
            cells.append("-" if not g else f"{g['pct']:.0f}%, {g['gops']:.0f}, {_pct(g.get('of_peak'))}")
        L.append(f"| {m['name']} | {p['variant']} | {p['batch']} | {_ms(p.get('model_run_ms'))} | {tops} | {cells[0]} | {cells[1]} |")
    L.append("")
    return L
