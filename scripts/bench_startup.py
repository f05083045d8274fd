#!/usr/bin/env python3
"""CLI start-up: `onnxkit --help` against `python -c "import onnx"`, timed side by side.

Interleaves the two commands so machine drift hits both alike, and prints the median
wall time of each and their ratio (goal: onnxkit --help <= 1.5x import onnx).

    python scripts/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--goal", type=float, default=1.5)
    args = ap.parse_args()
    exe = shutil.which("onnxkit")
    onnxkit = [exe, "--help"] if exe else [sys.executable, "-m", "onnxkit", "--help"]
    commands = {
        "python -c 'import onnx'": [sys.executable, "-c", "import onnx"],
        "onnxkit --help": onnxkit,
        "onnxkit inspect --help": onnxkit[:-1] + ["inspect", "--help"],
    }
    for name, cmd in commands.items():  # warm the file cache, and check each command runs
        try:
            _time(cmd)
        except (subprocess.CalledProcessError, OSError):
            print(f"'{name}' fails with {sys.executable}: run this script from onnxkit's environment "
                  "(. .venv/bin/activate)", file=sys.stderr)
            return 2
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(_time(cmd))
    base = statistics.median(times["python -c 'import onnx'"])
    print(f"{'command':28s} {'median s':>9s} {'ratio':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:28s} {med:9.3f} {med / base:7.2f}x")
    ratio = statistics.median(times["onnxkit --help"]) / base
    verdict = "meets" if ratio <= args.goal else "MISSES"
    print(f"onnxkit --help / import onnx = {ratio:.2f}x ({verdict} the {args.goal}x goal)")
    return 0 if ratio <= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
