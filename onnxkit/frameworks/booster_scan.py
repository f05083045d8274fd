"""Nesting depth of a JSON or UBJSON model file, measured without recursion.

XGBoost parses its model files recursively in onnxkit's own process: a file of 100,000
nested brackets overflows the C stack and kills onnxkit with SIGSEGV. A real booster
is about ten levels deep, so the depth is bounded before XGBoost sees the file.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from onnxkit.errors import InputError

MAX_DEPTH = 64
# A JSON string (escapes included) or a bracket: strings are skipped whole, so brackets
# quoted inside them do not count.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_UBJ_SIZES = {b"Z": 0, b"N": 0, b"T": 0, b"F": 0, b"i": 1, b"U": 1, b"C": 1, b"I": 2, b"l": 4, b"d": 4, b"L": 8, b"D": 8}
_UBJ_INTS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}


def check_depth(path: Path, what: str = "model", limit: int = MAX_DEPTH) -> None:
    """Raise InputError (exit 2) when the JSON or UBJSON file ``path`` nests deeper than
    ``limit``; files that are neither (XGBoost's legacy binary format) are left alone."""
    data = path.read_bytes()
    head = data.lstrip()[:2]
    if head[:1] != b"{" and head[:1] != b"[":
        return
    if _looks_ubjson(head):
        depth = _ubjson_depth(data, limit, path.name)
    else:
        depth = _json_depth(data, limit)
    if depth > limit:
        raise InputError(
            f"{path.name} nests more than {limit} levels deep; a real {what} is about ten levels deep",
            hint="the file is corrupt or crafted",
        )


def _looks_ubjson(head: bytes) -> bool:
    # UBJSON opens an object with '{' followed by a key length's int marker (or a count,
    # a type, or the end); JSON follows '{' with whitespace, '"' or '}'.
    return len(head) == 2 and head[1:2] in (b"i", b"U", b"I", b"l", b"L", b"$", b"#", b"[", b"{")


def _json_depth(data: bytes, limit: int) -> int:
    depth = 0
    for m in _JSON_TOKEN.finditer(data):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return depth
        elif c in (b"]", b"}"):
            depth -= 1
    return 0


class _Malformed(Exception):
    pass


def _ubjson_depth(data: bytes, limit: int, name: str) -> int:
    """Walk the UBJSON value tree with an explicit stack; the greatest depth reached,
    stopping as soon as it passes ``limit``."""
    try:
        return _ubj_walk(data, limit)
    except (_Malformed, struct.error, IndexError):
        raise InputError(f"cannot load {name} as an XGBoost model: it is not valid UBJSON") from None


def _ubj_walk(data: bytes, limit: int) -> int:
    pos = 0
    # each open container: [closing byte or None when counted, remaining count, element type, is object]
    stack: list[list] = []
    first = True
    while first or stack:
        first = False
        if stack:
            top = stack[-1]
            if top[1] is not None and top[1] == 0:
                stack.pop()
                continue
            if top[1] is None:
                while data[pos:pos + 1] == b"N":
                    pos += 1
                if data[pos:pos + 1] == top[0]:
                    pos += 1
                    stack.pop()
                    continue
            if top[3]:
                n, pos = _ubj_int(data, pos)
                pos += n
            marker = top[2]
            if marker is None:
                marker, pos = data[pos:pos + 1], pos + 1
            if top[1] is not None:
                top[1] -= 1
        else:
            marker, pos = data[pos:pos + 1], pos + 1
        if marker in _UBJ_SIZES:
            pos += _UBJ_SIZES[marker]
        elif marker in (b"S", b"H"):
            n, pos = _ubj_int(data, pos)
            pos += n
        elif marker in (b"[", b"{"):
            if len(stack) + 1 > limit:
                return len(stack) + 1
            pos = _ubj_open(data, pos, marker, stack)
        else:
            raise _Malformed
        if pos > len(data):
            raise _Malformed
    return 0


def _ubj_open(data: bytes, pos: int, marker: bytes, stack: list[list]) -> int:
    """Read a container's optional $type and #count; push it unless it is a counted run of
    fixed-size scalars, which is skipped whole. The new position."""
    elem = None
    if data[pos:pos + 1] == b"$":
        elem, pos = data[pos + 1:pos + 2], pos + 2
        if elem in (b"[", b"{"):
            raise _Malformed  # typed containers of containers: not written by XGBoost
    count = None
    if data[pos:pos + 1] == b"#":
        count, pos = _ubj_int(data, pos + 1)
    elif elem is not None:
        raise _Malformed  # a type without a count is invalid UBJSON
    is_object = marker == b"{"
    if count is not None and elem in _UBJ_SIZES and not is_object:
        return pos + count * _UBJ_SIZES[elem]
    stack.append([b"}" if is_object else b"]", count, elem, is_object])
    return pos


def _ubj_int(data: bytes, pos: int) -> tuple[int, int]:
    marker = data[pos:pos + 1]
    fmt = _UBJ_INTS.get(marker)
    if fmt is None:
        raise _Malformed
    size = struct.calcsize(fmt)
    value = struct.unpack_from(fmt, data, pos + 1)[0]
    if value < 0:
        raise _Malformed
    return value, pos + 1 + size
