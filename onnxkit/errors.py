"""The one exception hierarchy of onnxkit.

Every error a user can cause is a subclass of :class:`OnnxkitError`; it carries its
exit code and an optional hint. The CLI maps them to one line on stderr. Anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

# The documented exit codes. This table is the single source; the README and
# `docs/exit-codes` are written from it.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_CONVERSION = 4
EXIT_UNSAFE = 5
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_CHECK_FAILED: "a check failed (out of tolerance, budget or gate missed, model invalid)",
    EXIT_USAGE: "bad usage or bad input (flags, specs, missing/unreadable/not-ONNX model, data that does not fit)",
    EXIT_ENVIRONMENT: "environment (framework not installed, provider unavailable, runtime too old, disk full)",
    EXIT_CONVERSION: "a conversion, optimization or quantization failed inside the underlying tool",
    EXIT_UNSAFE: "refused for safety (a file that would run code, external data outside the model folder)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class OnnxkitError(Exception):
    """Base of all user-facing errors."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, always
        return self.message


class UsageError(OnnxkitError):
    """Bad flags, malformed specs, contradictory options."""

    exit_code = EXIT_USAGE


class InputError(OnnxkitError):
    """A file or data set that cannot be used: missing, truncated, wrong kind, wrong shape."""

    exit_code = EXIT_USAGE


class CheckFailed(OnnxkitError):
    """A check onnxkit ran did not pass (model invalid, tolerance, budget, gate)."""

    exit_code = EXIT_CHECK_FAILED


class EnvironmentProblem(OnnxkitError):
    """Something about the machine: a missing package, provider, disk space, permissions."""

    exit_code = EXIT_ENVIRONMENT


class MissingDependency(EnvironmentProblem):
    """An optional framework is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; run: pip install 'onnxkit[{extra}]'",
        )
        self.module = module
        self.extra = extra


class ConversionError(OnnxkitError):
    """The exporter, optimizer or quantizer underneath failed."""

    exit_code = EXIT_CONVERSION


class UnsafeInput(OnnxkitError):
    """Loading this file would run code or reach outside where it should; needs --trust."""

    exit_code = EXIT_UNSAFE


class Interrupted(OnnxkitError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self) -> None:
        super().__init__("interrupted")
