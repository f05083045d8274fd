"""docs/benchmarks.md and its charts, from the suite's results document (results.json)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

BASE = "python -c 'import onnx'"
GOALS = {
    "minilm_b8": 4.5, "minilm_b1": 6.0, "minilm_cos": 0.99,
    "cnn_b8": 6.0, "cnn_top1": 0.99, "cnn_fp32": 1.45,
    "startup": 1.5, "auto_within": 0.10, "roofline": 0.70,
}
# A variant is "int8 GEMM-dominated" when int8 kernels do at least this share of its GEMM work.
INT8_DOMINATED = 0.5


def int8_dominated(r: dict) -> bool:
    rf = r.get("roofline") or {}
    total = rf.get("ops_int8", 0) + rf.get("ops_float", 0)
    return not r["source"] and total > 0 and rf["ops_int8"] / total >= INT8_DOMINATED


def _mb(n: int | None) -> str:
    return "-" if not n else (f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB")


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v[:6])) + (f", ... {len(v) - 6} more" if len(v) > 6 else "") + "]"
    return str(v)


def _collapse(cmd: str) -> str:
    """`--input --input --input` (older results keep flags only) -> `--input x3`."""
    out: list[str] = []
    for tok in cmd.split():
        if out and out[-1].split(" x")[0] == tok and tok.startswith("--"):
            n = int(out[-1].split(" x")[1]) + 1 if " x" in out[-1] else 2
            out[-1] = f"{tok} x{n}"
        else:
            out.append(tok)
    return " ".join(out)


def _acc(a: dict[str, Any]) -> str:
    if not a:
        return "-"
    parts = []
    if "emb_cos_mean" in a:
        parts.append(f"emb cos {a['emb_cos_mean']:.4f} (min {a['emb_cos_min']:.4f})")
    if "cosine" in a:
        parts.append(f"cos {a['cosine']:.5f}")
    if "max_abs" in a:
        parts.append(f"max abs {a['max_abs']:.2e}")
    if a.get("top1_agreement") is not None:
        parts.append(f"top-1 {100 * a['top1_agreement']:.1f}%")
    if a.get("label_agreement") is not None:
        parts.append(f"labels {100 * a['label_agreement']:.1f}%")
    if a.get("task_accuracy") is not None:
        parts.append(f"task acc {100 * a['task_accuracy']:.1f}%")
    return ", ".join(parts)


def valid(model: str, a: dict[str, Any]) -> bool:
    """A variant counts only if it keeps the model's answers: embeddings cosine >= 0.99,
    classifiers >= 99% of labels / top-1 classes as the source."""
    if not a:
        return False
    if model.split("@")[0] == "minilm":
        return a.get("emb_cos_mean", 0.0) >= GOALS["minilm_cos"]
    agree = a.get("top1_agreement", a.get("label_agreement"))
    return agree is not None and agree >= 0.99


def _rows(m: dict, batch: int) -> list[dict]:
    return [r for r in m["rows"] if r["batch"] == batch]


def _model(doc: dict, name: str) -> dict | None:
    return next((m for m in doc["models"] if m["name"] == name), None)


def _row(m: dict, variant: str, batch: int) -> dict | None:
    return next((r for r in m["rows"] if r["variant"] == variant and r["batch"] == batch), None)


def goals(doc: dict) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) rows."""
    out = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    for mini in [m for m in doc["models"] if m["name"].split("@")[0] == "minilm"]:
        tag = f" [{mini['name'].split('@')[1]}]" if "@" in mini["name"] else ""
        d = next((r for r in mini["rows"] if r["default"]), None)
        name = d["variant"] if d else None
        for b, key in ((8, "minilm_b8"), (1, "minilm_b1")):
            r = _row(mini, name, b) if name else None
            if r is None:
                out.append((f"MiniLM{tag} default chain b{b}: >= {GOALS[key]}x eager", "not built", verdict(False)))
                continue
            cos = r["acc"].get("emb_cos_mean")
            ok = r["speedup"] >= GOALS[key] and (cos or 0) >= GOALS["minilm_cos"]
            out.append((f"MiniLM{tag} default chain ({r['chain']}) batch {b}: >= {GOALS[key]}x PyTorch eager, emb cosine >= 0.99",
                        f"{r['speedup']:.2f}x, cosine {cos:.4f}" if cos is not None else f"{r['speedup']:.2f}x", verdict(ok)))
        for b in (8, 1):
            best = max((r for r in _rows(mini, b) if not r["source"] and valid("minilm", r["acc"])),
                       key=lambda r: r["speedup"], default=None)
            if best:
                out.append((f"MiniLM{tag} best valid variant, batch {b} (for reference)",
                            f"{best['variant']}: {best['speedup']:.2f}x, cosine {best['acc']['emb_cos_mean']:.4f}", "-"))
    for cnn in [m for m in doc["models"] if m["name"].split("@")[0] == "resnet"]:
        tag = f" [{cnn['name'].split('@')[1]}]" if "@" in cnn["name"] else ""
        d = next((r for r in cnn["rows"] if r["default"] and r["batch"] == 8), None)
        if d:
            t1 = d["acc"].get("top1_agreement")
            ok = d["speedup"] >= GOALS["cnn_b8"] and (t1 or 0) >= GOALS["cnn_top1"]
            out.append((f"Residual CNN{tag} ({d['chain']}) batch 8: >= {GOALS['cnn_b8']}x eager, top-1 agreement >= 99%",
                        f"{d['speedup']:.2f}x, top-1 {100 * (t1 or 0):.1f}%", verdict(ok)))
        fp32 = [r for r in _rows(cnn, 8) if r["role"] in ("export", "optimize")]
        if fp32:
            best = max(fp32, key=lambda r: r["speedup"])
            out.append((f"Residual CNN{tag} fp32 only, batch 8: >= {GOALS['cnn_fp32']}x eager",
                        f"{best['variant']}: {best['speedup']:.2f}x", verdict(best["speedup"] >= GOALS["cnn_fp32"])))
    for m in doc["models"]:
        for r in sorted((r for r in m["rows"] if int8_dominated(r)), key=lambda r: (r["batch"], r["variant"])):
            eff = (r.get("roofline") or {}).get("efficiency")
            out.append((f"{m['name']} {r['variant']} batch {r['batch']}: >= {GOALS['roofline']:.0%} of its roofline bound",
                        "bound not measured" if eff is None else
                        f"bound {r['roofline']['bound_ms']:.2f} ms / measured {(r.get('work_ms') or r['p50_ms']):.2f} ms = {eff:.0%}",
                        verdict(None if eff is None else eff >= GOALS["roofline"])))
    st = doc.get("startup")
    if st:
        ratio = st["onnxkit --help"] / st[BASE]
        out.append((f"`onnxkit --help` <= {GOALS['startup']}x `python -c \"import onnx\"`",
                    f"{st['onnxkit --help']:.3f} s vs {st[BASE]:.3f} s = {ratio:.2f}x",
                    verdict(ratio <= GOALS["startup"])))
    any_auto = False
    for m in doc["models"]:
        for b in sorted({r["batch"] for r in m["rows"]}):
            auto = _row(m, "auto", b)
            if auto is None:
                continue
            any_auto = True
            cands = [r for r in _rows(m, b) if not r["source"] and r["variant"] != "auto" and valid(m["name"], r["acc"])]
            if not cands:
                out.append((f"auto within 10% of fastest valid ({m['name']} b{b})", "no valid variant to compare", "n/a"))
                continue
            best = min(cands, key=lambda r: (r.get("work_ms") or r["p50_ms"]))
            gap = (auto.get("work_ms") or auto["p50_ms"]) / (best.get("work_ms") or best["p50_ms"]) - 1
            ok = gap <= GOALS["auto_within"] and valid(m["name"], auto["acc"])
            out.append((f"auto within 10% of fastest valid variant ({m['name']}, batch {b})",
                        f"auto {auto.get('work_ms') or auto['p50_ms']:.2f} ms vs {best['variant']} {best.get('work_ms') or best['p50_ms']:.2f} ms ({100 * gap:+.1f}%)"
                        + ("" if valid(m["name"], auto["acc"]) else ", auto's accuracy is not valid"), verdict(ok)))
    if not any_auto:
        out.append(("automatic choice within 10% of the fastest valid variant",
                    f"not available: {doc.get('auto') or 'no auto rows'}", "n/a"))
    return out


def charts(doc: dict, img: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    made = {}
    for m in doc["models"]:
        batches = sorted({r["batch"] for r in m["rows"]})
        variants = [r["variant"] for r in m["rows"] if r["batch"] == batches[0] and not r["source"]]
        if not variants:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(variants) * len(batches) + 1.6))
        h = 0.8 / len(batches)
        for k, b in enumerate(batches):
            vals = [(_row(m, v, b) or {}).get("speedup") or 0 for v in variants]
            ys = [i + k * h for i in range(len(variants))]
            bars = ax.barh(ys, vals, height=h, label=f"batch {b}")
            for y, v in zip(ys, vals):
                ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
        ax.axvline(1.0, color="k", lw=1, ls="--")
        ax.set_yticks([i + h * (len(batches) - 1) / 2 for i in range(len(variants))])
        ax.set_yticklabels(variants, fontsize=8)
        ax.invert_yaxis()
        src = next((r["variant"] for r in m["rows"] if r["source"]), "source")
        ax.set_xlabel(f"speed-up vs {src} (p50; > 1 is faster; dashed line = source)")
        ax.set_title(m["title"], fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        if max((r["speedup"] or 0) for r in m["rows"]) > 50:
            ax.set_xscale("log")
        fig.tight_layout()
        p = img / f"bench_{re.sub(r'[^A-Za-z0-9]+', '_', m['name']).strip('_')}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made[m["name"]] = f"img/{p.name}"
    return made


def _busy(doc: dict) -> bool:
    """Whether other jobs competed for the cores: a 1-minute load average above the core count."""
    cores = doc["machine"].get("usable cores") or doc["machine"].get("cores") or 1
    return max((doc.get("load_before") or [0])[0], (doc.get("load_after") or [0])[0]) > cores


def _threads_line(threads: int | None) -> str:
    if not threads:
        return "- Threads: each framework's default (all cores)."
    return (f"- Threads: {threads} for ONNX Runtime *and* every source framework (`torch.set_num_threads`, XGBoost "
            "`nthread`, `TF_NUM_INTRAOP_THREADS`; LightGBM and scikit-learn already use 1). Why: on these 2-core machines, "
            "shared with other jobs (load average up to ~6), two-thread OpenMP (PyTorch) stalled at every "
            "barrier: in an earlier run the residual CNN took 700+ ms at batch 8 with 2 threads against 25 ms with 1, which would have "
            "inflated every speed-up. One thread each is the comparison that stays fair on a busy machine; run "
            "`suite.py --threads 0` on an idle one for the framework defaults.")


def write_report(doc: dict, out: Path, findings: str = "") -> Path:
    """``findings``: Markdown facts about the code that explain the numbers (never numbers of a
    run: those are computed, findings.py); rendered after the computed findings."""
    from findings import findings as computed_findings
    from roofline_report import lead_table, limits_section, profiles_section
    from warm import warm_section

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pics = charts(doc, out / "img")
    mc = doc["machine"]
    L = ["# Benchmarks: onnxkit's models against their source frameworks", "",
         "Generated by `python scripts/bench/suite.py" + (" --quick" if doc.get("quick") else "") + "` "
         f"on {doc['started']} (took {doc.get('elapsed_s', 0) / 60:.1f} min; models: "
         f"{', '.join(m['name'] for m in doc['models'])}). Re-run it to refresh this page; "
         "the raw numbers are in the run's `results.json` (`scripts/bench/last_results.json` for this page).", "",
         *[f"Merged into it: run {i} (threads: {r['threads'] or 'framework defaults'}, {r['iterations']} rounds) "
           f"started {r['started']}, load average before {', '.join(f'{x:.2f}' for x in r['load_before'])}; its "
           "sections carry the run's tag in their titles (a later run's section replaces an earlier one of the "
           "same name).\n" for i, r in enumerate(doc.get("extra_runs", []), start=2)]]
    base_order = list(dict.fromkeys(m["name"].split("@")[0] for m in doc["models"]))
    ordered = sorted(doc["models"], key=lambda m: (base_order.index(m["name"].split("@")[0]), "@" in m["name"]))
    L += lead_table(doc, _acc, ordered)
    L += ["## Machine", "",
         f"- CPU: {mc.get('cpu')}, {mc.get('cores')} logical cores; AVX2 {'yes' if mc.get('avx2') else 'no'}, "
         f"AVX-512 {'yes' if mc.get('avx512f') else 'no'}, VNNI {'yes' if mc.get('vnni') else 'no'}",
         f"- {mc.get('platform')}, Python {mc.get('python')}",
         "- " + ", ".join(f"{k} {v}" for k, v in mc.get("versions", {}).items()),
         f"- Load average (1/5/15 min) before: {', '.join(f'{x:.2f}' for x in doc['load_before'])}; after: "
         f"{', '.join(f'{x:.2f}' for x in doc.get('load_after', [0, 0, 0]))}. The machine was shared with other jobs "
         "during the run; the interleaving below spreads that noise over all rows of a table alike, but absolute "
         "latencies are higher than on an idle machine." if _busy(doc) else
         f"- Load average (1/5/15 min) before: {', '.join(f'{x:.2f}' for x in doc['load_before'])}; after: "
         f"{', '.join(f'{x:.2f}' for x in doc.get('load_after', [0, 0, 0]))}: below the core count, so other jobs took little of the cores.", "",
         "## Method", "",
         "- Each model's artifacts are made by the `onnxkit` commands a user would run (`export`, `optimize`, "
         "`quantize`, each as its own process with `--json`); the chain column says which.",
         f"- Timing: `onnxkit.runtime.bench.bench_models`: after {doc['warmup']} warm-up rounds, "
         f"{doc['iterations']} rounds (MiniLM: half as many) in which every variant *and* the source model run once, "
         "starting from a different one each round, garbage collector off. So drift and other jobs hit all alike. "
         "ONNX Runtime: CPU provider, default graph optimizations. The source runs as served: PyTorch eager under "
         "`torch.inference_mode()`, Keras `model(x, training=False)`, XGBoost `Booster.predict`, LightGBM "
         "`Booster.predict`, scikit-learn `predict_proba` (+ argmax).",
         _threads_line(doc.get("threads")),
         "- Speed-up = source median / variant median (> 1: the ONNX model is faster), on each call's process CPU time "
         "when both sides run one thread (the call's work: other jobs on a shared machine stretch wall-clock time, the "
         "slow eager calls most, and would inflate every ratio), else on wall-clock time; the wall-clock ratio is kept "
         "in results.json as `speedup_wall`. Throughput = batch / p50 (wall clock).",
         "- Accuracy: each variant against the source on real inputs never used for calibration (held-out digits; "
         "MiniLM: 20 real sentences, padded). MiniLM: cosine of mean-pooled sentence embeddings (mean, min) and max abs "
         "difference over real tokens; classifiers: `onnxkit.foundation.compare` (max abs of scores, top-1 / label agreement) "
         "and the task accuracy on the held-out labels.",
         "- Size: the .onnx file; for the source, its weights file.", ""]
    L += ["## Goals", "", "| goal | measured | verdict |", "|---|---|---|"]
    L += [f"| {g} | {m} | {v} |" for g, m, v in goals(doc)]
    L.append("")
    L += ["## Findings", "", "Computed from this run's numbers by `scripts/bench/findings.py`.", "", computed_findings(doc), ""]
    if findings:
        L += ["What the code does that explains some of them (`scripts/bench/findings.md`):", "", findings.strip(), ""]
    L += limits_section(doc) + profiles_section(doc) + warm_section(doc)
    for m in ordered:
        L += [f"## {m['title']}", ""]
        L += [f"- {n}" for n in m["notes"]]
        if m.get("source_accuracy") is not None:
            L.append(f"- Source task accuracy on the held-out set: {100 * m['source_accuracy']:.1f}%")
        L += ["", "| variant | batch | p50 ms | p90 ms | samples/s | speed-up | size | accuracy vs source |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in sorted(m["rows"], key=lambda r: (r["batch"], not r["source"])):
            name = r["variant"] + (" (default chain)" if r["default"] else "")
            L.append(f"| {name} | {r['batch']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['throughput']:,.0f} | "
                     f"{'-' if r['source'] else format(r['speedup'], '.2f') + 'x'} | {_mb(r['size'])} | {_acc(r['acc'])} |")
        chains = {r["variant"]: r["chain"] for r in m["rows"] if r["chain"]}
        if chains:
            L += ["", "Chains: " + "; ".join(f"**{k}** = {v}" for k, v in chains.items())]
        if m["name"] in pics:
            L += ["", f"![{m['title']}]({pics[m['name']]})"]
        L.append("")
    L += ["## Commands: wall time and peak memory", "",
          "Each `onnxkit` command as a subprocess; peak RSS = the process's `VmHWM` (plus its children's), polled every 50 ms. Wall time includes "
          "interpreter and framework start-up, validation against the source, and (quantize) the accuracy-budget "
          "measurement and a short latency check.", "",
          "| model | step | command | wall s | peak RSS | exit | details |", "|---|---|---|---:|---:|---:|---|"]
    for m in doc["models"]:
        for s in m["steps"]:
            det = ", ".join(f"{k}={_short(v)}" for k, v in (s.get("summary") or {}).items() if v not in (None, [], {}))
            rss = f"{s['peak_rss_mb']:.0f} MB" if s.get("peak_rss_mb") else "-"
            if s.get("stray_stdout"):
                det = f"stdout held non-JSON text before the document: {s['stray_stdout'][:80]!r}; " + det
            L.append(f"| {m['name']} | {s['what']} | `{_collapse(s['command'])}` | {s['wall_s']:.1f} | {rss} | {s['rc']} | "
                     f"{(det or s.get('error') or '')[:300]} |")
    st = doc.get("startup") or {}
    if st:
        L += ["", "## CLI start-up", "", "Median wall time of interleaved runs (file cache warm).", "",
              "| command | median s |", "|---|---:|"] + [f"| `{k}` | {v:.3f} |" for k, v in st.items()]
    for f in doc.get("failures", []):
        L += ["", f"**A section failed:** {f}"]
    L.append("")
    path = out / "benchmarks.md"
    path.write_text("\n".join(L))
    return path


if __name__ == "__main__":  # re-render from a saved results.json: report.py RESULTS.json [OUT] [FINDINGS.md]
    d = json.loads(Path(sys.argv[1]).read_text())
    notes = Path(sys.argv[3]).read_text() if len(sys.argv) > 3 else ""
    print(write_report(d, Path(sys.argv[2] if len(sys.argv) > 2 else "docs"), notes))
