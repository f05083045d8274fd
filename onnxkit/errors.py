"""The one exception hierarchy of onnxkit.

Every error a user can cause is a subclass of :class:`OnnxkitError`; it carries its
exit code and an optional hint. The CLI maps them to one line on stderr. Anything else
that escapes is a bug in onnxkit: exit 70, one line, the traceback written to a file.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

# The documented exit codes. This table is the single source: the README's table must
# equal EXIT_CODES row for row (tests/test_exit_code_table.py) and `onnxkit --help`
# lists EXIT_LABELS.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_CONVERSION = 4
EXIT_UNSAFE = 5
# sysexits' EX_SOFTWARE: not 1, which a CI reads as "the model differs".
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_CHECK_FAILED: "a check failed: out of tolerance, budget or gate missed, model invalid",
    EXIT_USAGE: "bad usage or bad input: bad flags or tolerances, malformed spec, missing/unreadable/truncated/not-ONNX "
                "model, data that does not fit the model, an output path that is the input or a directory",
    EXIT_ENVIRONMENT: "environment: an optional framework not installed (the message names the `pip install`), an "
                      "execution provider not available, an opset or IR newer than the installed runtime, disk full "
                      "or unwritable output folder",
    EXIT_CONVERSION: "a conversion, optimization or quantization failed inside the exporter/optimizer/quantizer",
    EXIT_UNSAFE: "refused for safety: a file that would run code when loaded, external data pointing outside the "
                 "model folder (`--trust` opts in)",
    EXIT_INTERNAL: "internal error: a bug in onnxkit; the message names the file its traceback was written to "
                   "(please report it)",
    EXIT_INTERRUPTED: "interrupted",
}

# The same codes in a few words, for `onnxkit --help`.
EXIT_LABELS: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_CHECK_FAILED: "check failed",
    EXIT_USAGE: "bad usage/input",
    EXIT_ENVIRONMENT: "environment",
    EXIT_CONVERSION: "conversion failed",
    EXIT_UNSAFE: "refused for safety",
    EXIT_INTERNAL: "internal error (a bug in onnxkit)",
    EXIT_INTERRUPTED: "interrupted",
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


# The options of the command the CLI is running; None outside the CLI.
_COMMAND_OPTIONS: ContextVar[frozenset[str] | None] = ContextVar("onnxkit_command_options", default=None)
OPTION_IN_TEXT = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def set_command_options(options: frozenset[str] | None):
    """Called by the CLI before a command runs; returns the token to reset it with."""
    return _COMMAND_OPTIONS.set(options)


def reset_command_options(token) -> None:
    _COMMAND_OPTIONS.reset(token)


def offered(option: str) -> bool:
    """Whether a hint may tell the user to pass ``option``: the running command has it.

    Code shared by several commands (a framework loader) asks before naming an option, so
    `validate` is never told to pass `export`'s --sample. Outside the CLI every option counts
    as offered: a library caller reads the hint as advice about the matching argument.
    """
    options = _COMMAND_OPTIONS.get()
    return options is None or option in options


def options_named(text: str) -> list[str]:
    """The ``--options`` a message or hint names."""
    return OPTION_IN_TEXT.findall(text or "")
