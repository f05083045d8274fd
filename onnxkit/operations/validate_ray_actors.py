"""The two actors of ``validate --engine ray``: one runs the source model, the other the ONNX
model, on the same row ranges of the same shards; the ONNX one compares and hands back a
mergeable comparison state (never the outputs themselves).

Both are plain classes (``ray.remote`` wraps them in :mod:`onnxkit.operations.validate_ray`),
so they load the source exactly as local validate does: through the frameworks adapters,
with the same trust rules, and the ONNX model in a contained worker unless ``--trust``.
Errors travel as replies (``("ok", payload)``, ``("onnxkit", ...)``, ``("error", ...)``) the
way ``ray_cluster.raise_reply`` reads them: an exception reaching the driver is always Ray's
own (an actor died).
"""

from __future__ import annotations

import os
from typing import Any

from onnxkit.runtime.ray_actors import error_reply


def _where_reply(exc: BaseException, shard: Any, start: int, stop: int) -> tuple:
    """An error reply that names the shard and rows it happened on (a batch over the time or
    memory limit, data that does not fit the model)."""
    reply = error_reply(exc)
    if reply[0] == "onnxkit":
        module, qualname, message, hint = reply[1]
        if shard.path.name not in message:
            message = f"data shard {shard.path}, rows {start}-{stop - 1}: {message}"
        reply = ("onnxkit", (module, qualname, message, hint))
    return reply


def _batches(feeds: dict, shard: Any, start: int, stop: int, batch: int | None):
    """``(where, feeds)`` of rows [start, stop) in pieces of ``batch`` rows (all in one without)."""
    rows = stop - start
    step = batch or rows
    for a in range(0, rows, step):
        b = min(a + step, rows)
        yield f"{shard.path.name} rows {start + a}-{start + b - 1}", {k: v[a:b] for k, v in feeds.items()}


def _threads_env(threads: int) -> None:
    # The source frameworks (torch, numpy's BLAS, xgboost) would each take every core of the
    # node; an actor gets its share only.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


class _Actor:
    def __init__(self) -> None:
        self.error: tuple | None = None

    def ready(self) -> tuple:
        return self.error or ("ok", None)

    def where(self) -> tuple[int, str]:
        import socket

        return os.getpid(), socket.gethostname()

    def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.close()  # a contained worker process stops with its actor
            self.session = None


class SourceActor(_Actor):
    """The reference side: a framework model (or an ONNX SOURCE) fed under the ONNX model's
    input names, as local validate pairs them."""

    def __init__(self, source: str, options: Any, specs: list, input_map: dict | None, onnx_source: bool,
                 reference_providers: list[str] | None, threads: int, timeout: float | None) -> None:
        super().__init__()
        self.specs = specs
        self.session = None
        try:
            _threads_env(threads)
            from onnxkit.operations.validate_files import _load_reference_source, _paired

            if onnx_source:
                from onnxkit.foundation.onnx_io import load_onnx

                load_onnx(source, trust=options.trust, load_external=False)  # the safety checks first
                from onnxkit.runtime.providers import provider_options_for
                from onnxkit.runtime.ray_actors import actor_session
                from onnxkit.runtime.session import select_providers

                # OpenVINO is refused with --engine ray: the reference is an ONNX Runtime session.
                chosen = select_providers(reference_providers)
                self.session = actor_session(source, trust=options.trust, providers=chosen, threads=threads,
                                             timeout_s=timeout, provider_options=provider_options_for(chosen))
                self.predict, _ = _paired(self.session.run, self.session.input_specs, specs, input_map, False)
            else:
                src = _load_reference_source(source, options, specs)
                self.predict, _ = _paired(src.predict, src.input_specs, specs, input_map, src.framework == "torch")
        except BaseException as exc:  # noqa: BLE001 - reported by ready()
            self.error = error_reply(exc)

    def reference(self, shard: Any, start: int, stop: int, batch: int | None = None) -> tuple:
        """([reference outputs of each batch], names of inputs holding NaN/Inf) of rows [start,
        stop) of ``shard``, cut into batches of ``batch`` rows (a model without a batch
        dimension) or in one piece."""
        try:
            from onnxkit.foundation.data import check_feeds, non_finite_inputs
            from onnxkit.foundation.shards import read_shard

            feeds = read_shard(shard, self.specs, start, stop)
            outputs = []
            for where, piece in _batches(feeds, shard, start, stop, batch):
                check_feeds(piece, self.specs, where=where)
                outputs.append(self.predict(piece))
            return ("ok", (outputs, non_finite_inputs(feeds)))
        except BaseException as exc:  # noqa: BLE001 - a reply, see the module docstring
            return _where_reply(exc, shard, start, stop)


class OnnxCompareActor(_Actor):
    """The candidate side: one ONNX Runtime session, created once, and the comparison of its
    outputs with the reference outputs of the same rows."""

    def __init__(self, model: str, options: Any, specs: list, providers: list[str] | None, threads: int,
                 timeout: float | None, tolerance: Any, comparator_kwargs: dict) -> None:
        super().__init__()
        self.specs = specs
        self.tolerance = tolerance
        self.comparator_kwargs = comparator_kwargs
        self.session = None
        self.provider = ""
        try:
            from onnxkit.runtime.providers import provider_options_for
            from onnxkit.runtime.ray_actors import actor_session
            from onnxkit.runtime.session import select_providers

            chosen = select_providers(providers)
            self.session = actor_session(model, trust=options.trust, providers=chosen, threads=threads,
                                         timeout_s=timeout, provider_options=provider_options_for(chosen))
            self.provider = self.session.providers[0]
        except BaseException as exc:  # noqa: BLE001 - reported by ready()
            self.error = error_reply(exc)

    def ready(self) -> tuple:
        return self.error or ("ok", self.provider)

    def compare(self, shard: Any, start: int, stop: int, reference: tuple, batch: int | None = None) -> tuple:
        """A comparison state for rows [start, stop) of ``shard``, first row at its global row id."""
        if reference[0] != "ok":
            return reference  # the source side failed on these rows: pass its error on
        try:
            from onnxkit.foundation.compare_merge import MergeableComparator
            from onnxkit.foundation.data import check_feeds
            from onnxkit.foundation.shards import read_shard

            notes: list[str] = []
            feeds = read_shard(shard, self.specs, start, stop, notes)
            refs, nonfinite = reference[1]
            state = MergeableComparator(self.tolerance, first_row=shard.offset + start, **self.comparator_kwargs)
            # Batch by batch, as local validate compares them (its batch count, its shapes).
            for (where, piece), ref in zip(_batches(feeds, shard, start, stop, batch), refs, strict=True):
                check_feeds(piece, self.specs, where=where)
                state.add(ref, self.session.run(piece))
            return ("ok", (state, nonfinite, os.getpid(), notes))
        except BaseException as exc:  # noqa: BLE001 - a reply, see the module docstring
            return _where_reply(exc, shard, start, stop)
