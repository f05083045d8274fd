"""One record -> (outcome, difference): is onnxkit at least as good as the raw converter on
this model, and if not or if they differ, why."""

from __future__ import annotations

# Outcomes, worst first; "onnxkit worse" and "onnxkit bug" are the ones to fix.
OUTCOMES = ["onnxkit bug", "onnxkit worse", "both fail", "onnxkit better", "same", "expected refusal", "skipped"]


def _err(d: dict) -> str:
    return (d.get("error") or d.get("traceback") or "").replace("\n", " ")[:160]


def judge(rec: dict) -> tuple[str, str]:
    if "build_error" in rec:
        err = rec["build_error"]
        if err.startswith("NotImplementedError: skipped"):
            return "skipped", err.split("skipped: ", 1)[-1]
        if err.startswith("worker gave no record"):
            return "onnxkit worse", err
        return "skipped", f"the zoo could not build it: {err[:160]}"
    kit, raw = rec.get("onnxkit", {}), rec.get("raw", {})
    code = kit.get("exit_code")
    raw_ok = raw.get("outcome") == "ok"
    raw_desc = "raw converter within tolerance" if raw_ok else (
        f"raw converter {raw.get('outcome')}" + (f": {_err(raw)}" if _err(raw) else f" (max abs {raw.get('max_abs', 0):.3g})"))
    hand = kit.get("hand_check") or {}

    if code is None:
        return "onnxkit worse", f"onnxkit export: {kit.get('error')}; {raw_desc}"
    if code == 70 or "traceback" in kit or (kit.get("error", "").startswith("stdout is not one JSON")):
        return "onnxkit bug", f"exit {code}, {kit.get('traceback') or kit.get('error')}"[:240]
    if code == 5 and rec.get("carries_code"):
        return "expected refusal", "the file holds code: refused without --trust, as documented"
    if code == 0:
        if hand and not hand.get("ok", True):
            why = hand.get("error") or "; ".join(hand.get("problems", []))
            if raw.get("outcome") == "differs" and "error" not in hand and hand.get("max_abs", 0) <= 1.5 * raw.get("max_abs", 0):
                # The raw file is as far off: the zoo's inputs found the tolerance's edge, not a bug in onnxkit.
                return "both fail", f"onnxkit PASSED on its inputs; on the zoo's both files are as far off (onnxkit max abs {hand.get('max_abs', 0):.3g}, raw {raw.get('max_abs', 0):.3g}): {why}"[:240]
            return "onnxkit bug", f"PASSED, but its file differs from the source when checked by hand: {why}"[:240]
        if raw_ok:
            return "same", ""
        return "onnxkit better", f"onnxkit PASSED; {raw_desc}"
    if code == 1:
        same_way = raw.get("onnxkit_validate") or {}
        if raw_ok and hand.get("ok") and same_way.get("exit_code") == 1:
            return "both fail", (
                f"on onnxkit's random inputs the raw file fails as well (max abs {same_way.get('max_abs') or 0:.3g}, "
                f"onnxkit's {kit.get('max_abs') or 0:.3g}); on the zoo's inputs both are within tolerance")
        if raw_ok:
            if hand.get("ok"):
                return "onnxkit worse", "onnxkit FAILED its validation, but its file matches the source by hand (false failure): " + "; ".join(kit.get("problems", []))[:160]
            return "onnxkit worse", "onnxkit's file is out of tolerance where the raw converter's is not: " + "; ".join(kit.get("problems", []))[:160]
        return "both fail", f"onnxkit FAILED (max abs {kit.get('max_abs') or 0:.3g}) and {raw_desc}"
    if raw_ok:
        return "onnxkit worse", f"onnxkit exit {code} ({kit.get('verdict')}): {_err(kit)}"
    return "both fail", f"onnxkit exit {code}: {_err(kit)}; {raw_desc}"
