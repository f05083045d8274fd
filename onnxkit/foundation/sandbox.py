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


def machine_memory_mb() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20)
    except (ValueError, OSError, AttributeError):
        return None


__all__ = ["run_isolated", "machine_memory_mb", "DEFAULT_TIMEOUT_S"]
