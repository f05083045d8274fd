"""Contained sessions: an untrusted ONNX model runs in a long-lived worker process.

A hostile model can loop for as long as an input value asks (a ``Loop`` whose trip count
is data), allocate whatever a shape computed at run time says, or crash ONNX Runtime. A
single probe on one row cannot see what row 2 will do, so for untrusted models every batch
runs in a ``spawn``-ed worker that builds the session once (under ``session_timeout_s``)
and then serves batches over a pipe, each under ``timeout_s`` and a memory limit. A batch
that hangs, blows the memory limit or crashes the runtime kills the worker and becomes one
:class:`InputError` naming the batch; Ctrl-C kills it and raises :class:`Interrupted`.

:class:`ContainedSession` answers like :class:`onnxkit.runtime.session.OnnxSession`
(``run``, ``providers``, ``input_specs``, ``output_names``, ``path``, ``node_providers``),
so callers use :func:`open_session` and do not care which one they got.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.sandbox import (
    DEFAULT_TIMEOUT_S, _limit_memory, _rebuild_error, _signal_name, machine_memory_mb, run_isolated,
)
from onnxkit.errors import EnvironmentProblem, InputError, Interrupted, OnnxkitError

log = logging.getLogger(__name__)

DEFAULT_BATCH_TIMEOUT_S = 30.0
DEFAULT_SESSION_TIMEOUT_S = 300.0
# TensorRT builds an engine per model (and per shape profile) when the session is made; a
# large model's first build takes tens of minutes, later runs read the engine cache.
ENGINE_BUILD_TIMEOUT_S = 1800.0
ENGINE_BUILDERS = ("TensorrtExecutionProvider", "MIGraphXExecutionProvider", "OpenVINOExecutionProvider")
# Providers whose start-up reserves a large virtual address range (CUDA maps the device's
# memory into the process): RLIMIT_AS makes them fail to start, so the worker's resident
# size is watched from outside instead.
_CPU_SIDE = ("CPUExecutionProvider", "XnnpackExecutionProvider")
_WATCH_EVERY_S = 0.05


def default_memory_mb() -> int | None:
    """Leave a fifth of the machine to everything else."""
    total = machine_memory_mb()
    return int(total * 0.8) if total else None


def session_timeout_for(providers: list[str] | None) -> float:
    return ENGINE_BUILD_TIMEOUT_S if any(p in ENGINE_BUILDERS for p in providers or []) else DEFAULT_SESSION_TIMEOUT_S


def _uses_device(providers: list[str] | None) -> bool:
    return any(p not in _CPU_SIDE for p in providers or [])


# ---------------------------------------------------------------- the worker (child side)

def _error_reply(exc: BaseException) -> tuple:
    if isinstance(exc, MemoryError):
        return ("memory", None)
    if isinstance(exc, OnnxkitError):
        cause = str(exc.__cause__ or "").lower()
        # ORT reports an allocation refused by RLIMIT_AS as a run failure ("bad_alloc",
        # "Failed to allocate memory"); that is the memory limit, not a bad input.
        if "alloc" in cause or "out of memory" in cause:
            return ("memory", None)
        return ("onnxkit", (type(exc).__module__, type(exc).__qualname__, exc.message, exc.hint))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ("error", (type(exc).__name__, text, traceback.format_exc()))


def _send(conn, reply: tuple) -> None:
    try:
        conn.send(reply)
    except MemoryError:
        conn.send(("memory", None))
    except (BrokenPipeError, EOFError):
        raise
    except Exception as exc:  # the result itself could not be pickled
        conn.send(("error", (type(exc).__name__, f"result could not be sent back: {exc}", "")))


def _silence_stderr() -> None:
    """ONNX Runtime logs a failed kernel (a refused allocation) straight to fd 2; the parent
    turns every failure into one ``Error:`` line, so without -v that log would be noise."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _meta(sess) -> dict:
    """What the parent needs to know of the worker's session; the thread count and spin policy
    are read back from ONNX Runtime, so a caller sees what the session runs with, not what it asked."""
    so = sess.session.get_session_options()
    try:
        spin = so.get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: ONNX Runtime's default, which spins
        spin = "1"
    return {"providers": list(sess.providers), "input_specs": sess.input_specs, "output_names": sess.output_names,
            "threads": so.intra_op_num_threads or None, "spinning": spin != "0"}


def _timed_run(sess, feeds: dict, outputs: list[str] | None) -> tuple[dict, tuple[float, float]]:
    """Timed here, around ONNX Runtime's run alone, as the parent times an ONNX model: the
    parent's clocks would count the pipe round trip as the model's work and would not see this
    process's CPU time at all, and the wrapper's error handling and output conversion (about a
    microsecond) would read as a speed-up of the same graph over itself."""
    from onnxkit.runtime.session import _as_array

    names = outputs or sess.output_names
    c0, t0 = time.process_time_ns(), time.perf_counter_ns()
    try:
        res = sess.session.run(names, feeds)
    except Exception as exc:  # noqa: BLE001 - ORT's own error types, worded as the in-process wrapper does
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ONNX Runtime could not run the model on these inputs: {msg}") from exc
    took = ((time.perf_counter_ns() - t0) / 1e6, (time.process_time_ns() - c0) / 1e6)
    return {name: _as_array(value) for name, value in zip(names, res)}, took


def _worker(conn, model_path: str, session_kwargs: dict, memory_mb: int | None, verbose: bool) -> None:
    # Ctrl-C is the parent's business: it kills the worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not verbose:
        _silence_stderr()
    try:
        _limit_memory(memory_mb)
        from onnxkit.runtime.session import make_session

        sess = make_session(model_path, **session_kwargs)
        _send(conn, ("ready", _meta(sess)))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as text
        _send(conn, _error_reply(exc))
        conn.close()
        return
    first = True
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            if sess is not None:
                sess.node_providers()  # ends ORT profiling and removes its file
            conn.close()
            return
        try:
            if isinstance(msg[0], str):  # ("configure", changed session options): a new session
                if sess is not None:
                    sess.node_providers()
                # The old session goes first: two of a large model need not fit the memory limit.
                sess = None
                session_kwargs = {**session_kwargs, **msg[1]}
                sess = make_session(model_path, **session_kwargs)
                first = True
                reply: tuple = ("ready", _meta(sess))
            else:
                feeds, outputs = msg
                out, took = _timed_run(sess, feeds, outputs)
                nodes = sess.node_providers() if first else None
                first = False
                reply = ("ok", (out, nodes, took))
        except BaseException as exc:  # noqa: BLE001
            reply = _error_reply(exc)
        try:
            _send(conn, reply)
        except (BrokenPipeError, EOFError, OSError):
            return


# ---------------------------------------------------------------- the parent side

def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _stop(proc, conn) -> None:
    if proc.is_alive():
        proc.kill()
    proc.join(5)
    try:
        conn.close()
    except OSError:
        pass


class _Dead(Exception):
    """The worker ended without answering; ``why`` says how."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ContainedSession:
    """An ONNX Runtime session living in a worker process; see the module's docstring."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        providers: list[str] | None = None,
        provider_options: dict[str, dict[str, str]] | None = None,
        threads: int | None = None,
        custom_op_library: str | None = None,
        profile: bool = False,
        spinning: bool = True,
        timeout_s: float | None = None,
        session_timeout_s: float | None = None,
        memory_mb: int | None = -1,
        what: str | None = None,
    ) -> None:
        self.path = Path(model)
        self.what = what or f"model {self.path.name}"
        self.timeout_s = DEFAULT_BATCH_TIMEOUT_S if timeout_s is None else float(timeout_s)
        self.session_timeout_s = session_timeout_for(providers) if session_timeout_s is None else float(session_timeout_s)
        if not all(math.isfinite(t) and t > 0 for t in (self.timeout_s, self.session_timeout_s)):
            from onnxkit.errors import UsageError

            raise UsageError("--timeout must be a positive number of seconds")
        self.memory_mb = default_memory_mb() if memory_mb == -1 else memory_mb
        self.watch_rss = bool(self.memory_mb) and _uses_device(providers)
        self.options: dict = {}
        self.batches = 0
        self.rows = 0
        # (wall ms, CPU ms) of the last run, measured in the worker around the session run alone
        self.last_call_ms: tuple[float, float] | None = None
        self._nodes: dict[str, int] | None = None
        self._failed: InputError | None = None
        kwargs = {"providers": providers, "provider_options": provider_options, "threads": threads,
                  "custom_op_library": custom_op_library, "profile": profile, "spinning": spinning}
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        rlimit = None if self.watch_rss else self.memory_mb
        self._proc = ctx.Process(target=_worker, args=(child, str(self.path), kwargs, rlimit, log.isEnabledFor(logging.DEBUG)),
                                 daemon=True)
        try:
            self._proc.start()
        except OSError as exc:
            raise EnvironmentProblem(f"cannot start a worker process for {self.what}: {exc.strerror or exc}") from None
        finally:
            child.close()
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._conn)
        try:
            meta = self._answer(self.session_timeout_s, "building its ONNX Runtime session", "load")
        except BaseException:
            self.close()
            raise
        self._take(meta)

    def _take(self, meta: dict) -> None:
        self.providers: list[str] = meta["providers"]
        self.input_specs = meta["input_specs"]
        self.output_names: list[str] = meta["output_names"]
        self.threads, self.spinning = meta["threads"], meta["spinning"]  # as the worker's session reports them

    # -- the OnnxSession interface

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None, *,
            where: str | None = None) -> dict[str, Any]:
        """``where`` names the inputs in errors; by default, the batch and rows counted over
        this session's runs (the rows of the user's data, when that is all it is given)."""
        if self._failed is not None:
            raise self._failed
        rows = _rows_of(feeds)
        self.batches += 1
        first_row = self.rows + 1
        self.rows += rows
        span = f"rows {first_row}-{self.rows}" if rows > 1 else f"row {first_row}"
        doing = where or f"batch {self.batches} ({span})"
        try:
            self._conn.send((feeds, outputs))
        except (BrokenPipeError, EOFError, OSError):
            self._fail(self._death(doing))
        except KeyboardInterrupt:
            # The worker is busy with the request and would never read a polite stop.
            self._finalizer()
            raise Interrupted() from None
        out, nodes, self.last_call_ms = self._answer(self.timeout_s, doing, "run")
        if nodes is not None and self._nodes is None:
            self._nodes = nodes
        return out

    def configure(self, *, threads: int | None, spinning: bool) -> None:
        """Rebuild the worker's session with this intra-op thread count and spin policy (a
        benchmark sets both sides alike); the worker process and its limits stay."""
        if self._failed is not None:
            raise self._failed
        doing = f"rebuilding its session at {threads or 'the default'} intra-op threads"
        try:
            self._conn.send(("configure", {"threads": threads, "spinning": spinning}))
        except (BrokenPipeError, EOFError, OSError):
            self._fail(self._death(doing))
        except KeyboardInterrupt:
            # The worker is busy with the request and would never read a polite stop.
            self._finalizer()
            raise Interrupted() from None
        try:
            meta = self._answer(self.session_timeout_s, doing, "load")
        except OnnxkitError as err:  # the worker has no session left to run
            self._failed = err if isinstance(err, InputError) else InputError(err.message, hint=err.hint)
            self._finalizer()
            raise
        self._take(meta)

    def node_providers(self) -> dict[str, int] | None:
        return self._nodes

    def close(self) -> None:
        """Stop the worker (politely if it is idle, else by force)."""
        if not self._finalizer.alive:
            return
        if self._failed is None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except (BrokenPipeError, EOFError, OSError):
                pass
        self._finalizer()

    def __enter__(self) -> ContainedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting for the worker

    def _answer(self, limit_s: float, doing: str, verb: str) -> Any:
        """Wait for the worker's reply to ``doing``, at most ``limit_s`` seconds."""
        deadline = time.monotonic() + limit_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(self._too_slow(doing, limit_s, verb))
                if self._conn.poll(min(left, _WATCH_EVERY_S) if self.watch_rss else left):
                    try:
                        kind, payload = self._conn.recv()
                    except (EOFError, OSError):
                        self._fail(self._death(doing))
                    break
                if self.watch_rss:
                    rss = _rss_mb(self._proc.pid)
                    if rss is not None and rss > self.memory_mb:
                        self._fail(InputError(
                            f"{self.what} used more than {self.memory_mb} MB of memory on {doing} and was stopped; "
                            "the file is corrupt, hostile or too large for this machine"))
        except KeyboardInterrupt:
            # The worker is busy with the request and would never read a polite stop.
            self._finalizer()
            raise Interrupted() from None
        if kind in ("ok", "ready"):
            return payload
        if kind == "memory":
            limit = f"more than {self.memory_mb} MB" if self.memory_mb else "more memory than is available"
            self._fail(InputError(f"{self.what} needed {limit} on {doing} and was stopped; "
                                  "the file is corrupt, hostile or too large for this machine"))
        if kind == "onnxkit":
            err = _rebuild_error(*payload)
            if verb == "load":
                raise err from None
            raise type(err)(f"{err.message} ({doing})", hint=err.hint) if type(err) is InputError else err
        name, text, tb = payload
        log.debug("worker of %s failed:\n%s", self.what, tb)
        raise InputError(f"{self.what}: {name}: {text} ({doing})" if text else f"{self.what}: {name} ({doing})")

    def _too_slow(self, doing: str, limit_s: float, verb: str) -> InputError:
        flag = "--timeout" if verb == "run" else "the session-build limit of"
        return InputError(
            f"{self.what} did not finish {doing} within {flag} {limit_s:g} s and was stopped; the model may loop "
            "on these inputs (hostile, or far slower than expected)",
            hint="raise --timeout if the model is just slow, or pass --trust for a file you vouch for",
        )

    def _death(self, doing: str) -> InputError:
        self._proc.join(5)
        code = self._proc.exitcode
        if code is not None and -code == signal.SIGKILL:
            return InputError(f"{self.what} was killed (signal SIGKILL) on {doing}, most likely by the system for "
                              "using too much memory; the file is corrupt, hostile or too large for this machine")
        if code is not None and code < 0:
            return InputError(f"{self.what} crashed its runtime (signal {_signal_name(-code)}) on {doing}; "
                              "the file is corrupt or hostile")
        return InputError(f"{self.what}: its worker process ended (exit code {code}) on {doing} without a result")

    def _fail(self, err: InputError):
        """The worker cannot be trusted to continue: stop it and fail this and every later run."""
        self._failed = err
        self._finalizer()
        raise err from None


def _rows_of(feeds: dict[str, Any]) -> int:
    for v in feeds.values():
        shape = getattr(v, "shape", None)
        if shape:
            return int(shape[0])
    return 1


def open_session(
    model: str | os.PathLike[str],
    *,
    trust: bool,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    threads: int | None = None,
    custom_op_library: str | None = None,
    profile: bool = False,
    spinning: bool = True,
    timeout_s: float | None = None,
    session_timeout_s: float | None = None,
):
    """An in-process :class:`OnnxSession` for a trusted model (``--trust``: the fast path), a
    :class:`ContainedSession` for any other. Both have ``run`` and ``close``."""
    if trust:
        from onnxkit.runtime.session import make_session

        return make_session(model, providers=providers, provider_options=provider_options, threads=threads,
                            custom_op_library=custom_op_library, profile=profile, spinning=spinning)
    return ContainedSession(model, providers=providers, provider_options=provider_options, threads=threads,
                            custom_op_library=custom_op_library, profile=profile, spinning=spinning,
                            timeout_s=timeout_s, session_timeout_s=session_timeout_s)


def rehearse(
    model: str | os.PathLike[str],
    feeds_by_batch: dict[int, dict[str, np.ndarray]],
    prepare: Any,
    *,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    threads: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Run an untrusted model once, contained, on exactly the inputs a timing loop is about to
    use in-process (``prepare(feeds, input_specs, where)`` adapts them as the loop will).

    Timing cannot go through a pipe without measuring the pipe, so ``bench`` times in-process;
    this rehearsal is what makes that safe: ONNX Runtime on the same model, providers and
    inputs takes the same paths (the same loop counts, the same allocations), so a model that
    hangs or blows memory on those inputs fails here, cleanly, first."""
    with ContainedSession(model, providers=providers, provider_options=provider_options, threads=threads,
                          timeout_s=timeout_s) as sess:
        for batch in sorted(feeds_by_batch):
            sess.run(prepare(feeds_by_batch[batch], sess.input_specs, f"inputs for {Path(model).name}"),
                     where=f"the timing inputs of batch size {batch}")


__all__ = ["ContainedSession", "open_session", "rehearse", "DEFAULT_BATCH_TIMEOUT_S", "DEFAULT_SESSION_TIMEOUT_S",
           "ENGINE_BUILD_TIMEOUT_S", "default_memory_mb", "session_timeout_for"]


def _run_onnx_child(
    model_path: str, feeds: dict, providers: list[str] | None, custom_op_library: str | None,
) -> dict:
    from onnxkit.runtime.session import make_session

    sess = make_session(model_path, providers=providers, custom_op_library=custom_op_library)
    return sess.run(feeds)


def run_onnx_isolated(
    model_path: str | os.PathLike[str],
    feeds: dict,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int | None = None,
    *,
    providers: list[str] | None = None,
    custom_op_library: str | None = None,
) -> dict:
    """Create an ONNX Runtime session for ``model_path`` and run it on ``feeds`` in a child
    process; returns ``{output name: array}``. For models onnxkit did not produce itself."""
    return run_isolated(
        _run_onnx_child, str(model_path), feeds, providers, custom_op_library,
        timeout_s=timeout_s, memory_mb=memory_mb, what=f"model {os.fspath(model_path)}",
    )
