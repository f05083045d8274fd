#!/usr/bin/env python
"""The main job on a fresh machine, end to end: train a small residual CNN, let
`onnxkit init` write a config for it, run `onnxkit pipeline` (export, optimize, static
int8 quantization, each validated against PyTorch, then a benchmark), and print one
table of what each stage bought: speed-up against PyTorch, size, accuracy kept.

    python examples/run_demo.py [--out DIR] [--train-steps N]

The model is the residual CNN of scripts/bench/models.py (three stages, 32/64/128
channels, 3x64x64 inputs), trained for about 20 s on scikit-learn's digits so that its
top-1 answers mean something; 200 digits it never saw measure accuracy, 256 others
calibrate the int8 model. Everything is written under --out (default: a new temporary
folder, left in place so you can open the report). Exit code: the pipeline's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARKER = ".onnxkit-demo"  # marks a folder this demo made, so a rerun may write into it again
GATES = ("max_size_mb=5", "min_speedup=1.5")


class DemoError(Exception):
    """A problem to report in one line, with the exit code to leave with."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def prepare_folder(out: Path | None) -> Path:
    """A new temporary folder, or --out when it is new, empty or an earlier demo's: the demo
    writes onnxkit.toml and model files there and must not replace someone's own."""
    if out is None:
        folder = Path(tempfile.mkdtemp(prefix="onnxkit-demo-"))
    else:
        folder = out
        if folder.exists() and not folder.is_dir():
            raise DemoError(f"--out {folder} is a file, not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).exists():
            raise DemoError(f"--out {folder} is not empty and was not made by this demo; give a new or empty folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"cannot create --out {folder}: {exc.strerror}", code=3) from None
    (folder / MARKER).write_text("written by examples/run_demo.py\n")
    return folder


def build_model(folder: Path, train_steps: int) -> dict[str, Any]:
    """Train the residual CNN (or reuse the weights of an earlier run in this folder), save
    it as a torch.export program and write the evaluation and calibration data."""
    sys.path.insert(0, str(REPO))  # scripts/ lives at the repository root, not in the package
    try:
        import numpy as np
        import torch

        from scripts.bench import models as bench_models
    except ImportError as exc:
        raise DemoError(f"the demo needs torch, scikit-learn and the repository's scripts/ ({exc}); "
                        "run: pip install -c scripts/constraints.txt -e \".[all]\"", code=3) from None
    # One thread: on a 2-core machine shared with other jobs, two PyTorch threads spin-waiting
    # on each other made 20 training steps take 21 s instead of 2.2 s; idle, one thread
    # costs little at this size. The pipeline's own timings run in their own processes.
    torch.set_num_threads(1)
    bundle = bench_models.cnn(folder, train_steps=train_steps)
    net = _load_factory(folder / "resnet_factory.py").build()
    net.load_state_dict(torch.load(folder / "resnet_state.pt", weights_only=True))
    net.eval()
    images, labels = bundle.eval_feeds["image"], bundle.extra["labels"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net, (torch.from_numpy(images[:2]),), dynamic_shapes={"image": {0: batch}}, strict=False)
    source = folder / "resnet.pt2"
    torch.export.save(program, source)
    np.savez(folder / "eval.npz", image=images)
    return {"source": source, "calib": Path(bundle.calib), "images": images, "labels": labels, "net": net}


def _load_factory(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_resnet_factory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(config: Path, data: str, calib: str) -> None:
    """Point init's config at the held-out digits (validation) and the calibration set,
    which makes quantize try static int8 (what pays off for convolutions)."""
    text = config.read_text()
    edits = {'# data = "inputs.npz"': f'data = "{data}"', '# calib_data = "calib.npz"': f'calib_data = "{calib}"'}
    for old, new in edits.items():
        if old not in text:
            raise DemoError(f"{config}: `onnxkit init` no longer writes the line {old!r}; update examples/run_demo.py", code=70)
        text = text.replace(old, new, 1)
    config.write_text(text)


def onnxkit(*args: str | Path) -> int:
    print("$ onnxkit " + " ".join(map(str, args)), flush=True)
    return subprocess.call([sys.executable, "-m", "onnxkit", *map(str, args)])


def top1(model: Any, images: Any) -> Any:
    """Predicted classes of an ONNX file (ONNX Runtime) or the PyTorch module."""
    if isinstance(model, Path):
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0].argmax(axis=1)
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy().argmax(axis=1)


def stage_rows(doc: dict[str, Any], built: dict[str, Any]) -> tuple[list[list[str]], int | None]:
    """One row per stage, from pipeline.json (timings, cosine) and the held-out digits
    (top-1). Returns the rows and the batch size the speed-ups are quoted at."""
    from onnxkit.reports.pipeline_md import fmt_speedup
    from onnxkit.results import fmt_bytes

    steps = {s["name"]: s for s in doc["steps"]}
    bench = (steps.get("bench") or {}).get("result") or {}
    entries = bench.get("entries") or []
    batch = max((e["batch_size"] for e in entries), default=None)
    at_batch = {e["name"]: e for e in entries if e["batch_size"] == batch}
    source_entry = next((e for e in at_batch.values() if e.get("is_source")), None)
    images, labels = built["images"], built["labels"]
    source_pred = top1(built["net"], images)

    def p50(entry: dict | None) -> str:
        return f"{entry['stats']['p50_ms']:.2f} ms" if entry else "-"

    rows = [["source (PyTorch eager)", built["source"].name, p50(source_entry), "1x", "1x", fmt_bytes(built["source"].stat().st_size),
             f"{(source_pred == labels).mean():.1%}", "-", "-"]]
    artifacts = {a["role"]: a for a in ((doc.get("provenance") or {}).get("artifacts") or [])}
    for stage, role, check in (("export", "exported", "validate export"), ("optimize", "optimized", "validate optimized"),
                               ("quantize", "quantized", "validate quantized")):
        step = steps.get(stage) or {}
        art = artifacts.get(role)
        if art is None or not Path(art["path"]).exists():
            rows.append([stage, "-", "-", "-", "-", "-", "-", "-", step.get("reason") or step.get("status", "not run")])
            continue
        path = Path(art["path"])
        pred = top1(path, images)
        entry = at_batch.get(role)
        outputs = ((steps.get(check) or {}).get("result") or {}).get("outputs") or []
        cosines = [o["cosine"] for o in outputs if isinstance(o.get("cosine"), (int, float))]
        rows.append([stage, path.name, p50(entry),
                     fmt_speedup(entry.get("speedup_vs_source"), entry.get("speedup_ci95")) if entry else "-",
                     fmt_speedup(entry.get("speedup_cpu"), entry.get("speedup_cpu_ci95")) if entry else "-",
                     fmt_bytes(art["size"]), f"{(pred == labels).mean():.1%}", f"{(pred == source_pred).mean():.1%}",
                     f"{min(cosines):.4f}" if cosines else "-"])
    return rows, batch


def timing_line(doc: dict[str, Any]) -> str:
    """How the bench step timed both sides: one thread count for PyTorch and ONNX Runtime alike,
    the spin policy and the machine's load, so a reader can judge the speed-ups."""
    bench = next((s for s in doc["steps"] if s["name"] == "bench"), {}).get("result") or {}
    if not bench:
        return "timing: the bench step did not run"
    threads = bench.get("threads")
    text = (f"timing: PyTorch and ONNX Runtime both at {threads} intra-op thread(s) ({bench.get('threads_from')})"
            if threads else "timing: ONNX Runtime's default thread count")
    recommended = bench.get("recommended_threads") or {}
    if recommended:
        text += "; fastest measured: " + ", ".join(f"{k} {v}" for k, v in recommended.items())
    before, after = bench.get("load_before"), bench.get("load_after")
    if before and after:
        text += f"; load average {before[0]:g} before, {after[0]:g} after"
    return text + f"\n        {bench.get('spin_policy', '')}"


def print_table(rows: list[list[str]], batch: int | None) -> None:
    head = ["stage", "file", f"p50 batch {batch}", "speed-up vs source", "on CPU time", "size", "top-1 acc.", "top-1 = source", "cosine vs source"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for cells in (head, ["-" * w for w in widths], *rows):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="working folder: new, empty or an earlier demo's (default: a new temporary folder)")
    ap.add_argument("--train-steps", type=int, default=200, help="Adam steps of training (default 200, about 20 s)")
    args = ap.parse_args(argv)
    if args.train_steps < 1:
        ap.error("--train-steps must be at least 1")
    t0 = time.perf_counter()
    try:
        out = prepare_folder(args.out)
        print(f"training the residual CNN in {out} ...", flush=True)
        built = build_model(out, args.train_steps)
        config = out / "onnxkit.toml"
        code = onnxkit("init", built["source"], "-o", config, "--force", "-q")
        if code:
            return code
        write_config(config, "eval.npz", built["calib"].name)
        code = onnxkit("pipeline", config, *(a for g in GATES for a in ("--gate", g)))
        report = out / "onnxkit-out" / "report"
        summary = report / "pipeline.json"
        if not summary.exists():
            raise DemoError(f"the pipeline wrote no {summary} (exit {code})", code=code or 70)
        doc = json.loads(summary.read_text())
        rows, batch = stage_rows(doc, built)
    except DemoError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.code
    verdict = {0: "PASSED", 1: "FAILED (a step or gate failed)"}.get(code, f"ERROR (exit {code})")
    print()
    print(f"What each stage bought (top-1 on 200 held-out digits; speed-up: p50 at batch {batch}, bootstrap 95% CI over the timing rounds;")
    print("on CPU time: the same ratio of the process's CPU time per call, which other processes' load does not stretch):")
    print_table(rows, batch)
    print(timing_line(doc))
    print()
    print(f"verdict:     {verdict}  ({time.perf_counter() - t0:.0f} s, gates: {', '.join(GATES)})")
    print(f"config:      {config}")
    print(f"HTML report: {report / 'report.html'}")
    print(f"JUnit:       {report / 'junit.xml'}   Markdown: {report / 'summary.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
