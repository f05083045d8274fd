"""``validate --provider openvino [--precision P]``: what is checked up front, and the
tolerance and notes that follow from the precision OpenVINO really used."""

from __future__ import annotations

from typing import Any

from onnxkit.errors import UsageError
from onnxkit.operations.precision import check_precision, ignored_note, tolerance_for


def check_openvino_use(precision: str | None, providers: list[str] | None, reference_providers: list[str] | None,
                       localize: bool) -> str | None:
    """``--precision`` checked; exit 2 for what cannot run on the OpenVINO runtime (before any work)."""
    from onnxkit.runtime import openvino_session

    precision = check_precision(precision)
    on_openvino = openvino_session.wanted(providers) or openvino_session.wanted(reference_providers)
    if on_openvino and localize:
        raise UsageError("--localize replays the graph node by node in ONNX Runtime; it cannot localize a run on "
                         "--provider openvino (validate with --precision f32 to see whether precision is the cause)")
    return precision


def same_path(a: Any, b: Any) -> bool:
    from pathlib import Path

    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError):
        return False


def deployed(session: Any, precision: str | None, tolerance: Any, given: bool) -> tuple[Any, list[str]]:
    """The tolerance the candidate session is held to, and the notes saying at which precision it ran and why."""
    used = getattr(session, "precision", None)
    if used is None:  # ONNX Runtime: the graph's own types
        return tolerance, ignored_note(precision)
    from onnxkit.runtime.openvino_session import precision_notes

    notes = precision_notes(session, precision)
    tolerance, why = tolerance_for(used, tolerance, given)
    return tolerance, notes + ([why] if why else [])
