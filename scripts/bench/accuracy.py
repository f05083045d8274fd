"""Accuracy of a benchmarked variant against its source model, on the bundle's real inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

import models as M  # the sibling module (scripts/bench is on sys.path)


# ---------------------------------------------------------------- accuracy

def _cast_for(session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for s in session.input_specs:
        a = feeds[s.name]
        out[s.name] = a.astype(s.dtype) if a.dtype != s.dtype else a
    return out


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def accuracy(bundle: M.Bundle, ref: dict[str, np.ndarray], path: str) -> dict[str, Any]:
    """The variant's outputs on the bundle's real inputs against the source's."""
    from onnxkit.foundation.compare import compare_once
    from onnxkit.runtime.session import make_session

    sess = make_session(path)
    cand = sess.run(_cast_for(sess, bundle.eval_feeds))
    acc: dict[str, Any] = {}
    ref_vals, cand_vals = list(ref.values()), [cand[n] for n in sess.output_names]
    if bundle.name == "minilm":
        mask = bundle.eval_feeds["attention_mask"]
        c = row_cosine(mean_pool(cand_vals[0], mask), mean_pool(ref_vals[0], mask))
        acc["emb_cos_mean"], acc["emb_cos_min"] = float(c.mean()), float(c.min())
        real = mask.astype(bool)  # padded positions are don't-care values
        acc["max_abs"] = float(np.abs(cand_vals[0].astype(np.float64) - ref_vals[0])[real].max())
        return acc
    for comp in compare_once(ref, cand):
        if comp.kind == "label":
            acc["label_agreement"] = comp.label_agreement
        else:
            acc["max_abs"] = max(acc.get("max_abs", 0.0), comp.max_abs)
            if comp.cosine is not None:
                acc["cosine"] = min(acc.get("cosine", 1.0), comp.cosine)
            if comp.top1_agreement is not None:
                acc["top1_agreement"] = comp.top1_agreement
    floats = [(r, c) for r, c in zip(ref_vals, cand_vals) if np.asarray(r).ndim == 2 and np.asarray(r).dtype.kind == "f"]
    if floats:
        r, c = floats[-1]
        acc["top1_agreement"] = float((np.asarray(r).argmax(1) == np.asarray(c).argmax(1)).mean())
    labels = bundle.extra.get("labels")
    if labels is not None:
        scores = cand_vals[-1] if len(cand_vals) > 1 else cand_vals[0]
        pred = cand_vals[0] if len(cand_vals) > 1 and cand_vals[0].ndim == 1 else np.asarray(scores).argmax(-1)
        acc["task_accuracy"] = float((np.asarray(pred).reshape(-1) == labels).mean())
    return acc


def source_task_accuracy(bundle: M.Bundle, ref: dict[str, np.ndarray]) -> float | None:
    labels = bundle.extra.get("labels")
    if labels is None:
        return None
    vals = list(ref.values())
    pred = vals[0] if len(vals) > 1 and np.asarray(vals[0]).ndim == 1 else np.asarray(vals[-1]).argmax(-1)
    return float((np.asarray(pred).reshape(-1) == labels).mean())
