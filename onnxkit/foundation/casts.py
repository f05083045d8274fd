"""Value-preserving dtype casts of user data to the dtype a model input declares.

NumPy saves float64 and int64 by default, so data for a float32 or int32 input is routinely
one width off. A cast that keeps every value (float64 -> float32 within range, int32 ->
int64, integral floats -> ints) is done with a note; one that would change a value
(fractions or NaN into an integer input, overflow, bool <-> number) is refused naming the
input, because feeding the model other numbers than the user's would make the verdict lie.
"""

from __future__ import annotations

import numpy as np

from onnxkit.errors import InputError


def _range_of(dtype: np.dtype) -> tuple[float, float]:
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return float(info.min), float(info.max)
    iinfo = np.iinfo(dtype)
    return int(iinfo.min), int(iinfo.max)


def fit_dtype(arr: np.ndarray, target: np.dtype, *, name: str, where: str) -> tuple[np.ndarray, str | None]:
    """``arr`` as ``target`` and a note saying so, or ``arr`` unchanged when no cast is needed
    or possible here (strings, shapes: check_feeds reports those). Raises InputError for a
    cast that would change values."""
    src = arr.dtype
    if src == target or target.kind not in "biuf" or src.kind not in "biuf":
        return arr, None
    if (src.kind == "b") != (target.kind == "b"):
        raise InputError(f"{where}: input {name!r} is {target.name} but the data is {src.name}; "
                         "onnxkit does not guess how to map between booleans and numbers")
    if arr.size == 0:
        return arr.astype(target), None
    note = f"{where}: {src.name} data cast to {target.name} for input {name!r} (every value kept)"
    if src.kind == "f" and target.kind in "iu":
        finite = np.isfinite(arr)
        if not finite.all():
            raise InputError(f"{where}: input {name!r} is {target.name} but the data holds NaN or Inf")
        if not np.array_equal(np.floor(arr), arr):
            raise InputError(f"{where}: input {name!r} is {target.name} but the {src.name} data holds "
                             "non-integer values; refusing to round them")
    if target.kind in "iu" or (src.kind == "f" and target.kind == "f"):
        lo, hi = _range_of(target)
        finite = arr[np.isfinite(arr)] if src.kind == "f" else arr
        if finite.size and (finite.min() < lo or finite.max() > hi):
            raise InputError(f"{where}: input {name!r} is {target.name} but the data holds values outside "
                             f"its range ({finite.min()} .. {finite.max()})")
    out = arr.astype(target)
    if src.kind in "iu" and target.kind == "f" and not np.array_equal(out.astype(src), arr):
        raise InputError(f"{where}: input {name!r} is {target.name}, which cannot hold every integer "
                         f"of the {src.name} data exactly")
    if src.kind == "f" and target.kind == "f" and np.dtype(target).itemsize < src.itemsize:
        note = f"{where}: {src.name} data cast to {target.name} for input {name!r} (rounded to {target.name} precision)"
    return out, note
