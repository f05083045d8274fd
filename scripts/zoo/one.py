"""Build one zoo model, export it with onnxkit and with the raw converter, and print one JSON
record. run.py starts this in its own process per model so a hang or a crash costs one row."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.zoo.common import Case, check_onnx_file, run_onnxkit_export, run_onnxkit_validate  # noqa: E402

FAMILIES = {
    "torch": "scripts.zoo.torch_zoo",
    "transformers": "scripts.zoo.transformers_zoo",
    "keras": "scripts.zoo.keras_zoo",
    "sklearn": "scripts.zoo.sklearn_zoo",
    "boosters": "scripts.zoo.boosters_zoo",
}


def family_module(name: str):
    return importlib.import_module(FAMILIES[name])


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:400]


def run_case(family: str, model: str, workdir: Path, timeout: float) -> dict:
    record: dict = {"family": family, "model": model}
    t0 = time.perf_counter()
    try:
        case: Case = family_module(family).build(model, workdir)
    except Exception as exc:  # the zoo's own builder failed: no verdict on onnxkit either way
        record.update(route="?", build_error=_error(exc), build_trace=traceback.format_exc()[-1500:])
        return record
    record.update(route=case.route, carries_code=case.carries_code, build_seconds=round(time.perf_counter() - t0, 2), notes=case.notes)

    out = workdir / "onnxkit.onnx"
    kit = run_onnxkit_export(case, out, timeout)
    if out.exists():
        # The export's own validation is onnxkit's claim; this checks the claim by hand.
        try:
            kit["hand_check"] = check_onnx_file(case, out)
        except Exception as exc:
            kit["hand_check"] = {"ok": False, "error": _error(exc)}
    record["onnxkit"] = kit

    raw_out = workdir / "raw.onnx"
    raw: dict = {}
    t1 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.raw_export(raw_out)
        raw["seconds"] = round(time.perf_counter() - t1, 2)
        raw.update(check_onnx_file(case, raw_out))
        raw["outcome"] = "ok" if raw["ok"] else "differs"
    except Exception as exc:
        raw.setdefault("seconds", round(time.perf_counter() - t1, 2))
        raw["outcome"] = "failed" if not raw_out.exists() else "does not run"
        raw["error"] = _error(exc)
    if kit.get("exit_code") == 1 and raw.get("outcome") == "ok" and (kit.get("hand_check") or {}).get("ok"):
        # onnxkit failed on its own random inputs where the zoo's inputs pass both files:
        # validate the raw file the same way, so the two are judged like for like.
        raw["onnxkit_validate"] = run_onnxkit_validate(case, raw_out, timeout)
    record["raw"] = raw
    return record


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("family", choices=sorted(FAMILIES))
    ap.add_argument("models", nargs="+", help="run one after the other, one record line each")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep the files")
    args = ap.parse_args()
    for model in args.models:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            record = run_case(args.family, model, args.keep, args.timeout)
        else:
            with tempfile.TemporaryDirectory(prefix="zoo-") as d:
                record = run_case(args.family, model, Path(d), args.timeout)
        # A marked line of its own: frameworks print to stdout too.
        print("\nZOO-RECORD " + json.dumps(record, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
