"""Reading a Keras model's config as data, and finding the code in it.

A Keras file (``.keras`` zip, legacy ``.h5``) describes its architecture as JSON. Python
code travels in it as marshalled bytecode (base64 text): in ``Lambda`` layers, in
``__lambda__`` objects, and for a Python ``lambda`` given as an activation, which Keras 3
saves as ``{"value": [<bytecode>, defaults, closure]}`` with no class name at all. The scan
therefore looks for the bytecode itself, wherever it sits, as well as for the classes.

Everything here is iterative and bounded: a config nested 200,000 deep must be one line
(exit 2), not a RecursionError from ``json`` or from the walk.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from onnxkit.errors import InputError

# Real configs are about 4 levels deeper per nested model (13 for a model in a model in a
# model); 200 leaves room for 50 levels of nesting and stays far from Python's recursion
# limit in json and in Keras' own recursive deserializer.
MAX_CONFIG_DEPTH = 200
# A config.json of this size would be a model with hundreds of thousands of layers; a
# bigger one is a zip bomb or not a model.
MAX_CONFIG_BYTES = 256 * 1024 * 1024

_OPEN = np.frombuffer(b"[{", np.uint8)
_CLOSE = np.frombuffer(b"]}", np.uint8)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]{24,}")


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text, strings skipped; no recursion."""
    depth = deepest = 0
    for chunk in _STRINGS.split(raw):
        if not chunk:
            continue
        b = np.frombuffer(chunk, np.uint8)
        steps = np.isin(b, _OPEN).astype(np.int64) - np.isin(b, _CLOSE)
        if steps.any():
            levels = depth + np.cumsum(steps)
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
    return deepest


def load_config_json(raw: bytes | str, what: str) -> Any:
    """``json.loads`` of a Keras config once its size and depth are known to be sane."""
    if not isinstance(raw, (bytes, bytearray, str)):  # an HDF5 attribute can hold any array
        raise InputError(f"{what} is a {type(raw).__name__}, not JSON text (a corrupt or hostile file)")
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"{what} is {len(data):,} bytes; no real Keras config is that large (a corrupt or hostile file)")
    depth = json_depth(data)
    if depth > MAX_CONFIG_DEPTH:
        raise InputError(
            f"{what} is nested {depth:,} levels deep (real models stay far below {MAX_CONFIG_DEPTH}); "
            "a corrupt or hostile file",
        )
    try:
        return json.loads(data)
    except RecursionError:  # depth was bounded above; kept so no traceback can escape
        raise InputError(f"{what} is nested too deep to read (a corrupt or hostile file)") from None
    except ValueError as exc:
        raise InputError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:200]})") from None


def walk(config: Any) -> Iterator[tuple[Any, str, str]]:
    """(value, key, owner) for every value in a config: ``owner`` is the name of the
    nearest enclosing layer, ``key`` the dotted path from that layer's config to the value
    (``activation.value``)."""
    stack: list[tuple[Any, str, str]] = [(config, "", "?")]
    while stack:
        node, key, owner = stack.pop()
        yield node, key, owner
        if isinstance(node, dict):
            prefix = key
            if isinstance(node.get("class_name"), str):
                cfg = node.get("config")
                name = cfg.get("name") if isinstance(cfg, dict) else None
                owner = str(name or node.get("name") or owner)
                prefix = ""
            children = []
            for k, v in node.items():
                sub = prefix if (k == "config" and not prefix) else (f"{prefix}.{k}" if prefix else str(k))
                children.append((v, sub, owner))
            stack.extend(reversed(children))
        elif isinstance(node, list):
            stack.extend((v, key, owner) for v in reversed(node))


def is_marshalled_code(text: str) -> bool:
    """Whether ``text`` is base64 of a marshalled Python code object (what Keras'
    ``func_dump`` writes). A code object is the type byte ``c`` (0x63, or 0xe3 with the
    reference flag), five (Python 3.11+) or six (3.8-3.10) int32 header fields of which
    the first three are small counts, then the bytecode as a bytes object (``s``, 0x73 or
    0xf3). Names and other ordinary strings do not decode to that."""
    if len(text) < 32 or not _BASE64.fullmatch(text):
        return False
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) < 26 or raw[0] not in (0x63, 0xE3):
        return False
    counts = [int.from_bytes(raw[i:i + 4], "little") for i in (1, 5, 9)]
    return all(c < 256 for c in counts) and (raw[21] in (0x73, 0xF3) or raw[25] in (0x73, 0xF3))


def bytecode_sites(config: Any) -> list[str]:
    """Where a config carries marshalled Python code, as ``layer 'name' (key)``."""
    found: list[str] = []
    for value, key, owner in walk(config):
        if isinstance(value, str) and is_marshalled_code(value):
            site = f"layer {owner!r} ({key})"
            if site not in found:
                found.append(site)
    return found
