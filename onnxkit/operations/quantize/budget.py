"""The accuracy budget: measure the quantized model against its float input and keep the
most sensitive nodes in float until it is within budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import InputError, OnnxkitError, UsageError
from onnxkit.foundation.compare import judged_cosine as budget_cosine
from onnxkit.operations.quantize.engines import run_quantizer
from onnxkit.operations.quantize.options import MAX_BUDGET_ROUNDS, QuantConfig, WEIGHTED_OPS
from onnxkit.operations.quantize.selection import _has_weight, left_in_float

log = logging.getLogger(__name__)


@dataclass
class ErrorMeasure:
    metric: str
    error: float  # the number the budget applies to (lower is better)
    cosine: float | None = None
    max_abs: float | None = None
    agreement: float | None = None
    samples: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)
    constant_outputs: list[str] = field(default_factory=list)  # the float model's, on these samples
    worst: str | None = None  # which output sets the error, when it is not what the metric's name says
    shape_notes: list[str] = field(default_factory=list)  # float model outputs that contradict their declared shape


def measure_error(float_model: Any, quant_model: Any, batches: list[dict], metric: str, *,
                  sequential: bool = False) -> ErrorMeasure:
    """``sequential``: one session alive at a time (the float outputs are kept, then the
    float session is closed), for models whose weights must not be held twice."""
    from onnxkit.foundation.compare import Comparator, Tolerance
    from onnxkit.runtime.session import make_session

    comp = Comparator(Tolerance(atol=1e30, rtol=0.0))
    if sequential:
        import gc

        ref = make_session(float_model)
        refs = [ref.run(feeds) for feeds in batches]
        del ref
        gc.collect()
        cand = make_session(quant_model)
        for feeds, r in zip(batches, refs):
            comp.add(r, ignore_padding(feeds, r, cand.run(feeds)))
        del cand
        gc.collect()
    else:
        from onnxkit.operations.validate_shapes import ShapeWatch

        ref, cand = make_session(float_model), make_session(quant_model)
        watch = ShapeWatch(ref.run, float_model, "the input model") if hasattr(float_model, "graph") else None
        for feeds in batches:
            r, c = (watch or ref.run)(feeds), cand.run(feeds)
            comp.add(r, ignore_padding(feeds, r, c))
    outs = comp.results()
    cosines = [c for c in map(budget_cosine, outs) if c is not None]
    agrees = [a for o in outs for a in (o.label_agreement if o.label_agreement is not None else o.top1_agreement,) if a is not None]
    m = ErrorMeasure(metric=metric, error=0.0, samples=comp.rows,
                     cosine=min(cosines) if cosines else None,
                     max_abs=max(o.max_abs for o in outs), agreement=min(agrees) if agrees else None,
                     outputs=[{"name": o.name, "cosine": budget_cosine(o), "rel_error": o.rel_error, "max_abs": o.max_abs, "mean_abs": o.mean_abs,
                               "agreement": o.label_agreement if o.label_agreement is not None else o.top1_agreement,
                               "nan_mismatch": o.nan_mismatch} for o in outs])
    from onnxkit.foundation.compare import REFERENCE_CONSTANT

    m.constant_outputs = [o.name for o in outs if REFERENCE_CONSTANT in o.warning_codes]
    if not sequential and watch is not None:
        m.shape_notes = [msg for _, msg in watch.mismatches()]
    if any(o.nan_mismatch for o in outs):
        m.error = float("inf")
    elif metric == "cosine":
        if m.cosine is None:
            float_outs = [o.name for o in outs if o.kind == "numeric"]
            if float_outs:
                # Float outputs with no finite value on either side: nothing is wrong with the
                # metric, the float model computes NaN/Inf on these inputs.
                raise InputError(
                    f"the float model's output {float_outs[0]!r} is NaN or Inf everywhere on the "
                    f"{comp.rows} measurement sample(s): there is nothing to measure the quantization error on",
                    hint="check the model (a NaN weight, a Log or Sqrt of negative values) or measure on --data "
                         "where it computes finite values; nothing was written")
            raise UsageError("--metric cosine needs a float output; use --metric label or maxabs")
        m.error = 1.0 - m.cosine
    elif metric == "label":
        if m.agreement is None:
            raise UsageError("--metric label needs a label or score output (2-D); use --metric cosine or maxabs")
        m.error = 1.0 - m.agreement
    else:
        m.error = float(m.max_abs or 0.0)
    if metric != "label":
        _count_label_outputs(m, outs, metric)
    return m


def _count_label_outputs(m: ErrorMeasure, outs: list[Any], metric: str) -> None:
    """Integer and bool outputs (class ids, argmax, masks) have no cosine, yet they are often
    the answer the model is used for: a mask agreeing on 87.5% of its values passed an int4
    budget of cosine 0.98. They are held to what ``--metric label`` holds them to, the share
    of values that differ (1 - agreement) against the same budget; under maxabs a changed id
    or flag is an absolute difference of at least 1."""
    labels = [o for o in outs if o.kind == "label" and o.label_agreement is not None and o.label_agreement < 1.0]
    if not labels:
        return
    worst = min(labels, key=lambda o: o.label_agreement)
    share = 1.0 - worst.label_agreement
    err = share if metric == "cosine" else 1.0
    if err > m.error:
        m.error = err
        m.worst = (f"output {worst.name!r} ({worst.ref_dtype}) agrees with the float model on "
                   f"{100 * worst.label_agreement:.4g}% of its values ({100 * share:.3g}% differ)")


def _padding_mask(feeds: dict) -> np.ndarray | None:
    for k, v in feeds.items():
        if "mask" in k.lower() and v.ndim == 2 and v.dtype.kind in "iub":
            return np.asarray(v) == 0
    return None


def ignore_padding(feeds: dict, ref: dict, cand: dict) -> dict:
    """Outputs at padded positions (attention_mask == 0) are don't-care values that no
    consumer reads (pooling masks them); copy the reference there so they do not count.
    Measured on MiniLM: with padding counted, token-level cosine was 0.958 while the
    mean-pooled sentence cosine was 0.993."""
    pad = _padding_mask(feeds)
    if pad is None or not pad.any():
        return cand
    out = dict(cand)
    for k, v in cand.items():
        if v.ndim >= 2 and v.shape[:2] == pad.shape and ref[k].shape == v.shape:
            fixed = np.array(v, copy=True)
            fixed[pad] = ref[k][pad]
            out[k] = fixed
    return out


def _with_outputs(model: Any, names: list[str]) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    den = np.linalg.norm(a)
    return float(np.linalg.norm(a - b) / den) if den > 0 else float(np.linalg.norm(b) > 0)


def rank_sensitivity(float_model: Any, quant_model: Any, candidates: list[Any], feeds: dict) -> list[tuple[str, float]]:
    """Score each candidate node by the relative error it adds: the error of its output in the
    quantized graph minus the error already present at its (activation) input. Both graphs
    keep the float tensor names at node boundaries, so intermediates can be compared by name."""
    from onnxkit.runtime.session import make_session

    float_names = {o for n in float_model.graph.node for o in n.output}
    quant_names = {o for n in quant_model.graph.node for o in n.output} | {i.name for i in quant_model.graph.input}
    inits = {t.name for t in float_model.graph.initializer}
    pairs = []
    for n in candidates:
        outs = [o for o in n.output[:1] if o in quant_names]
        ins = [i for i in n.input if i and i not in inits and (i in float_names or i in {x.name for x in float_model.graph.input})]
        if outs:
            pairs.append((n.name, outs[0], ins[0] if ins and ins[0] in quant_names else None))
    if not pairs:
        return []
    names = sorted({p[1] for p in pairs} | {p[2] for p in pairs if p[2]})
    graph_inputs = {i.name for i in float_model.graph.input}
    fetch = [x for x in names if x not in graph_inputs]
    try:
        fs = make_session(_with_outputs(float_model, fetch))
        qs = make_session(_with_outputs(quant_model, fetch))
        fo = fs.run(feeds, fetch)
        qo = ignore_padding(feeds, fo, qs.run(feeds, fetch))
        fo, qo = fo | dict(feeds), qo | dict(feeds)
    except OnnxkitError as exc:
        log.debug("intermediate comparison failed: %s", exc)
        return []
    scores = []
    for name, out, inp in pairs:
        e_out = _rel(fo[out], qo[out]) if fo[out].dtype.kind == "f" else 0.0
        e_in = _rel(fo[inp], qo[inp]) if inp and fo[inp].dtype.kind == "f" else 0.0
        scores.append((name, e_out - e_in))
    scores.sort(key=lambda kv: -kv[1])
    return scores


# A float rewrite must not move the answers. Fused kernels reorder sums, so this is an order
# looser than export's fp32 check (MiniLM's fused graph: max abs 3e-6).
FUSION_TOLERANCE = {"atol": 2e-4, "rtol": 1e-3}


def _keep_if_faithful(before: Any, after: Any, notes: list[str], batches: list[dict]) -> tuple[Any, list[str]]:
    """The fused float graph when it computes what ``before`` does, else ``before`` with a note:
    a fuser bug must not pass for quantization error."""
    from onnxkit.foundation.compare import Comparator, Tolerance
    from onnxkit.runtime.session import make_session

    comp = Comparator(Tolerance(**FUSION_TOLERANCE))
    ref = make_session(before)
    try:
        cand = make_session(after)
        for feeds in batches:
            r = ref.run(feeds)
            comp.add(r, ignore_padding(feeds, r, cand.run(feeds)))
    except OnnxkitError as exc:
        # Seen: onnxscript's rewriter folding GPT-2's reshape + addmm into a Gemm on a rank-3 input.
        return before, [f"transformer fusion before quantizing not used: the fused graph does not run ({exc.message[:200]}); "
                        "quantized the graph as it is"]
    bad = [o for o in comp.results() if not o.passed]
    if not bad:
        return after, notes
    worst = max(bad, key=lambda o: o.max_abs or 0.0)
    return before, [f"transformer fusion before quantizing not used: the fused float graph differs from the input "
                    f"({worst.name}: max abs {worst.max_abs:.3g}); quantized the graph as it is"]


def _budget_loop(reference: Any, base: Any, qmodel: Any, err: ErrorMeasure, cfg: QuantConfig, excluded: dict[str, str], batches: list[dict],
                 metric: str, budget: float, work: Path) -> tuple[Any, ErrorMeasure]:
    """Exclude the most sensitive node, re-quantize, re-measure; until within budget."""
    candidates_ops = WEIGHTED_OPS if cfg.mode != "int4" else {"MatMul", "Gemm"}
    weights = {t.name for t in base.graph.initializer if len(t.dims) >= 2}
    # Excluding a node the quantizer already left in float changes nothing but spends a round
    # (MiniLM: 6 of the 12 went to unquantized Attention nodes). fp16 keeps node inputs as
    # they were, so "untouched" cannot be read from the graph there.
    skipped = left_in_float(base, qmodel) if cfg.mode in ("dynamic", "static") else set()
    best_q, best_err = qmodel, err
    for round_no in range(1, MAX_BUDGET_ROUNDS + 1):
        cands = [n for n in base.graph.node if n.op_type in candidates_ops and n.name not in excluded
                 and n.name not in skipped and _has_weight(n, weights)]
        if len(cands) <= 1:
            # Keeping the last quantized node in float would return a float model, not a
            # quantized one that meets the budget.
            break
        scores = rank_sensitivity(base, best_q, cands, batches[0])
        if scores and scores[0][1] > 0:
            node, score = scores[0]
            why = f"accuracy budget, round {round_no}: adds the most error (relative error +{score:.3g} at its output)"
        else:
            # No intermediate signal (names rewritten): try each candidate alone, keep the best.
            trial = []
            for n in cands[:24]:
                q = run_quantizer(base, cfg, list(excluded) + [n.name], work)
                trial.append((measure_error(reference, q, batches, metric).error, n.name))
            if not trial:
                break
            score, node = min(trial)
            why = f"accuracy budget, round {round_no}: excluding it alone gives the lowest error ({score:.3g})"
        excluded[node] = why
        q = run_quantizer(base, cfg, list(excluded), work)
        e = measure_error(reference, q, batches, metric)
        excluded[node] = why + f"; {metric} error after: {e.error:.4g}"
        log.info("budget round %d: kept %s in float, error %.4g", round_no, node, e.error)
        # Keep the latest even if it got worse: excluding more can only be undone by the user.
        best_q, best_err = q, e
        if e.error <= budget:
            break
    return best_q, best_err
