"""What every command shares: options declared once, error mapping, rendering, exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from onnxkit.results import Result


@dataclass
class _State:
    verbose: bool = False
    quiet: bool = False
    json: bool = False


STATE = _State()

# Options shared by the commands, declared once.
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs and tracebacks.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and one line: the verdict with its key number.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (tables go to stderr).")]
Trust = Annotated[bool, typer.Option("--trust", help="Allow formats that run code when loaded (pickle, joblib, Keras Lambda); only for files you vouch for.")]
Inputs = Annotated[list[str] | None, typer.Option("--input", "-i", help="Input spec NAME:[d0,d1,...]:DTYPE; a named dim is dynamic. Repeatable.")]
Tol = Annotated[list[str] | None, typer.Option("--tol", help="Absolute tolerance, or OUTPUT=ATOL[:RTOL] for one output (glob). Repeatable.")]
Rtol = Annotated[float | None, typer.Option("--rtol", help="Relative tolerance (allclose semantics: |a-b| <= atol + rtol*|b|).")]
Preset = Annotated[str | None, typer.Option("--preset-tol", help="Tolerance preset: fp32, fp16, int8, int4.")]
def _check_seed(value: int) -> int:
    # NumPy's generators refuse a negative seed with a ValueError deep in the run (exit 70);
    # checked at parse time so no work starts first.
    if value < 0:
        from onnxkit.errors import UsageError

        raise UsageError(f"--seed {value} must be a non-negative integer")
    return value


Seed = Annotated[int, typer.Option("--seed", callback=_check_seed, help="Seed for random inputs (a non-negative integer).")]
CustomOps = Annotated[Path | None, typer.Option("--custom-op-library", help="Shared library implementing the model's custom-domain operators (registered with ONNX Runtime).")]
Providers = Annotated[list[str] | None, typer.Option("--provider", "-p", help="Execution provider (cpu, cuda, tensorrt, openvino, dml, coreml, rocm); repeat for a priority order.")]


def setup(json_out: bool = False, verbose: bool = False, quiet: bool = False) -> None:
    """Called first by every command with its own copies of the shared flags."""
    STATE.json = STATE.json or json_out
    STATE.verbose = STATE.verbose or verbose
    STATE.quiet = STATE.quiet or quiet
    configure_logging()


def configure_logging() -> None:
    level = logging.DEBUG if STATE.verbose else (logging.ERROR if STATE.quiet else logging.WARNING)
    root = logging.getLogger("onnxkit")
    if not any(getattr(h, "_onnxkit", False) for h in root.handlers):
        from rich.logging import RichHandler
        from rich.console import Console

        handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False, markup=False)
        handler._onnxkit = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)
    # Quiet the chatty libraries underneath unless asked for detail.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if STATE.verbose else "3")
    for noisy in ("tensorflow", "tf2onnx", "absl", "onnxruntime", "torch.onnx", "onnxscript", "onnx_ir", "skl2onnx"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if STATE.verbose else logging.ERROR)


def emit(result: Result) -> None:
    """Render ``result`` and end the command with its exit code."""
    from onnxkit.reports.render import render

    render(result, json_mode=STATE.json, quiet=STATE.quiet)
    raise typer.Exit(result.exit_code)


def _print_error(message: str, code: int, hint: str | None, kind: str) -> None:
    from onnxkit.results import shown

    # One line whatever the message quotes (a model's names may hold line breaks).
    line = f"Error: {shown(message)}"
    if hint:
        line += f" (hint: {shown(hint)})"
    sys.stderr.write(line + "\n")
    if STATE.json:
        doc: dict[str, Any] = {"error": message, "kind": kind, "exit_code": code}
        if hint:
            doc["hint"] = hint
        sys.stdout.write(json.dumps(doc) + "\n")


def command_options(root: Any, argv: list[str]) -> frozenset[str] | None:
    """Every option spelling of the subcommand ``argv`` names (None when it names none)."""
    commands = getattr(root, "commands", None) or {}
    name = next((a for a in argv if not a.startswith("-")), None)
    sub = commands.get(name) if name else None
    if sub is None:
        return None
    spellings: set[str] = set()
    for param in sub.params:
        if getattr(param, "param_type_name", "") == "option":
            spellings.update(param.opts)
            spellings.update(param.secondary_opts)
    return frozenset(spellings)


def _checked_hint(hint: str | None) -> str | None:
    # Better less hint than one naming an option this command does not have: shared code
    # should ask errors.offered() first; this drops the "; "-separated clauses that did not.
    from onnxkit.errors import offered, options_named

    if not hint:
        return hint
    kept = [c for c in hint.split("; ") if all(offered(o) for o in options_named(c))]
    if len(kept) != len(hint.split("; ")):
        logging.getLogger("onnxkit").debug("hint trimmed, it named options this command lacks: %s", hint)
    return "; ".join(kept) or None


def _crash_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "onnxkit" / "crashes"


def write_crash_report(exc: BaseException, argv: list[str]) -> Path | None:
    """Write ``exc``'s traceback where the user can attach it to a bug report.

    The user's cache folder first, the temp folder if that is not writable; written to a
    temporary name and renamed, so a half-written report never carries the final name.
    """
    import tempfile
    import time

    from onnxkit import __version__

    text = (
        f"onnxkit {__version__}, python {sys.version.split()[0]}, {sys.platform}\n"
        f"argv: {argv!r}\n\n" + "".join(traceback.format_exception(exc))
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (_crash_dir(), Path(tempfile.gettempdir()) / "onnxkit-crashes"):
        tmp = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".crash-", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            final = folder / f"crash-{stamp}-{os.getpid()}.txt"
            os.replace(tmp, final)
            return final
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            continue
    return None


def _internal_error(exc: BaseException, argv: list[str]) -> int:
    from onnxkit.errors import EXIT_INTERNAL

    where = write_crash_report(exc, argv)
    if STATE.verbose:
        traceback.print_exception(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > 200:  # the whole of it is in the file
        first = first[:200] + "..."
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    message = f"internal error in onnxkit (a bug): {what}; " + (
        f"traceback written to {where}" if where else "the traceback could not be written (rerun with -v to see it)"
    )
    _print_error(message, EXIT_INTERNAL, None, "InternalError")
    return EXIT_INTERNAL


def invoke(app: typer.Typer, argv: list[str], prog: str) -> int:
    """Run the app; map every onnxkit error to one line on stderr and its exit code.

    Anything else that escapes is a bug in onnxkit: exit 70, not 1, which CI reads as
    "the model differs".
    """
    from typer import Abort, TyperException
    from typer.main import get_command

    from onnxkit.errors import EXIT_INTERRUPTED, EXIT_USAGE, OnnxkitError, reset_command_options, set_command_options

    # --json/-v are per command; know them before parsing so early errors honour them.
    STATE.json = STATE.json or "--json" in argv
    STATE.verbose = STATE.verbose or "-v" in argv or "--verbose" in argv or bool(os.environ.get("ONNXKIT_DEBUG"))
    command = get_command(app)
    token = set_command_options(command_options(command, argv))
    try:
        rv = command.main(args=argv, prog_name=prog, standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130)
            sys.stderr.write("Error: interrupted\n")
        return code
    except OnnxkitError as exc:
        if STATE.verbose:
            traceback.print_exception(exc)
        _print_error(exc.message, exc.exit_code, _checked_hint(exc.hint), type(exc).__name__)
        return exc.exit_code
    except TyperException as exc:  # bad flags: Typer's own Click exceptions derive from it
        show = getattr(exc, "show", None)
        if STATE.json or show is None:
            _print_error(exc.format_message(), EXIT_USAGE, None, "UsageError")
        else:
            show()
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except (Abort, KeyboardInterrupt):
        sys.stderr.write("Error: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:
        return _internal_error(exc, argv)
    finally:
        reset_command_options(token)
