"""Member names for the ``.npz`` files onnxkit writes from a model's output names.

An output name is whatever the model's author wrote, and an ``.npz`` is a ZIP archive:
a name such as ``../../.bashrc`` becomes a member that escapes the folder of whoever
unpacks the file with ``unzip`` (zip-slip). Names are made safe before they become members,
and the caller reports every name that changed.
"""

from __future__ import annotations

import re

MAX_STEM = 200  # leaves room for ".npy" and a "_NN" suffix under common 255-byte name limits
# Separators of every platform, NUL and control characters, and the characters Windows
# refuses in a file name.
_UNSAFE = re.compile(r'[/\\\x00-\x1f\x7f:*?"<>|]')


def _clean(name: str) -> str:
    stem = _UNSAFE.sub("_", name)
    stem = stem.replace("..", "__")
    # A leading dot makes a hidden file (or, with the rule above, the start of a path).
    stem = re.sub(r"^\.+", lambda m: "_" * len(m.group(0)), stem)
    stem = stem.strip(" ")[:MAX_STEM]
    return stem or "output"


def safe_member_names(names: list[str]) -> dict[str, str]:
    """{output name: member stem} with every stem safe and distinct, also ignoring case (the
    archive may be unpacked on a case-insensitive file system). Safe names are kept as they
    are; a collision after cleaning gets ``_2``, ``_3``..."""
    out: dict[str, str] = {}
    taken = {n.lower() for n in names if _clean(n) == n}
    for name in names:
        stem = _clean(name)
        if stem != name or stem.lower() in {s.lower() for s in out.values()}:
            base, k = stem, 2
            while stem.lower() in taken or stem.lower() in {s.lower() for s in out.values()}:
                stem = f"{base}_{k}"
                k += 1
        out[name] = stem
        taken.add(stem.lower())
    return out


def renaming_notes(mapping: dict[str, str]) -> list[str]:
    changed = [f"{name!r} -> {stem!r}" for name, stem in mapping.items() if name != stem]
    if not changed:
        return []
    return [f"output names unsafe or clashing as .npz member names were renamed: {', '.join(changed)} "
            "(members never hold path separators, '..', leading dots or control characters)"]


__all__ = ["safe_member_names", "renaming_notes"]
