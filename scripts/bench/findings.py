"""The page's findings, computed from the run's numbers (nothing here is typed from a past run)."""

from __future__ import annotations

from typing import Any

from profile_ops import INT8_KERNELS
from report import GOALS, int8_dominated, valid

# model base name -> {batch: speed-up goal} for the default chain (issue 18's Done-when)
SPEED_GOALS = {"minilm": {8: GOALS["minilm_b8"], 1: GOALS["minilm_b1"]}, "resnet": {8: GOALS["cnn_b8"]}}


def _peaks(doc: dict) -> list[str]:
    out = []
    mc = doc["machine"]
    for m in doc["models"]:
        pk = (m.get("limits") or {}).get("peak_gops") or {}
        ts = sorted({int(k.split()[1][:-1]) for k in pk})
        if not ts:
            continue
        parts = []
        for t in ts:
            f, q = pk.get(f"float {t}t") or 0, pk.get(f"int8 {t}t") or 0
            parts.append(f"{t} thread{'s' if t > 1 else ''}: fp32 {f:.0f} GFLOP/s, int8 {q:.0f} GOP/s ({q / f if f else 0:.1f}x)")
        scale = ""
        if len(ts) > 1 and pk.get(f"int8 {ts[0]}t"):
            scale = f"; all {ts[-1]} threads give {pk.get(f'int8 {ts[-1]}t', 0) / pk[f'int8 {ts[0]}t']:.2f}x the 1-thread int8 rate"
        out.append(f"**{m['name']} GEMM peaks** on this CPU (VNNI {'yes' if mc.get('vnni') else 'no'}), at the model's "
                   f"shapes: {'; '.join(parts)}{scale}.")
    return out


def _goal_gap(m: dict, r: dict, goal: float) -> str:
    src = next((s for s in m["rows"] if s["source"] and s["batch"] == r["batch"]), None)
    rf = r.get("roofline") or {}
    if not src or not rf.get("bound_ms"):
        return ""
    need_ms = (src.get("work_ms") or src["p50_ms"]) / goal
    if rf["bound_ms"] > need_ms:
        return (f" {goal:g}x would need {need_ms:.2f} ms, less than its GEMM work alone takes at this machine's peak "
                f"({rf['bound_ms']:.2f} ms): out of reach here whatever the rest costs.")
    text = (f" {goal:g}x needs {need_ms:.2f} ms, i.e. {rf['bound_ms'] / need_ms:.0%} of its roofline bound "
            f"(it runs at {rf.get('efficiency', 0):.0%}).")
    own = rf.get("shape_bound_ms")
    if own and own > need_ms * 0.9:
        # The peak is the best shape's rate; small GEMMs never reach it in ORT's kernels.
        text += (f" With every GEMM at the rate ONNX Runtime reaches at its own shape and nothing else, the call would "
                 f"take {own:.2f} ms ({(src.get('work_ms') or src['p50_ms']) / own:.1f}x): "
                 + ("beyond these kernels." if own > need_ms else "all but the GEMMs would have to be free."))
    return text


def _memory_note(m: dict, d: dict) -> str:
    """The weights' read time, where it is a large part of an interleaved call."""
    rf = d.get("roofline") or {}
    bw = (m.get("limits") or {}).get("read_gbps")
    call = d.get("work_ms") or d["p50_ms"]
    if not rf.get("memory_ms") or not bw or rf["memory_ms"] < 0.25 * call:
        return ""
    text = (f"Reading its {rf['weights_mb']:.1f} MB of weights from memory at the measured {bw:.1f} GB/s takes "
            f"{rf['memory_ms']:.2f} ms, {rf['memory_ms'] / call:.0%} of its interleaved call")
    if rf.get("bound_ms") and rf["memory_ms"] > rf["bound_ms"]:
        text += f", longer than its GEMM work at the peak ({rf['bound_ms']:.2f} ms)"
    return text + "."


def _warm_gap(m: dict, d: dict) -> str:
    """What interleaving costs the default chain: its call after its own previous call against
    its call after the other models'."""
    src = next((s for s in m["rows"] if s["source"] and s["batch"] == d["batch"]), None)
    if not d.get("warm_ms") or not d.get("warm_speedup") or not src or not src.get("warm_ms"):
        return ""
    inter = d.get("work_ms") or d["p50_ms"]
    extra = inter / d["warm_ms"] - 1
    why = (f"{extra:.0%} more interleaved, where each call finds the caches filled by the other models" if extra >= 0.03
           else "interleaving costs it little")
    return (f"Called back to back (as a server running only this model would) it takes {d['warm_ms']:.2f} ms against "
            f"{inter:.2f} ms interleaved ({why}), and the source {src['warm_ms']:.2f} ms: {d['warm_speedup']:.2f}x.")


def _model_lines(m: dict) -> list[str]:
    out = []
    base = m["name"].split("@")[0]
    for b in sorted({r["batch"] for r in m["rows"]}):
        rows = [r for r in m["rows"] if r["batch"] == b and not r["source"]]
        good = [r for r in rows if valid(m["name"], r["acc"])]
        d = next((r for r in rows if r["default"]), None)
        parts = []
        if d:
            eff = (d.get("roofline") or {}).get("efficiency")
            ok = "valid" if valid(m["name"], d["acc"]) else "**not** within the accuracy bar"
            parts.append(f"the default chain ({d['chain']}) is {d['speedup']:.2f}x the source, {ok}"
                         + (f", at {eff:.0%} of its roofline bound" if eff is not None else "") + ".")
            goal = SPEED_GOALS.get(base, {}).get(b)
            if goal:
                parts.append(("Goal met." if d["speedup"] >= goal and valid(m["name"], d["acc"]) else "Goal missed.")
                             + _goal_gap(m, d, goal))
            parts.append(_memory_note(m, d))
            parts.append(_warm_gap(m, d))
        if good:
            best = max(good, key=lambda r: r["speedup"])
            if not d or best["variant"] != d["variant"]:
                parts.append(f"The fastest variant within the accuracy bar is {best['variant']} ({best['speedup']:.2f}x).")
        bad = [r for r in rows if r["acc"] and not valid(m["name"], r["acc"])]
        if bad:
            parts.append("Outside the accuracy bar: " + ", ".join(r["variant"] for r in bad) + ".")
        parts = [p for p in parts if p]
        if parts:
            out.append(f"**{m['name']}, batch {b}:** " + " ".join(parts))
    return out


def _profile_lines(m: dict) -> list[str]:
    out = []
    rows = {(r["variant"], r["batch"]): r for r in m["rows"]}
    for p in m.get("profiles") or []:
        r = rows.get((p["variant"], p["batch"]))
        if not r or not int8_dominated(r):
            continue
        g = (p.get("gemm") or {}).get("int8")
        others = [o for o in p.get("by_op", []) if o["op"] not in INT8_KERNELS]
        rest = ", ".join(f"{o['op']} {o['pct']:.0f}%" for o in others[:3] if o["pct"] >= 1)
        eff = (r.get("roofline") or {}).get("efficiency")
        line = f"**{m['name']} {p['variant']}, batch {p['batch']}:** {'' if eff is None else f'{eff:.0%} of its roofline bound; '}"
        if p.get("model_run_ms") and eff is not None:
            # The profiled calls ran alone; the timed ones shared the machine with the other variants and jobs.
            line += (f"its median profiled call took {p['model_run_ms']:.2f} ms against the timed p50 {r['p50_ms']:.2f} ms "
                     f"(the bound is {r['roofline']['bound_ms'] / p['model_run_ms']:.0%} of that call); ")
        if g:
            line += (f"int8 GEMM kernels take {g['pct']:.0f}% of the kernel time at {g['gops']:.0f} GOP/s"
                     + (f" ({g['of_peak']:.0%} of the measured int8 peak)" if g.get("of_peak") else "") + "; ")
        out.append(line + (f"the rest is mostly {rest}." if rest else "no other op type takes 1% of it."))
    return out


def _auto_lines(doc: dict) -> list[str]:
    n = ok = 0
    for m in doc["models"]:
        for b in sorted({r["batch"] for r in m["rows"]}):
            auto = next((r for r in m["rows"] if r["variant"] == "auto" and r["batch"] == b), None)
            cands = [r for r in m["rows"] if r["batch"] == b and not r["source"] and r["variant"] != "auto"
                     and valid(m["name"], r["acc"])]
            if auto is None or not cands:
                continue
            n += 1
            best = min(cands, key=lambda r: (r.get("work_ms") or r["p50_ms"]))
            ok += (auto.get("work_ms") or auto["p50_ms"]) <= (best.get("work_ms") or best["p50_ms"]) * (1 + GOALS["auto_within"]) and valid(m["name"], auto["acc"])
    return [f"**Automatic choice:** within {GOALS['auto_within']:.0%} of the fastest valid variant in {ok} of {n} cases."] if n else []


def _run_lines(doc: dict) -> list[str]:
    out = []
    lb, la = doc.get("load_before") or [0], doc.get("load_after") or [0]
    cores = doc["machine"].get("usable cores") or doc["machine"].get("cores")
    out.append(f"**Run conditions:** load average {lb[0]:.1f} before and {la[0]:.1f} after on {cores} usable cores"
               + (" (the machine was shared: latencies are higher than on an idle one, and the bounds were measured "
                  "under the same load)" if cores and max(lb[0], la[0]) > cores else "")
               + f"; the run took {doc.get('elapsed_s', 0) / 60:.1f} min.")
    steps = [(s["peak_rss_mb"], m["name"], s["what"]) for m in doc["models"] for s in m["steps"] if s.get("peak_rss_mb")]
    if steps:
        top = max(steps)
        out.append(f"**Peak memory of a command:** {top[0]:.0f} MB ({top[1]} {top[2]}).")
    st = doc.get("startup") or {}
    base = st.get("python -c 'import onnx'")
    if base and st.get("onnxkit --help"):
        out.append(f"**CLI start-up:** `onnxkit --help` takes {st['onnxkit --help'] / base:.2f}x the time of `python -c \"import onnx\"`.")
    return out


def findings(doc: dict[str, Any]) -> str:
    """Markdown bullets, every number taken from ``doc``."""
    lines = _peaks(doc)
    for m in doc["models"]:
        lines += _model_lines(m) + _profile_lines(m)
    lines += _auto_lines(doc) + _run_lines(doc)
    return "\n".join(f"- {x}" for x in lines)
