"""The `--vs` source side of a benchmark: its inputs, how one call of it is made and timed,
and how it is given the thread count and spin policy of the ONNX side.

An ONNX source that is not trusted runs in a contained worker (runtime/contained.py): its
calls are timed in the worker, around the session run alone, because this process's clocks
would count the pipe round trip as the model's work and see none of the worker's CPU time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import InputError
from onnxkit.foundation.data import Feeds
from onnxkit.runtime.timing import Runner


def source_name(source: Any) -> str:
    return Path(str(getattr(source, "path", "source"))).name if source is not None else ""


def source_feeds(feeds: Feeds, source) -> Feeds:
    """The same inputs keyed the way the source model names them (positional if names differ)."""
    specs = list(getattr(source, "input_specs", []) or [])
    if not specs or {s.name for s in specs} == set(feeds):
        names = {s.name: s for s in specs}
        return {k: (v.astype(names[k].dtype) if k in names and names[k].dtype.kind == "f" and v.dtype.kind == "f" else v)
                for k, v in feeds.items()}
    if len(specs) != len(feeds):
        raise InputError(
            f"the source model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}) but the ONNX model "
            f"{len(feeds)} ({', '.join(feeds)}); they cannot be timed on the same inputs",
        )
    return {s.name: v for s, v in zip(specs, feeds.values())}


def source_call(source, feeds: Feeds) -> Callable[[], object]:
    framework = getattr(source, "framework", "")
    if framework == "torch":
        import torch

        # Eager PyTorch is timed as it is served: no autograd bookkeeping.
        def call() -> object:
            with torch.inference_mode():
                return source.predict(feeds)
        return call
    timed = getattr(source, "timed_call", None)
    call = timed(feeds) if timed is not None else None
    return call or (lambda: source.predict(feeds))


def source_runner(source, feeds: Feeds, name: str | None = None) -> Runner:
    """The timed source, with the times a contained source measures for itself."""
    return Runner(name or source_name(source), getattr(source, "framework", "") or "source", source_call(source, feeds),
                  is_source=True, own_times=getattr(source, "call_times", None))


def limit_source_threads(source, threads: int | None, undo: list[Callable[[], object]] | None = None) -> list[str]:
    """Give the source framework the same thread count as ONNX Runtime, so a speed-up
    compares like with like. Returns notes for frameworks that cannot be told. ``undo`` gets
    the calls that put the process-wide settings back (torch's threads, the BLAS pools): in
    library use a benchmark must not leave them changed.

    ``threads=None``: ONNX Runtime's default on both sides; only an ONNX source can follow it."""
    undo = [] if undo is None else undo
    framework = getattr(source, "framework", "")
    if framework == "onnx" and hasattr(source, "set_timing"):
        # Always timed interleaved, so its threads sleep between runs as the ONNX side's do.
        source.set_timing(threads, spinning=False)
        return []
    if threads is None:
        return ["the source framework runs at its own default thread count; give --threads to match"]
    if framework == "torch":
        import torch

        undo.append(lambda before=torch.get_num_threads(): torch.set_num_threads(before))
        torch.set_num_threads(threads)
    elif framework == "xgboost" and hasattr(source, "booster"):
        source.booster.set_param({"nthread": threads})
    elif framework == "tensorflow":
        return ["TensorFlow's thread count is fixed once it starts; set TF_NUM_INTRAOP_THREADS to match --threads"]
    elif framework in ("sklearn", "lightgbm"):
        # Their heavy lifting runs in BLAS/OpenMP pools, which threadpoolctl (a scikit-learn
        # dependency) can size; without it they keep their defaults, and the note says so.
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return [f"{framework} runs at its own thread count (threadpoolctl is not installed to set it)"]
        undo.append(threadpool_limits(limits=threads).restore_original_limits)
    return []


def handover_note(source, overhead_ms: list[float], batch: int) -> tuple[float | None, list[str]]:
    """(median ms per call outside the timed run, notes) for a source timed in its own worker."""
    if not overhead_ms:
        return None, []
    median = float(np.median(overhead_ms))
    return median, [f"at batch {batch}, the contained source {source_name(source)} is timed in its worker around the "
                    f"session run (wall and CPU time); the pipe round trip, median {median:.3f} ms per call, is not counted"]
