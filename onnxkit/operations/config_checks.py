"""Checks that a pipeline config means something: thresholds that can fail, batch sizes that
can fit, and a file the TOML parser can read in bounded time.

A gate that can never fail (``min_cosine = -5``) passes every build, which is a false PASSED
waiting to happen; one that can never pass fails every build for no reason. Both are config
mistakes and are refused (exit 2) with the key and why.
"""

from __future__ import annotations

import numpy as np

# No difference between two float32 values reaches this; an error bound at or above it
# cannot fail on the float32 outputs every exporter produces.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# A config is a page of text. The bounds below keep the TOML parser's cost small: dotted keys
# and table headers cost it quadratic time in their length (200,000 parts: minutes), and
# arrays or inline tables nested past the recursion limit raise RecursionError.
MAX_CONFIG_BYTES = 1 << 20
MAX_LINE_CHARS = 10_000


def text_problem(text: str) -> tuple[int | None, str] | None:
    """(line, why) when the config text is too large for a config, else None."""
    if len(text) > MAX_CONFIG_BYTES:
        return None, f"is {len(text)} characters long; a pipeline config is at most {MAX_CONFIG_BYTES} (1 MiB)"
    start = 0
    line = 1
    while True:
        end = text.find("\n", start)
        stop = len(text) if end < 0 else end
        if stop - start > MAX_LINE_CHARS:
            return line, f"line {line} is {stop - start} characters long; a config line is at most {MAX_LINE_CHARS}"
        if end < 0:
            return None
        start, line = end + 1, line + 1


def gate_problem(name: str, value: float) -> str | None:
    """Why gate ``name`` at ``value`` can never fail (or never pass), else None."""
    if name == "min_cosine":
        return cosine_problem(name, value)
    if name.startswith("max_error."):
        if value >= FLOAT32_MAX:
            return (f"{name} = {value:g} can never fail: no difference between float32 outputs reaches it "
                    f"(the largest float32 is {FLOAT32_MAX:.4g})")
        return None
    if name == "min_speedup" and value <= 0:
        return f"min_speedup = {value:g} can never fail: every measured speedup is above 0"
    if name in ("max_size_mb", "max_latency_ms") and value <= 0:
        what = "model file" if name == "max_size_mb" else "latency"
        return f"{name} = {value:g} can never pass: every {what} is above 0"
    return None


def cosine_problem(dotted: str, value: float) -> str | None:
    if value <= -1:
        return f"{dotted} = {value:g} can never fail: a cosine similarity is never below -1"
    if value > 1:
        return f"{dotted} = {value:g} can never pass: a cosine similarity is never above 1"
    return None


def budget_problem(dotted: str, value: float) -> str | None:
    # The budget is 1 - cosine, which is at most 2.
    if value >= 2:
        return f"{dotted} = {value:g} can never fail: the cosine error (1 - cosine) is at most 2"
    return None


def tol_problem(dotted: str, entry: str) -> str | None:
    """An absolute tolerance (``ATOL`` or ``OUTPUT=ATOL[:RTOL]``) so large no comparison fails."""
    raw = entry.rsplit("=", 1)[-1].split(":", 1)[0].strip()
    try:
        atol = float(raw)
    except ValueError:
        return None  # malformed entries are reported by the tolerance parser, with its wording
    if atol >= FLOAT32_MAX:
        return f"{dotted} entry {entry!r} can never fail: no difference between float32 outputs reaches {atol:g}"
    return None


def batch_problem(dotted: str, sizes: list[int]) -> str | None:
    """A batch size whose random inputs cannot fit whatever the model, since a row is at least
    a byte (the same budget as :func:`onnxkit.foundation.data.check_random_size`)."""
    from onnxkit.foundation.data import memory_bytes, random_input_budget
    from onnxkit.results import fmt_bytes

    for b in sizes:
        if b > random_input_budget():
            return (f"{dotted}: a batch of {b} rows needs at least {fmt_bytes(b)} (a byte per row), more than "
                    f"a quarter of this machine's {fmt_bytes(memory_bytes())} of memory")
    return None
