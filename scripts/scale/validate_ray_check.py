"""`onnxkit validate --engine ray` on a large tabular data set gives the local verdict and max diff.

Built here, nothing downloaded: an XGBoost classifier (8 features, 50 trees) exported with
`onnxkit export`, a twin with every leaf weight moved by 0.05 (must FAIL), and N rows
(default 100,000) written once as one parquet file (the local run's --data) and once as 10
parquet shards (the Ray runs' --data). Each model is validated locally and on Ray with 1 and
2 workers, all with the same row cuts (--batch-sizes / --batch-size = the shard size); every
Ray run starts its own local Ray on this machine. The check passes when every Ray run has the
local verdict, exit code and sample count, and per output the local max abs diff: exactly with
1 worker, within 4 float32 steps with 2 (see below).

A tree ensemble's sums in ONNX Runtime depend on its thread count, and Ray gives each actor
cores / workers threads: the local run and the 1-worker run both use 2 threads here, the
2-worker run 1 thread each, so the latter may differ from local in the last bits of its
figures (not of the verdict); the table shows it. The merge of the per-range comparisons itself
is exact (tests/test_ray_validate.py).

Usage: python scripts/scale/validate_ray_check.py [--rows N] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 10
FIELDS = ("max_abs", "mean_abs", "p99_abs", "out_of_tol", "elements")


def _onnxkit(*args: str | Path) -> tuple[int, dict, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onnxkit", *map(str, args), "--json"], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"onnxkit {' '.join(map(str, args))} printed no JSON (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.returncode, doc, seconds


def _build(workdir: Path, rows: int) -> None:
    import numpy as np
    import onnx
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] > 0).astype(int)
    xgb.XGBClassifier(n_estimators=50, max_depth=5).fit(x, y).save_model(workdir / "xgb.json")
    code, doc, _ = _onnxkit("export", workdir / "xgb.json", "-o", workdir / "xgb.onnx")
    if code != 0:
        raise SystemExit(f"export failed: {doc}")
    m = onnx.load(workdir / "xgb.onnx")
    for node in m.graph.node:
        for att in node.attribute:
            if att.name in ("class_weights", "target_weights"):
                att.floats[:] = [w + 0.05 for w in att.floats]
    onnx.save(m, workdir / "perturbed.onnx")
    data = rng.standard_normal((rows, 8)).astype(np.float32)
    cols = [f"f{i}" for i in range(8)]
    pd.DataFrame(data, columns=cols).to_parquet(workdir / "all.parquet")
    (workdir / "shards").mkdir(exist_ok=True)
    per = -(-rows // SHARDS)
    for k in range(SHARDS):
        pd.DataFrame(data[k * per:(k + 1) * per], columns=cols).to_parquet(workdir / "shards" / f"part-{k:02d}.parquet")


def check(rows: int = 100_000, workdir: Path | None = None) -> dict:
    """Validate both models locally and on Ray (1 and 2 workers); returns every run's figures
    and ``ok``: whether each Ray run has the local verdict and max abs diff."""
    own = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="onnxkit-validate-ray-") if own else None
    work = Path(tmp.name) if tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        _build(work, rows)
        cut = str(-(-rows // SHARDS))
        runs = []
        for model in ("xgb.onnx", "perturbed.onnx"):
            src = (work / "xgb.json", work / model)
            variants = [("local", ["--data", work / "all.parquet", "--batch-sizes", cut])]
            variants += [(f"ray, {w} worker{'s' if w > 1 else ''}",
                          ["--data", work / "shards", "--engine", "ray", "--workers", str(w), "--batch-size", cut])
                         for w in (1, 2)]
            local = None
            for name, extra in variants:
                code, doc, seconds = _onnxkit("validate", *src, *extra)
                outs = {o["name"]: {f: o[f] for f in FIELDS} for o in doc.get("outputs", [])}
                run = {"model": model, "engine": name, "exit": code, "passed": doc.get("passed"),
                       "samples": doc.get("samples"), "seconds": round(seconds, 1), "outputs": outs,
                       "engine_note": next((n for n in doc.get("notes", []) if n.startswith("engine ray")), "")}
                if local is None:
                    local = run
                else:
                    run["same_verdict"] = (code == local["exit"] and run["passed"] == local["passed"]
                                           and run["samples"] == local["samples"])
                    run["max_abs_vs_local"] = _max_abs_agreement(outs, local["outputs"])
                runs.append(run)
        # Exact where ONNX Runtime runs with the local thread count (1 worker: 2 threads);
        # within float32 rounding where it does not (2 workers: 1 thread each).
        ok = all(r["samples"] == rows for r in runs) and all(
            r["same_verdict"] and (r["max_abs_vs_local"] == "exact" if r["engine"] == "ray, 1 worker" else r["max_abs_vs_local"] != "NO")
            for r in runs if "same_verdict" in r)
        return {"rows": rows, "shards": SHARDS, "ok": ok, "runs": runs}
    finally:
        if tmp is not None:
            tmp.cleanup()


def _max_abs_agreement(outs: dict, local: dict) -> str:
    """exact, or how many float32 steps apart the max abs diffs are (at most 4: rounding), or NO."""
    import numpy as np

    worst = 0
    for name, v in local.items():
        a, b = np.float32(outs[name]["max_abs"]), np.float32(v["max_abs"])
        if outs[name]["max_abs"] != v["max_abs"]:
            steps = abs(int(a.view(np.int32)) - int(b.view(np.int32))) if a >= 0 and b >= 0 else 1 << 30
            worst = max(worst, max(steps, 1))
    return "exact" if worst == 0 else (f"{worst} ulp" if worst <= 4 else "NO")


def _print(result: dict) -> None:
    print(f"validate, {result['rows']:,} rows ({result['shards']} parquet shards for Ray), XGBoost 50 trees")
    print(f"{'model':<15} {'engine':<15} {'exit':>4} {'verdict':<7} {'output':<14} {'max abs':>12} {'mean abs':>12} "
          f"{'p99 abs':>12} {'out of tol':>10} {'wall s':>7} {'max abs vs local':>7}")
    for r in result["runs"]:
        for name, o in r["outputs"].items():
            same = "-" if "same_verdict" not in r else (r["max_abs_vs_local"] if r["same_verdict"] else "NO")
            print(f"{r['model']:<15} {r['engine']:<15} {r['exit']:>4} {'PASSED' if r['passed'] else 'FAILED':<7} {name:<14} "
                  f"{o['max_abs']:>12.5g} {o['mean_abs']:>12.5g} {o['p99_abs']:>12.5g} {o['out_of_tol']:>10} "
                  f"{r['seconds']:>7} {same:>7}")
    for r in result["runs"]:
        if r["engine_note"]:
            print(f"  {r['model']}, {r['engine']}: {r['engine_note']}")
    print("OK: every Ray run has the local verdict; the max abs diff is the local one exactly with 1 worker (ONNX "
          "Runtime's thread count as locally) and within float32 rounding with 2" if result["ok"] else "MISMATCH: see the table")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result = check(args.rows, args.workdir)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
