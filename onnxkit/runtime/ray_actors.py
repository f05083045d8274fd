"""The actors ``--engine ray`` runs: plain classes, wrapped with ``ray.remote`` by
:mod:`onnxkit.runtime.ray_cluster` (this module does not import ray).

Protocol shared with :class:`onnxkit.runtime.ray_cluster.ActorPool`: the constructor never
raises (an actor whose constructor raises is reported by Ray as dead, which would look like a
killed worker and be retried); ``ready()`` returns its outcome as a reply, and every task
method returns ``("ok", payload)`` or an error reply (``("onnxkit", (module, class, message,
hint))`` for a user-facing error, ``("error", (type, text, traceback))`` for a bug).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import time
import traceback
from typing import Any

import numpy as np

from onnxkit.errors import InputError, OnnxkitError


def error_reply(exc: BaseException) -> tuple:
    if isinstance(exc, OnnxkitError):
        return ("onnxkit", (type(exc).__module__, type(exc).__qualname__, exc.message, exc.hint))
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupted", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ("error", (type(exc).__name__, text, traceback.format_exc()))


def actor_memory_mb() -> int | None:
    """This actor's share of the memory limit a local run gives its contained worker: the
    node's limit times the actor's share of the node's CPUs. Every actor of a node gets a
    contained worker, so each taking the whole limit would let them reach several times the
    machine together."""
    from onnxkit.runtime.contained import default_memory_mb

    total = default_memory_mb()
    if not total:
        return total
    try:
        import ray

        ctx = ray.get_runtime_context()
        mine = float(ctx.get_assigned_resources().get("CPU", 0.0))
        node = ctx.get_node_id()
        cpus = next((float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("NodeID") == node), 0.0)
    except Exception:  # noqa: BLE001 - not inside a Ray actor (tests, a plain call): one process, the whole limit
        return total
    if mine <= 0 or cpus <= 0:
        return total
    return max(1, int(total * min(1.0, mine / cpus)))


def actor_session(model: str, *, trust: bool, providers: list[str], threads: int, timeout_s: float | None,
                  provider_options: dict | None = None, spinning: bool = True):
    """The ONNX Runtime session of an actor: in-process with ``--trust``, else in a contained
    worker under the batch time limit and this actor's share of the memory limit."""
    from onnxkit.runtime.contained import ContainedSession, open_session

    if trust:
        return open_session(model, trust=True, providers=providers, provider_options=provider_options,
                            threads=threads, spinning=spinning)
    return ContainedSession(model, providers=providers, provider_options=provider_options, threads=threads,
                            spinning=spinning, timeout_s=timeout_s, memory_mb=actor_memory_mb())


class OnnxScorer:
    """One ONNX Runtime session, made once, scoring row ranges of data shards.

    An untrusted model keeps running in onnxkit's contained worker (a child process of the
    actor: every batch under ``timeout_s`` and the memory limit, exactly as a local run); the
    actor itself only reads shards and moves arrays. ``--trust`` runs the session in the actor."""

    def __init__(self, model: str, *, trust: bool, specs: list, threads: int, timeout_s: float | None,
                 batch_size: int) -> None:
        self.model = model
        self.specs = specs
        self.batch_size = batch_size
        self.session: Any = None
        self._ready: tuple = ("ok", None)
        try:
            # The shard readers' imports belong to start-up, not to the first task's reading time
            # (absent, they are reported by the first read that needs them).
            for reader in ("pandas", "pyarrow.parquet"):
                with contextlib.suppress(ImportError):
                    importlib.import_module(reader)

            # Spinning threads would burn the cores the other actors were given.
            self.session = actor_session(model, trust=trust, providers=["CPUExecutionProvider"], threads=threads,
                                         spinning=False, timeout_s=timeout_s)
        except BaseException as exc:  # noqa: BLE001 - reported through ready()
            self._ready = error_reply(exc)

    def ready(self) -> tuple:
        return self._ready

    def where(self) -> tuple[int, str]:
        """(pid, host) of the actor process, for per-worker counts and for fault tests."""
        return os.getpid(), socket.gethostname()

    def output_names(self) -> list[str]:
        return list(self.session.output_names)

    def score(self, shard, start: int, stop: int) -> tuple:
        """Rows ``[start, stop)`` of ``shard``: ``{"outputs": {name: array}, "rows", "read_s", "infer_s", "notes"}``."""
        try:
            return ("ok", self._score(shard, start, stop))
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the driver as a reply
            return error_reply(exc)

    def _score(self, shard, start: int, stop: int) -> dict:
        from onnxkit.foundation.data import check_feeds
        from onnxkit.foundation.shards import read_shard

        t0 = time.perf_counter()
        notes: list[str] = []
        feeds = read_shard(shard, self.specs, start, stop, notes)
        read_s = time.perf_counter() - t0
        parts: dict[str, list[np.ndarray]] = {}
        infer_s = 0.0
        rows = stop - start
        for a in range(0, rows, self.batch_size):
            b = min(a + self.batch_size, rows)
            batch = {k: v[a:b] for k, v in feeds.items()}
            span = f"rows {a + start}-{b + start - 1} of data shard {shard.path}"
            check_feeds(batch, self.specs, where=span)
            t1 = time.perf_counter()
            try:
                outs = (self.session.run(batch, where=span) if hasattr(self.session, "timeout_s")
                        else self.session.run(batch))
            except InputError as exc:
                raise InputError(exc.message if str(shard.path) in exc.message else f"{exc.message} ({span})",
                                 hint=exc.hint) from None
            infer_s += time.perf_counter() - t1
            for name in self.session.output_names:
                value = outs[name]
                if not isinstance(value, np.ndarray):
                    raise InputError(f"output {name!r} is a {type(value).__name__} (a sequence/map such as ZipMap), "
                                     "which cannot be written to Parquet; re-export without ZipMap")
                if value.ndim == 0 or value.shape[0] != b - a:
                    raise InputError(
                        f"output {name!r} has shape {list(value.shape)} for {b - a} input rows ({span}): not one row "
                        "per input row, so it cannot be given row ids; run it with --engine local")
                parts.setdefault(name, []).append(value)
        outputs = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
        return {"outputs": outputs, "rows": rows, "read_s": read_s, "infer_s": infer_s, "notes": notes}

    def close(self) -> None:
        """Stop the contained worker now (it also ends by itself when the actor dies: its pipe closes)."""
        if self.session is not None:
            self.session.close()
        return None


__all__ = ["OnnxScorer", "actor_memory_mb", "actor_session", "error_reply"]
