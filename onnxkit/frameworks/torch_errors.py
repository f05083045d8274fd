"""What the PyTorch exporters say when they fail, and keeping them quiet when they don't.

The exporters wrap the real cause in generic "step 1/3 failed" exceptions and colour their
messages; the one line onnxkit prints is the innermost cause, with the operator named.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator

from onnxkit.errors import ConversionError

log = logging.getLogger("onnxkit.frameworks.torch_fw")

# Loggers of the exporters that narrate every step; silenced unless onnxkit logs at DEBUG.
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir")

_OP_PATTERNS = (
    re.compile(r"operator '?([\w.]+::[\w.]+)'?"),
    re.compile(r"\b((?:aten|prims|prim|onnx|torchvision)(?:::|\.)[A-Za-z_]\w*(?:\.\w+)?)"),
    re.compile(r"torch\.ops\.(\w+\.\w+(?:\.\w+)?)"),
)


def _conversion_error(exc: Exception, exporter: str, opset: int | None) -> ConversionError:
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = _ANSI.sub("", " ".join(f"{type(x).__name__}: {x}" for x in chain))
    op = None
    for pat in _OP_PATTERNS:
        m = pat.search(text)
        if m:
            op = m.group(1)
            break
    # The innermost exception says what went wrong; the outer ones are the exporter's
    # generic "step 1/3 failed" wrappers.
    detail = f"{type(chain[-1]).__name__}: {_first_line(chain[-1])}".rstrip(".")
    msg = (
        f"torch: the {exporter} ONNX exporter failed"
        + (f" on {op}" if op else "")
        + f" at opset {opset if opset else 'default'}: {detail}. "
        + "Try another --opset, --exporter "
        + ("torchscript" if "dynamo" in exporter else "dynamo")
        + ", or register a custom op translation for the unsupported operator"
    )
    err = ConversionError(msg)
    err.detail = (f"{op}: " if op else "") + detail[:200]  # type: ignore[attr-defined]
    return err


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:400]
    return type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow the exporters' progress prints, warnings and logs unless onnxkit logs at
    DEBUG; what was printed is logged at DEBUG either way."""
    if logging.getLogger("onnxkit").isEnabledFor(logging.DEBUG):
        yield
        return
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    buf = io.StringIO()
    try:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        if buf.getvalue().strip():
            log.debug("exporter output:\n%s", buf.getvalue())
