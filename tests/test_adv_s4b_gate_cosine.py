"""The pipeline's ``min_cosine`` gate on a narrow output: the row cosine of a regressor's
[N, 1] is the sign of each prediction, so a final model 40% off read 1.0 and passed. The gate
now reads the cosine the quantize budget reads (``compare.judged_cosine``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def _outputs(scale: float, width: int):
    from onnxkit.foundation.compare import Comparator, Tolerance

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((64, width)).astype(np.float32) + 3.0
    comp = Comparator(Tolerance(atol=1e30, rtol=0.0))
    comp.add({"y": ref}, {"y": ref * scale})
    return comp.results()


def _run(outputs):
    validated = SimpleNamespace(result=SimpleNamespace(outputs=outputs), status="ok")
    return SimpleNamespace(final_model=None, final_variant="quantized",
                           step=lambda name: validated if name == "validate quantized" else None)


def test_min_cosine_gate_fails_a_regressor_40_percent_off():
    from onnxkit.operations.gates import evaluate_gates

    outs = _outputs(1.4, 1)
    assert outs[0].cosine == pytest.approx(1.0)  # what the gate used to read
    (gate,) = evaluate_gates(_run(outs), {"min_cosine": 0.99})
    assert not gate.passed and gate.status == "fail"
    assert gate.actual == pytest.approx(1.0 / np.sqrt(1.0 + 0.4 ** 2), rel=1e-3)
    assert "relative error 0.4" in gate.detail and "values per sample" in gate.detail


def test_min_cosine_gate_passes_a_close_regressor_and_wide_rows_as_before():
    from onnxkit.operations.gates import evaluate_gates

    (gate,) = evaluate_gates(_run(_outputs(1.01, 1)), {"min_cosine": 0.99})
    assert gate.passed, gate.line
    # A wide row keeps its own cosine: a pure scale change has cosine 1 there and the
    # validation's relative-error bound, not this gate, judges it.
    wide = _outputs(1.4, 16)
    (gate,) = evaluate_gates(_run(wide), {"min_cosine": 0.99})
    assert gate.actual == pytest.approx(wide[0].cosine) and "values per sample" not in gate.detail


def test_max_error_gate_does_not_read_a_label_outputs_zero_as_a_match():
    from onnxkit.foundation.compare import Comparator, Tolerance
    from onnxkit.operations.gates import evaluate_gates

    comp = Comparator(Tolerance(atol=1e-3, rtol=0.0, min_agreement=0.5))
    comp.add({"cls": np.array([1, 2, 3, 4])}, {"cls": np.array([1, 2, 3, 9])})
    outs = comp.results()
    assert outs[0].kind == "label" and outs[0].max_abs == 0.0  # no abs error is measured on labels
    (gate,) = evaluate_gates(_run(outs), {"max_error.max_abs": 0.5})
    assert not gate.passed and gate.actual is None and "no numeric output has max_abs" in gate.detail
