"""Top-level functions for the sandbox tests: a spawned child must be able to import them."""

from __future__ import annotations

import os
import signal
import time


def add(a: int, b: int) -> int:
    return a + b


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)


def sleep_forever() -> None:
    time.sleep(600)


def allocate(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    return len(block)


def raise_input_error(msg: str) -> None:
    from onnxkit.errors import InputError

    raise InputError(msg, hint="a hint")


def raise_unsafe(msg: str) -> None:
    from onnxkit.errors import UnsafeInput

    raise UnsafeInput(msg)


def raise_value_error() -> None:
    raise ValueError("bad thing happened\nsecond line")


def write_marker(path: str) -> None:
    with open(path, "w") as fh:
        fh.write("ran")


def sleep_with_pidfile(path: str) -> None:
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(600)
