#!/usr/bin/env python3
"""Does `bench --vs SOURCE --min-speedup T` give the same verdict run after run on a loaded machine?

    python scripts/bench/gate_stability.py [--runs 5] [--burners 2] [--iterations 30]

Builds, with random weights, a PyTorch source (a torch.export .pt2 of 24 square Linear
layers, as a user would hand to `--vs`) and an ONNX model doing 4 of those GEMMs (about 6x
less work), and runs the gate ``--runs`` times at three thresholds: far below the measured
speed-up (must always pass), far above it (must always fail) and at it (must say
inconclusive, never a coin toss between pass and fail). ``--burners`` CPU-burning processes
run meanwhile, so the machine is loaded beyond its cores; they are stopped at the end.
``--onnx-source`` uses the 24-layer chain as an ONNX file instead (onnxkit runs an ONNX
source in a contained worker process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def chain(path: Path, layers: int, width: int = 384) -> None:
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    g = np.random.default_rng(layers)
    nodes, inits, h = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((g.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"h{i}"]))
        h = f"h{i}"
    nodes.append(helper.make_node("Identity", [h], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", T.FLOAT, ["batch", width])], inits)
    import onnx

    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def torch_chain(path: Path, layers: int, width: int = 384) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)]).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(net, (torch.randn(2, width),), dynamic_shapes={"input": {0: batch}}), str(path))


def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x = (x * 1103515245 + 12345) % 2**31


def gate(model: Path, source: Path, threshold: float, iterations: int, batch: int) -> dict:
    argv = [sys.executable, "-m", "onnxkit", "bench", str(model), "--vs", str(source), "--min-speedup", f"{threshold:g}",
            "--threads", "1", "--iterations", str(iterations), "--warmup", "3", "--batch-size", str(batch), "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {"status": f"error (exit {proc.returncode}): {proc.stderr.strip()[-120:]}"}
    g = doc.get("speedup_gate") or {}
    e = next((e for e in doc.get("entries", []) if not e.get("is_source")), {})
    return {"status": g.get("status", "?"), "exit": proc.returncode, "speedup": g.get("speedup"), "ci95": g.get("ci95"),
            "cpu_ci95": e.get("speedup_cpu_ci95"), "cpu": e.get("speedup_cpu"), "load": doc.get("load_before"),
            "reason": g.get("reason", "")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burners", type=int, default=2, help="CPU-burning processes while the gates run")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--onnx-source", action="store_true", help="the source as an ONNX file, not PyTorch")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="onnxkit-gate-"))
    source, model = work / ("source.onnx" if args.onnx_source else "source.pt2"), work / "model.onnx"
    (chain if args.onnx_source else torch_chain)(source, 24)
    chain(model, 4)
    # The speed-up "at" the threshold: measured once before loading the machine, on CPU time
    # where there is one (one thread: a call's CPU time is its work; the wall clock of a shared
    # machine is stretched by other load, the longer call more).
    first = gate(model, source, 1.0, args.iterations, args.batch)
    true = first.get("cpu") or first.get("speedup") or 6.0
    thresholds = {"far below": true / 3, "far above": true * 3, "at": true}
    print(f"work ratio 6x; measured before loading: {true:.2f}x on CPU time, {first.get('speedup') or 0:.2f}x wall clock; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.burners} burners from now on", flush=True)
    stop_at = time.time() + 3600
    burners = [mp.Process(target=_burn, args=(stop_at,), daemon=True) for _ in range(args.burners)]
    for b in burners:
        b.start()
    ok = True
    try:
        for label, t in thresholds.items():
            res = [gate(model, source, t, args.iterations, args.batch) for _ in range(args.runs)]
            statuses = [r["status"] for r in res]
            want = {"far below": {"pass"}, "far above": {"fail"}, "at": {"inconclusive"}}[label]
            flipped = "pass" in statuses and "fail" in statuses
            ok &= not flipped and (set(statuses) <= want if label != "at" else not flipped)
            print(f"T = {t:6.2f}x ({label:9}): {', '.join(statuses)}" + ("  FLIPPED" if flipped else ""), flush=True)
            for r in res:
                ci = r.get("ci95") or [float("nan")] * 2
                cpu = r.get("cpu_ci95") or [float("nan")] * 2
                print(f"    wall {r.get('speedup') or float('nan'):6.2f}x 95% [{ci[0]:.2f}, {ci[1]:.2f}]  "
                      f"cpu {r.get('cpu') or float('nan'):6.2f}x 95% [{cpu[0]:.2f}, {cpu[1]:.2f}]  "
                      f"load before {(r.get('load') or [0])[0]:.1f}", flush=True)
    finally:
        for b in burners:
            b.terminate()
            b.join()
    print("no flips" if ok else "a far threshold did not get its expected verdict every time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
