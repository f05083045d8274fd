"""The coverage zoo: build many real architectures with random weights, export each with
onnxkit and with the raw converter, and write docs/coverage.md.

    python scripts/zoo/run.py [--family torch,transformers,keras,sklearn,boosters] [--fast]
                              [--only NAME,...] [--out docs/coverage.md] [--json results.json] [--timeout S]

Models run one at a time. A worker process builds a few models of one family in a row (the
framework is imported once); every onnxkit export is a process of its own with --timeout, and
a worker that gives no record within its deadline is killed and the next model goes on in a
fresh one, so a hang costs one row, never the run.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.zoo.common import PYTHON, REPO, env_for_children  # noqa: E402
from scripts.zoo.judge import judge  # noqa: E402
from scripts.zoo.one import FAMILIES, family_module  # noqa: E402

ORDER = ["torch", "transformers", "keras", "sklearn", "boosters"]
# Models per worker: importing TensorFlow or torch costs seconds a model on a busy machine,
# but a long-lived Keras process also grows; the tabular ones are light.
CHUNK = {"torch": 4, "transformers": 3, "keras": 2, "sklearn": 25, "boosters": 10}


def _reader(stream, q: queue.Queue) -> None:
    for line in stream:
        if line.startswith("ZOO-RECORD "):
            q.put(json.loads(line[len("ZOO-RECORD "):]))
    q.put(None)


def run_family(family: str, models: list[str], timeout: float, log) -> list[dict]:
    records: list[dict] = []
    pending = list(models)
    while pending:
        chunk = pending[: CHUNK[family]]
        cmd = [PYTHON, str(REPO / "scripts/zoo/one.py"), family, *chunk, "--timeout", str(timeout)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=env_for_children(), start_new_session=True)
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
        for model in chunk:
            started = time.perf_counter()
            # Building, the raw converter and the hand checks get as long again as the export.
            try:
                rec = q.get(timeout=2 * timeout + 120)
            except queue.Empty:
                rec = None
                os.killpg(proc.pid, signal.SIGKILL)
            if rec is None:
                rec = {"family": family, "model": model, "route": "?",
                       "build_error": f"worker gave no record (crashed or over {2 * timeout + 120:.0f} s)"}
            rec["wall_seconds"] = round(time.perf_counter() - started, 1)
            rec["outcome"], rec["difference"] = judge(rec)
            rec.setdefault("load", round(os.getloadavg()[0], 1))
            records.append(rec)
            pending.remove(model)
            log(f"{family:12s} {model:32s} {rec['outcome']:16s} {rec['wall_seconds']:6.1f}s  {rec['difference'][:90]}")
            if rec.get("build_error", "").startswith("worker gave no record"):
                break
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return records


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2], timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default=",".join(ORDER), help="comma-separated families")
    ap.add_argument("--fast", action="store_true", help="about ten models across the families")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--out", type=Path, help="write the Markdown page here (docs/coverage.md)")
    ap.add_argument("--json", type=Path, help="write the records here")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for one onnxkit export")
    ap.add_argument("--merge", type=Path, help="records of an earlier run (--json): this run's rows replace theirs")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.family.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    only = set(args.only.split(",")) if args.only else None

    t0 = time.perf_counter()
    records: list[dict] = []
    for family in families:
        mod = family_module(family)
        models = list(mod.FAST) if args.fast else mod.catalog()
        if only:
            models = [m for m in mod.catalog() if m in only]
        if models:
            records += run_family(family, models, args.timeout, lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    # Which rows each run measured, on which commit, when: a merged page says so.
    runs = [{"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit(),
             "rows": sorted(f"{r['family']} {r['model']}" for r in records)}] if records else []
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        fresh = {(r["family"], r["model"]): r for r in records}
        records = [fresh.pop((r["family"], r["model"]), r) for r in earlier["records"]] + list(fresh.values())
        for rec in records:  # judged again: the rules may have changed since
            rec["outcome"], rec["difference"] = judge(rec)
        seconds = earlier["seconds"] + seconds
        runs = earlier.get("runs", []) + runs
        families = [f for f in ORDER if any(r["family"] == f for r in records)]
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "fast": args.fast, "records": records, "runs": runs}, indent=1, default=str))
    if args.out:
        from scripts.zoo.report import write_markdown

        write_markdown(args.out, records, seconds, fast=args.fast, families=families, runs=runs)
    worse = [r for r in records if r["outcome"] in ("onnxkit worse", "onnxkit bug")]
    print(f"{len(records)} models in {seconds / 60:.1f} min; onnxkit worse than the raw converter or buggy on {len(worse)}")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
