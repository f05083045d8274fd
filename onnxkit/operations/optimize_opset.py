"""What onnx's version converter means when it fails: its errors are C++ assertion texts
("BaseConverter.h:66: adapter_lookup: Assertion `false` failed: No Adapter From Version $13
for MatMul"), which say neither which way the conversion went nor what to do."""

from __future__ import annotations

import re

_NO_ADAPTER = re.compile(r"No Adapter (From|To) Version \$?(\d+) for (\w+)")
_ASSERTION = re.compile(r"^.*?Assertion `[^`]*` failed:\s*")


def opset_failure(exc: BaseException, current: int | None, target: int) -> tuple[str, str | None]:
    """(message, hint) for a failed conversion from ``current`` to ``target``."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    m = _NO_ADAPTER.search(text)
    if m:
        way, version, op = m.group(1), int(m.group(2)), m.group(3)
        down = current is not None and target < current
        if down and way == "From":
            return (f"cannot convert opset {current} down to {target}: onnx's version converter cannot take "
                    f"{op} below its opset-{version} form",
                    f"keep opset {current}, or --opset {version} or higher, or export from the source model "
                    f"again with --opset {target}")
        direction = "down" if down else "up"
        return (f"cannot convert opset {current} {direction} to {target}: onnx's version converter has no "
                f"adapter for {op} at opset {version}",
                "keep the model's opset, or export from the source model again with the opset you need")
    # Other converter failures: the assertion's text without its C++ file and line.
    return (f"opset conversion from {current} to {target} (onnx.version_converter) failed: "
            f"{_ASSERTION.sub('', text)[:300]}", None)
