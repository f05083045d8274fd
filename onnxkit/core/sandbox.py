"""Crash containment: run a parser or runtime on an untrusted file in a child process.

A hostile or corrupt model can make native code (protobuf, ONNX Runtime, a framework's
C++ loader) crash with SIGSEGV, loop forever or allocate without bound. None of that can be
caught in-process, so :func:`run_isolated` runs the work in a ``spawn``-ed child (no
inherited threads or locks, a fresh interpreter) and turns every way it can end into an
onnxkit error with one line of text.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable
from typing import Any

from onnxkit.errors import InputError, Interrupted, OnnxkitError

DEFAULT_TIMEOUT_S = 300.0


def _limit_memory(memory_mb: int | None) -> None:
    if not memory_mb:
        return
    import resource

    limit = int(memory_mb) * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _child(conn, func: Callable[..., Any], args: tuple, memory_mb: int | None) -> None:
    # Ctrl-C is the parent's business: it kills the child. A child that also reacted to the
    # terminal's SIGINT would race the parent with a half-written reply.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _limit_memory(memory_mb)
        result = func(*args)
        reply: tuple = ("ok", result)
    except MemoryError:
        reply = ("memory", None)
    except OnnxkitError as exc:
        reply = ("onnxkit", (type(exc).__module__, type(exc).__qualname__, exc.message, exc.hint))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as text
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reply = ("error", (type(exc).__name__, text, traceback.format_exc()))
    try:
        conn.send(reply)
    except MemoryError:
        conn.send(("memory", None))
    except Exception as exc:  # the result itself could not be pickled
        conn.send(("error", (type(exc).__name__, f"result could not be sent back: {exc}", "")))
    finally:
        conn.close()


def _rebuild_error(module: str, qualname: str, message: str, hint: str | None) -> OnnxkitError:
    import importlib

    try:
        cls = getattr(importlib.import_module(module), qualname)
        if isinstance(cls, type) and issubclass(cls, OnnxkitError):
            try:
                err = cls(message, hint=hint)
            except TypeError:  # subclasses with their own constructor (MissingDependency, Interrupted)
                err = cls.__new__(cls)
                OnnxkitError.__init__(err, message, hint)
            return err
    except Exception:
        pass
    return InputError(message, hint=hint)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return str(code)


def _kill(proc) -> None:
    if proc.is_alive():
        proc.kill()
    proc.join(5)


def run_isolated(
    func: Callable[..., Any],
    *args: Any,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int | None = None,
    what: str = "model",
) -> Any:
    """Run ``func(*args)`` (a picklable top-level function) in a spawned child process and
    return its picklable result.

    A crash by signal, a timeout, a memory limit hit (``memory_mb`` sets RLIMIT_AS in the
    child) or an unexpected exception become :class:`InputError`; an onnxkit error raised in
    the child is raised again here with the same type and message; Ctrl-C kills the child
    and raises :class:`Interrupted`.
    """
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, func, args, memory_mb), daemon=True)
    try:
        proc.start()
    except OSError as exc:
        from onnxkit.errors import EnvironmentProblem

        raise EnvironmentProblem(f"cannot start a child process to load the {what}: {exc.strerror or exc}") from None
    send.close()
    reply = None
    try:
        # Read the reply before joining: a large result would otherwise fill the pipe and
        # block the child while the parent waits for it to exit.
        if recv.poll(timeout_s):
            try:
                reply = recv.recv()
            except (EOFError, OSError):
                reply = None  # the child died; its exit code says how
        else:
            _kill(proc)
            raise InputError(
                f"{what} took longer than {timeout_s:g} s to load/run and was stopped; "
                "the file may be hostile or far larger than expected",
            )
        proc.join(timeout_s if reply is None else 10)
        if proc.is_alive():
            _kill(proc)
    except KeyboardInterrupt:
        _kill(proc)
        raise Interrupted() from None
    finally:
        recv.close()
    if reply is None:
        code = proc.exitcode
        if code is not None and -code == signal.SIGKILL:
            raise InputError(
                f"{what} was killed (signal SIGKILL), most likely by the system for using too much memory; "
                "the file is corrupt, hostile or too large for this machine",
            )
        if code is not None and code < 0:
            raise InputError(
                f"{what} crashed its parser/runtime (signal {_signal_name(-code)}); the file is corrupt or hostile",
            )
        if code is None:
            raise InputError(f"{what}: the child process did not finish")
        raise InputError(f"{what}: the child process exited with code {code} without a result")
    kind, payload = reply
    if kind == "ok":
        return payload
    if kind == "memory":
        limit = f"more than {memory_mb} MB" if memory_mb else "more memory than is available"
        raise InputError(f"{what} needed {limit} to load/run; the file is corrupt, hostile or too large")
    if kind == "onnxkit":
        raise _rebuild_error(*payload) from None
    name, text, _tb = payload
    raise InputError(f"{what}: {name}: {text}" if text else f"{what}: {name}")


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


def machine_memory_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20)
    except (ValueError, OSError, AttributeError):
        return None


def probe_untrusted_model(
    model_path: str | os.PathLike[str],
    feeds: dict,
    *,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    custom_op_library: str | None = None,
    timeout_s: float | None = None,
) -> None:
    """Load and run an untrusted model once, on ``feeds``, in a contained worker (see
    :mod:`onnxkit.core.contained`): a crash, a hang past ``timeout_s`` or an allocation past
    the memory limit is one clean error instead of the end of onnxkit (or the machine)."""
    from onnxkit.core.contained import ContainedSession

    with ContainedSession(model_path, providers=providers, provider_options=provider_options,
                          custom_op_library=custom_op_library, timeout_s=timeout_s) as sess:
        sess.run(feeds)


# The inputs optimize/quantize/autotune generate to validate and time a model
# (optimize.validate_pair and latency_feeds): the rehearsal uses the very same ones.
_MEASURE_BATCHES = (1, 4)
_MEASURE_SEQS = (16, 32)


def probe_model_file(model_path: str | os.PathLike[str], model: object | None = None, *, data: object | None = None,
                     extra: list[dict] | None = None, timeout_s: float | None = None) -> None:
    """Rehearse an untrusted input model before optimize/quantize/autotune run it in-process:
    one contained worker runs it on the seeded random inputs those commands validate and time
    with (and on every batch of ``data``, an open DataSource, when they use one). ONNX Runtime
    on the same model and inputs takes the same paths, so a hang or an allocation bomb on
    those inputs is caught here. ``model``: the already-parsed graph, to avoid parsing again."""
    from onnxkit.core.contained import ContainedSession
    from onnxkit.core.data import random_feeds
    from onnxkit.core.spec import specs_from_onnx
    from onnxkit.core.validate import input_sets

    if model is None:
        import onnx

        model = onnx.load(os.fspath(model_path), load_external_data=False)
    specs = specs_from_onnx(model)
    with ContainedSession(model_path, timeout_s=timeout_s) as sess:
        sess.run(random_feeds(specs, batch=1, seq=32, seed=0), where="random inputs (batch 1, seq 32)")  # latency feeds
        for label, feeds in input_sets(specs, batch_sizes=_MEASURE_BATCHES, seq_lens=_MEASURE_SEQS):
            sess.run(feeds, where=label.replace("random batch=", "random inputs, batch "))
        for feeds in extra or []:
            sess.run(feeds, where="random timing inputs")
        if data is not None:
            if isinstance(data, (str, os.PathLike)):
                from onnxkit.core.data import open_data

                data = open_data(data, specs)
            start = 1
            for label, feeds in input_sets(specs, data=data, batch_sizes=_MEASURE_BATCHES):
                rows = next(iter(feeds.values())).shape[0] if feeds else 1
                sess.run(feeds, where=f"{label} (rows {start}-{start + rows - 1})")
                start += rows


__all__ = ["run_isolated", "run_onnx_isolated", "probe_untrusted_model", "probe_model_file", "machine_memory_mb",
           "DEFAULT_TIMEOUT_S"]
