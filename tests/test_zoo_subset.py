"""The coverage zoo (scripts/zoo): its yardstick and its verdicts, and the fast subset run
end to end against the raw converters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.zoo.common import compare
from scripts.zoo.judge import judge

REPO = Path(__file__).resolve().parents[1]


def _rec(code, verdict="PASSED", raw="ok", hand_ok=True, **extra):
    kit = {"exit_code": code, "verdict": verdict,
           "hand_check": {"ok": hand_ok, "max_abs": 0.5, "problems": [] if hand_ok else ["output 0: 3/8 elements out of tolerance"]}}
    kit.update(extra)
    return {"family": "torch", "model": "m", "onnxkit": kit, "raw": {"outcome": raw, "max_abs": 0.5 if raw == "differs" else 1e-7}}


def test_compare_within_tolerance_and_out_of_it():
    ref = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert compare([ref], [ref + 1e-6])["ok"]
    out = compare([ref], [ref + np.float32(1e-3)])
    assert not out["ok"] and out["max_abs"] == pytest.approx(1e-3, rel=1e-2)
    assert "out of tolerance" in out["problems"][0]


def test_compare_labels_exactly_and_nan_on_one_side():
    assert not compare([np.array([0, 1, 2])], [np.array([0, 1, 1])])["ok"]
    got = compare([np.array([1.0, np.nan])], [np.array([1.0, 2.0], dtype=np.float32)])
    assert not got["ok"] and "NaN" in got["problems"][0]


def test_compare_pairs_an_output_by_size_when_positions_differ():
    proba = np.full((2, 3), 1 / 3, dtype=np.float32)
    labels = np.array([0, 2])
    assert compare([labels, proba], [labels, proba.ravel()])["ok"]
    assert not compare([proba], [np.zeros(5, dtype=np.float32)])["ok"]


@pytest.mark.parametrize(("record", "outcome"), [
    (_rec(0), "same"),
    (_rec(0, raw="differs"), "onnxkit better"),
    (_rec(0, hand_ok=False), "onnxkit bug"),  # a false PASSED
    (_rec(0, raw="differs", hand_ok=False), "both fail"),  # as far off as the raw file: the tolerance's edge
    (_rec(1, "FAILED", hand_ok=True), "onnxkit worse"),  # a false FAILED
    (_rec(1, "FAILED", raw="differs", hand_ok=False), "both fail"),
    (_rec(5, "UnsafeInput"), "onnxkit worse"),  # a false refusal
    (_rec(70, "InternalError"), "onnxkit bug"),
    (_rec(4, "ConversionError", raw="failed"), "both fail"),
    (_rec(None, "TIMEOUT"), "onnxkit worse"),
])
def test_judge(record, outcome):
    assert judge(record)[0] == outcome


def test_judge_a_pass_further_off_than_the_raw_file_is_a_false_pass():
    rec = _rec(0, raw="differs", hand_ok=False)
    rec["raw"]["max_abs"] = 0.01
    assert judge(rec)[0] == "onnxkit bug"


@pytest.mark.parametrize(("raw_under_onnxkit", "outcome"), [(1, "both fail"), (0, "onnxkit worse")])
def test_judge_a_failure_on_onnxkits_inputs_is_weighed_against_the_raw_file_on_them(raw_under_onnxkit, outcome):
    # onnxkit FAILED on its random inputs; the zoo's inputs pass both files. Only when
    # onnxkit's validation fails the raw file too is the failure the inputs', not the export's.
    rec = _rec(1, "FAILED", hand_ok=True, max_abs=4e-3)
    rec["raw"]["onnxkit_validate"] = {"exit_code": raw_under_onnxkit, "max_abs": 4e-3 if raw_under_onnxkit else 1e-6}
    assert judge(rec)[0] == outcome


def test_judge_a_code_carrying_file_refused_is_expected():
    rec = _rec(5, "UnsafeInput")
    rec["carries_code"] = True
    assert judge(rec)[0] == "expected refusal"


def test_unknown_family_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts/zoo/run.py"), "--family", "caffe", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "unknown family caffe" in proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_fast_subset_onnxkit_at_least_as_good_as_the_raw_converters(tmp_path):
    """About ten models across the five families: every one gets a verdict from onnxkit (no
    exit 70, no traceback, one JSON document) and none is refused, failed or falsely passed
    where the raw converter does the job."""
    out = tmp_path / "zoo.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts/zoo/run.py"), "--fast", "--json", str(out), "--timeout", "300"],
                          capture_output=True, text=True, timeout=1500, cwd=REPO)
    records = json.loads(out.read_text())["records"]
    assert {r["family"] for r in records} == {"torch", "transformers", "keras", "sklearn", "boosters"}, proc.stdout[-2000:]
    assert len(records) >= 10
    no_verdict = [r["model"] for r in records if "build_error" not in r
                  and (r["onnxkit"].get("exit_code") in (None, 70) or "traceback" in r["onnxkit"] or not r["onnxkit"].get("verdict"))]
    behind = [f"{r['family']} {r['model']}: {r['outcome']}: {r['difference']}" for r in records
              if r["outcome"] in ("onnxkit worse", "onnxkit bug")]
    assert not no_verdict and not behind, f"no verdict from onnxkit: {no_verdict}\n" + "\n".join(behind)
    assert not [r["model"] for r in records if r["outcome"] == "skipped"], "the fast subset must build every model"
