"""Reference outputs kept with the inputs that made them, so a later run (a CI job without
the source framework) can validate an ONNX file against them.

The file is a plain .npz (no pickle, loaded with ``allow_pickle=False``):

- ``input/I`` and ``output/I`` for the first batch, ``input/I@K`` and ``output/I@K`` for
  batch K >= 1, where I is the tensor's position in the names listed in ``meta`` (batches may
  differ in shape: batch sizes and sequence lengths vary, so they are not concatenated).
  Members are named by position, not by the model's tensor names: a name such as
  ``../../x`` would otherwise become a path for whoever unpacks the file. Version 1 files
  (named members) are still read;
- ``meta``: a 0-d string array holding JSON: format, version, the batches (label, rows),
  input and output names in order, the source it came from, the tolerance used.

Batches are written one by one into the archive as they are produced, so saving costs the
memory of one batch, not of the whole data set.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.files import atomic_output, preflight
from onnxkit.errors import InputError, UnsafeInput

FORMAT = "onnxkit-references"
VERSION = 2
Feeds = dict[str, np.ndarray]


def _key(kind: str, name: str, index: int) -> str:
    return f"{kind}/{name}" if index == 0 else f"{kind}/{name}@{index}"


def _storable(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "O":
        # String outputs (labels) come back from ONNX Runtime as object arrays; a fixed-width
        # unicode array stores without pickle.
        try:
            return a.astype(np.str_)
        except (TypeError, ValueError):
            raise InputError("an output holds Python objects (maps or sequences) that cannot be saved without pickle") from None
    # (np.ascontiguousarray would turn a 0-d array into 1-d.)
    return a if a.flags.c_contiguous else a.copy(order="C")


class ReferenceWriter:
    """Context manager: ``add(label, inputs, outputs)`` per batch; the file appears (atomically)
    when the block ends without error."""

    def __init__(self, dest: str | Path, metadata: dict[str, Any] | None = None) -> None:
        self.dest = Path(dest)
        self.metadata = dict(metadata or {})
        self.batches: list[dict[str, Any]] = []
        self.input_names: list[str] | None = None
        self.output_names: list[str] | None = None
        self._stack = ExitStack()
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> ReferenceWriter:
        tmp = self._stack.enter_context(atomic_output(self.dest, suffix=".npz"))
        self._zip = self._stack.enter_context(zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True))
        return self

    def _write(self, key: str, arr: np.ndarray) -> None:
        assert self._zip is not None
        with self._zip.open(key + ".npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, _storable(arr), allow_pickle=False)

    def add(self, label: str, inputs: Feeds, outputs: Feeds) -> None:
        i = len(self.batches)
        if self.input_names is None:
            self.input_names, self.output_names = list(inputs), list(outputs)
        for pos, arr in enumerate(inputs.values()):
            self._write(_key("input", str(pos), i), arr)
        for pos, arr in enumerate(outputs.values()):
            self._write(_key("output", str(pos), i), arr)
        first = next(iter(inputs.values()), None)
        rows = int(first.shape[0]) if first is not None and np.ndim(first) else 1
        self.batches.append({"label": label, "rows": rows})

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                if not self.batches:
                    raise InputError("no reference outputs to save")
                meta = {
                    **self.metadata, "format": FORMAT, "version": VERSION, "batches": self.batches,
                    "inputs": self.input_names, "outputs": self.output_names,
                }
                self._write("meta", np.array(json.dumps(meta)))
            except BaseException as err:
                # Unwind the zip and the temporary file with the error, so nothing is left.
                if not self._stack.__exit__(type(err), err, err.__traceback__):
                    raise
                return False
        return bool(self._stack.__exit__(exc_type, exc, tb))


@dataclass
class References:
    """Saved references opened for streaming: ``batches()`` yields one batch at a time."""

    path: Path
    meta: dict[str, Any]
    _npz: Any = field(repr=False, default=None)

    @property
    def input_names(self) -> list[str]:
        return list(self.meta.get("inputs") or [])

    @property
    def output_names(self) -> list[str]:
        return list(self.meta.get("outputs") or [])

    def __len__(self) -> int:
        return len(self.meta["batches"])

    def _get(self, key: str) -> np.ndarray:
        try:
            return self._npz[key]
        except KeyError:
            raise InputError(f"{self.path.name} is incomplete: entry {key!r} is missing") from None
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise UnsafeInput(f"entry {key!r} of {self.path.name} is a Python object array; refusing to unpickle it") from None
            raise InputError(f"cannot read entry {key!r} of {self.path.name}: {exc}") from None
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(f"cannot read entry {key!r} of {self.path.name} (truncated?): {exc}") from None

    def _member(self, kind: str, names: list[str], pos: int, batch: int) -> np.ndarray:
        by_position = int(self.meta.get("version", 1)) >= 2
        return self._get(_key(kind, str(pos) if by_position else names[pos], batch))

    def batches(self) -> Iterator[tuple[str, Feeds, Feeds]]:
        ins, outs = self.input_names, self.output_names
        for i, b in enumerate(self.meta["batches"]):
            inputs = {n: self._member("input", ins, k, i) for k, n in enumerate(ins)}
            outputs = {n: self._member("output", outs, k, i) for k, n in enumerate(outs)}
            yield str(b.get("label", f"batch {i}")), inputs, outputs

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()

    def __enter__(self) -> References:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_references(path: str | Path) -> References:
    """Open a file written by :class:`ReferenceWriter`; refuse anything else clearly."""
    p = preflight(path, what="reference outputs file")
    try:
        npz = np.load(p, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read {p.name} as saved reference outputs (.npz): {exc}") from None
    if not hasattr(npz, "files"):
        raise InputError(f"{p.name} is a single .npy array, not saved reference outputs (.npz from --save-outputs)")
    if "meta" not in npz.files:
        npz.close()
        raise InputError(f"{p.name} holds no 'meta' entry: not written by onnxkit validate --save-outputs")
    refs = References(p, {}, npz)
    raw = refs._get("meta")
    try:
        meta = json.loads(str(raw.reshape(-1)[0]))
    except (json.JSONDecodeError, ValueError, IndexError):
        npz.close()
        raise InputError(f"the metadata of {p.name} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        npz.close()
        raise InputError(f"{p.name} is not an onnxkit reference file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("version", 0)) > VERSION:
        npz.close()
        raise InputError(f"{p.name} was written by a newer onnxkit (format version {meta.get('version')}); upgrade onnxkit")
    if not meta.get("batches") or not meta.get("inputs") or not meta.get("outputs"):
        npz.close()
        raise InputError(f"{p.name} holds no reference batches")
    refs.meta = meta
    return refs
