"""Peak memory of onnxkit commands on a model over 2 GB (external data).

Builds the model in a temporary folder without ever holding its weights in memory (the data
file is written in chunks and the tensors point into it), then runs each available command
in a child process and reads that child's own peak RSS from ``os.wait4``. The goal is a
peak of at most 1.5x the model size for commands that must read the weights, and far less
for ``inspect``, which must not.

    python scripts/bench_large_model.py [--size-gb 2.1] [--commands inspect,optimize,quantize,validate]
        [--kind gather|matmul] [--keep DIR]

``validate`` compares the input with the output of ``optimize`` (run it first), else with
itself. ``--kind matmul`` builds MatMul layers instead of Gather tables: every weight byte is
then read by each session, which is the harder case for memory (Gather touches few rows).
With ``--keep DIR`` a model already built there is reused.

Not part of the test suite: it needs ~2.2 GB of free disk and minutes of CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 64 << 20  # bytes written per step while building


def build_model(folder: Path, size_bytes: int, tensors: int = 4, kind: str = "gather") -> Path:
    """gather: x[batch] (int64 indices) -> Gather from each of ``tensors`` float32 tables -> Sum.
    matmul: x[batch, 1024] float -> MatMul with each [1024, N] weight -> ReduceMean over N -> Sum."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    per = size_bytes // tensors
    cols = 1024
    rows = per // (cols * 4)
    if kind == "matmul":  # weights [1024, rows]: same bytes, transposed role
        rows, cols = cols, rows
    data_name = "big.onnx.data"
    inits, nodes, gathered = [], [], []
    offset = 0
    with open(folder / data_name, "wb") as fh:
        for i in range(tensors):
            nbytes = rows * cols * 4
            t = onnx.TensorProto()
            t.name = f"table{i}"
            t.data_type = TensorProto.FLOAT
            t.dims.extend([rows, cols])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
            written = 0
            if kind == "matmul":  # small, varied values: outputs stay finite and int8 has something to do
                block = (np.sin(np.arange(CHUNK // 4, dtype=np.float32) * (i + 1) * 0.001) * 0.02).astype(np.float32).tobytes()
            else:
                block = (np.arange(CHUNK // 4, dtype=np.float32) * (i + 1) / 1e6).tobytes()
            while written < nbytes:
                n = min(len(block), nbytes - written)
                fh.write(block[:n])
                written += n
            offset += nbytes
            if kind == "matmul":
                nodes.append(helper.make_node("MatMul", ["x", t.name], [f"m{i}"]))
                nodes.append(helper.make_node("ReduceMean", [f"m{i}"], [f"g{i}"], axes=[1], keepdims=1))
            else:
                nodes.append(helper.make_node("Gather", [t.name, "idx"], [f"g{i}"], axis=0))
            gathered.append(f"g{i}")
        fh.flush()
        os.fsync(fh.fileno())
    nodes.append(helper.make_node("Sum", gathered, ["y"]))
    if kind == "matmul":
        io = ([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])])
    else:
        io = ([helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", cols])])
    graph = helper.make_graph(nodes, "big", io[0], io[1], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_large_model")
    model.ir_version = 8
    path = folder / "big.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def available_commands() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "onnxkit", "--help"], capture_output=True, text=True).stdout
    names = set()
    in_cmds = False
    for line in out.splitlines():
        if line.strip().startswith("Commands"):
            in_cmds = True
            continue
        if in_cmds and line.startswith("  ") and line.split():
            names.add(line.split()[0])
    return names


def command_args(name: str, model: Path, out_dir: Path) -> list[str]:
    if name == "inspect":
        return ["inspect", str(model), "--json"]
    if name == "optimize":
        return ["optimize", str(model), "-o", str(out_dir / "opt.onnx")]
    if name == "quantize":
        return ["quantize", str(model), "-o", str(out_dir / "q.onnx"), "--mode", "dynamic"]
    if name == "validate":
        opt = out_dir / "opt.onnx"
        return ["validate", str(model), str(opt if opt.exists() else model)]
    raise ValueError(name)


def measure(args: list[str], timeout_s: float, threshold: int | None = None) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS bytes of the child itself). ``threshold`` lowers the
    size above which onnxkit takes its large-model path, to profile it on a small model."""
    t0 = time.perf_counter()
    if threshold is None:
        cmd = [sys.executable, "-m", "onnxkit", *args]
    else:
        boot = ("import sys, onnxkit.foundation.onnx_io as io; io.EXTERNAL_DATA_THRESHOLD = int(sys.argv.pop(1)); "
                "from onnxkit.cli.app import main; main()")
        cmd = [sys.executable, "-c", boot, str(threshold), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = t0 + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.returncode not in (0, 1) and err:
        print(f"    stderr: {err.splitlines()[-1][:200]}")
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return proc.returncode, time.perf_counter() - t0, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.1, help="model size in GB (default 2.1: over the protobuf limit)")
    ap.add_argument("--commands", default="inspect,optimize,quantize,validate")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per command")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (a model already there is reused)")
    ap.add_argument("--threshold", type=int, help="bytes above which onnxkit treats a model as large "
                    "(default: onnxkit's own, ~1.8 GB); lower it to profile the large-model path on a small model")
    ap.add_argument("--kind", choices=("gather", "matmul"), default="gather", help="what the weights feed (default gather)")
    args = ap.parse_args()

    size = int(args.size_gb * 1e9)
    parent = args.keep or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    need = int(size * 2.6) + (200 << 20)  # the model, an optimized copy and a quantized one
    free = shutil.disk_usage(parent).free
    if free < need:
        print(f"not enough free disk in {parent}: {free / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed", file=sys.stderr)
        return 3
    folder = args.keep or Path(tempfile.mkdtemp(prefix="onnxkit-bench-"))
    try:
        t0 = time.perf_counter()
        model = folder / "big.onnx"
        if not (args.keep and model.exists() and (folder / "big.onnx.data").exists()):
            model = build_model(folder, size, kind=args.kind)
        model_bytes = model.stat().st_size + (folder / "big.onnx.data").stat().st_size
        print(f"model: {model} ({model_bytes / 1e9:.2f} GB incl. external data), built in {time.perf_counter() - t0:.1f} s")
        have = available_commands()
        out_dir = folder / "out"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        print(f"{'command':<10} {'exit':>4} {'seconds':>8} {'peak RSS':>10} {'peak/model':>10}")
        worst = 0.0
        for name in [c.strip() for c in args.commands.split(",") if c.strip()]:
            if name not in have:
                print(f"{name:<10} (not available in this onnxkit)")
                continue
            code, secs, peak = measure(command_args(name, model, out_dir), args.timeout, args.threshold)
            ratio = peak / model_bytes
            worst = max(worst, ratio)
            flag = "" if ratio <= 1.5 else "  over the 1.5x goal"
            print(f"{name:<10} {code:>4} {secs:>8.1f} {peak / 1e9:>8.2f}GB {ratio:>9.2f}x{flag}", flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        print(f"worst peak/model ratio: {worst:.2f}x (goal <= 1.5x)")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
