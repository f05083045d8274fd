"""Reading an ``.npz`` data file in row batches, never whole.

An ``.npz`` member may be deflate-compressed: 4 MB on disk can declare 4 GiB of zeros, and
``numpy.load(...)[key]`` would inflate it all at once. Here each member's header (shape,
dtype, order) is read first; a member larger than :func:`member_budget` is refused, naming it
and its size, and the others are decompressed a batch of rows at a time, so memory follows
the batch size, not the file.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from onnxkit.errors import InputError, UnsafeInput

Feeds = dict[str, np.ndarray]
MAX_HEADER = 10_000  # numpy's own default limit on a .npy header


@dataclass(frozen=True)
class Member:
    key: str  # as numpy.load names it: the member name without ".npy"
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def rows(self) -> int | None:
        return self.shape[0] if self.shape else None


def member_budget() -> int:
    """Most bytes one member may declare: a quarter of this machine's memory, as for random inputs."""
    from onnxkit.foundation.data import random_input_budget

    return random_input_budget()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _read_header(fh: IO[bytes], key: str, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh, max_header_size=MAX_HEADER)
        else:
            shape, fortran, dtype = fmt._read_array_header(fh, version, max_header_size=MAX_HEADER)
    except Exception as exc:  # numpy raises ValueError, EOFError, SyntaxError... on a bad header
        raise InputError(f"cannot read array {key!r} of {name} (not a NumPy array, or truncated): {_first_line(exc)}") from None
    if dtype.hasobject:
        raise UnsafeInput(f"array {key!r} in {name} is a Python object array; loading it would unpickle "
                          "(run code). Save numeric arrays instead")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def read_members(zf: zipfile.ZipFile, path: Path) -> dict[str, Member]:
    """Every member's header, each member's declared size checked before anything is inflated."""
    from onnxkit.results import fmt_bytes

    budget = member_budget()
    members: dict[str, Member] = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        try:
            with zf.open(info) as fh:
                shape, fortran, dtype = _read_header(fh, key, path.name)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise InputError(f"cannot read array {key!r} of {path.name} (truncated?): {_first_line(exc)}") from None
        m = Member(key, info, shape, dtype, fortran)
        if m.nbytes > budget:
            raise InputError(
                f"array {key!r} in {path.name} declares {dtype}{list(shape)}, {fmt_bytes(m.nbytes)} once decompressed "
                f"({fmt_bytes(info.compress_size)} in the file), more than {fmt_bytes(budget)} (a quarter of this "
                "machine's memory)",
                hint="save large inputs as .npy (read memory-mapped) or split them into several files",
            )
        members[key] = m
    return members


def _read_exact(fh: IO[bytes], n: int, key: str, name: str) -> bytes:
    buf = fh.read(n)
    if len(buf) != n:
        raise InputError(f"array {key!r} of {name} is truncated: {len(buf)} of {n} bytes")
    return buf


def _whole(zf: zipfile.ZipFile, m: Member, name: str) -> np.ndarray:
    with zf.open(m.info) as fh:
        _read_header(fh, m.key, name)
        buf = _read_exact(fh, m.nbytes, m.key, name)
    return np.frombuffer(buf, dtype=m.dtype).reshape(m.shape, order="F" if m.fortran else "C").copy()


def _row_batches(zf: zipfile.ZipFile, m: Member, n: int, name: str) -> Iterator[np.ndarray]:
    row_shape = m.shape[1:]
    row_bytes = math.prod(row_shape) * m.dtype.itemsize
    with zf.open(m.info) as fh:
        _read_header(fh, m.key, name)
        for start in range(0, m.shape[0], n):
            k = min(n, m.shape[0] - start)
            buf = _read_exact(fh, k * row_bytes, m.key, name)
            # frombuffer of bytes is read-only; ORT and the casts expect a writable array.
            yield np.frombuffer(buf, dtype=m.dtype).reshape((k, *row_shape)).copy()


def member_batches(zf: zipfile.ZipFile, members: list[Member], total: int, n: int, name: str) -> Iterator[Feeds]:
    """Batches of ``n`` rows of every member at once; a scalar member repeats in each batch.

    A Fortran-ordered array cannot be cut into rows as it streams: it is read whole (its size
    was checked against the budget)."""
    streams: dict[str, Iterator[np.ndarray]] = {}
    fixed: dict[str, np.ndarray] = {}
    for m in members:
        if m.rows is None or m.fortran:
            fixed[m.key] = _whole(zf, m, name)
        else:
            streams[m.key] = _row_batches(zf, m, n, name)
    for start in range(0, total, n):
        feeds: Feeds = {}
        for m in members:
            if m.key in streams:
                feeds[m.key] = next(streams[m.key])
            else:
                arr = fixed[m.key]
                feeds[m.key] = arr if arr.ndim == 0 else arr[start:start + n]
        yield feeds
