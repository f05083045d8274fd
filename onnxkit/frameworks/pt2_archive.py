"""The members of a .pt2 archive as torch.export.load will read them.

Python's zipfile and torch's PyTorchFileReader (miniz) disagree on ambiguous archives:
zipfile returns the last entry of a duplicated name, miniz binary-searches a directory
sorted without regard to ASCII case and may return another one. An audit that reads
with one parser while torch loads with the other checks a different file. So:
ambiguous names are refused outright, and the members torch interprets are read
through torch's own reader (the pt2 layout) and through zipfile (the legacy layout
torch falls back to), and every copy is audited.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from onnxkit._lazy import require

# The legacy layout torch.export.load falls back to reads these from the archive root.
_LEGACY_PROGRAMS = ("serialized_exported_program.json",)
_CONFIG_SUFFIXES = ("_weights_config.json", "_constants_config.json")
_MAX_NAME = 400


def layout_refusals(path: Path) -> list[str]:
    """Reasons the archive's directory cannot be read unambiguously, or holds members
    torch would execute (compiled AOTInductor libraries)."""
    reasons: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return [f"the archive cannot be read as a zip file ({exc})"]
    seen: dict[str, str] = {}
    for info in infos:
        raw = info.orig_filename
        if "\x00" in raw or len(raw) > _MAX_NAME:
            reasons.append(f"member name {raw[:60]!r} is malformed (NUL byte or over {_MAX_NAME} characters)")
            continue
        # miniz compares names ignoring ASCII case; a backslash is a separator on Windows.
        key = _ascii_lower(raw.replace("\\", "/"))
        if key in seen:
            also = "" if seen[key] == raw else f" (as {seen[key]!r}: torch's reader ignores case)"
            reasons.append(f"member {raw!r} appears twice{also}: zipfile and torch would read different copies")
        seen.setdefault(key, raw)
        if "aotinductor" in key.split("/"):
            reasons.append(f"member {raw!r} is AOTInductor compiled code, which torch loads as a native library")
    torch_names = _torch_records(path)
    if torch_names is not None:
        stripped = {n.split("/", 1)[1] if "/" in n else n for n in (i.orig_filename for i in infos)}
        if sorted(torch_names) != sorted(stripped) and not reasons:
            reasons.append("torch's zip reader lists other members than Python's zipfile does")
    return reasons


def interpreted_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(record name, bytes) of every member torch.export.load parses as a program or a
    weights/constants config, as its pt2 reader and its legacy zipfile path see them."""
    torch = require("torch")
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        records = reader.get_all_records()
    except Exception:  # torch's pt2 path fails the same way and falls back to zipfile
        reader, records = None, []
    if reader is not None:
        wanted = [r for r in records if r.startswith("models/") or r.endswith(_CONFIG_SUFFIXES)]
        # torch derives the config names from each program's name and looks them up itself
        for rec in records:
            if rec.startswith("models/"):
                model = rec[len("models/"):-len(".json")]
                wanted += [f"data/weights/{model}_weights_config.json", f"data/constants/{model}_constants_config.json"]
        for rec in dict.fromkeys(wanted):
            if reader.has_record(rec):
                yield rec, reader.get_record(rec)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            if name.endswith(_LEGACY_PROGRAMS) or name.endswith(_CONFIG_SUFFIXES) or "models/" in name:
                yield name, zf.read(info)


def is_program(name: str) -> bool:
    """Whether torch parses the member ``name`` as a serialized program: any record under
    models/ (whatever its extension), or the legacy layout's program file."""
    return name.startswith("models/") or "/models/" in name or name.endswith(_LEGACY_PROGRAMS)


def _torch_records(path: Path) -> list[str] | None:
    torch = require("torch")
    try:
        return list(torch._C.PyTorchFileReader(str(path)).get_all_records())
    except Exception:
        return None


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
