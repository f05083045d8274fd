"""Input data: user files (.npz, .npy, .csv, .parquet), seeded random inputs, and the checks
that a batch fits a model's inputs.

Data files are streamed in batches so memory stays bounded by the batch size, not the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.csv_scan import check_csv
from onnxkit.foundation.files import preflight
from onnxkit.foundation.spec import InputSpec
from onnxkit.errors import InputError, UnsafeInput, UsageError

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
DATA_SUFFIXES = (".npz", ".npy", ".csv", ".parquet", ".pq")

_IDS = re.compile(r"(input_ids|token_ids|ids$|tokens?$)", re.I)
_MASK = re.compile(r"mask", re.I)
_TYPES = re.compile(r"(token_type|segment)", re.I)
_POSITIONS = re.compile(r"position", re.I)

DEFAULT_VOCAB = 1000


@dataclass
class DataSource:
    """A data file opened for streaming; ``batches(n)`` yields feeds of at most n rows."""

    path: Path
    specs: list[InputSpec]
    # The casts done to fit the model's dtypes, one line per input (also logged once).
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.path.suffix.lower().lstrip(".")

    def batches(self, batch_size: int) -> Iterator[Feeds]:
        if batch_size <= 0:
            raise UsageError("batch size must be a positive integer")
        suffix = self.path.suffix.lower()
        if suffix == ".npz":
            yield from self._fitted(_npz_batches(self.path, self.specs, batch_size))
        elif suffix == ".npy":
            yield from self._fitted(_npy_batches(self.path, self.specs, batch_size))
        elif suffix == ".csv":
            yield from _table_batches(self.path, self.specs, batch_size, "csv", self.notes)
        else:
            yield from _table_batches(self.path, self.specs, batch_size, "parquet")

    def _fitted(self, batches: Iterator[Feeds]) -> Iterator[Feeds]:
        """NumPy files carry exact dtypes; cast those a value-preserving cast fits to the model's."""
        from onnxkit.foundation.casts import fit_dtype

        by_name = {s.name: s for s in self.specs}
        for feeds in batches:
            out = {}
            for k, arr in feeds.items():
                spec = by_name.get(k)
                if spec is not None:
                    arr, note = fit_dtype(np.asarray(arr), spec.dtype, name=k, where=self.path.name)
                    if note and not any(n.startswith(note.split(" (")[0]) for n in self.notes):
                        self.notes.append(note)
                        log.warning("%s", note)
                out[k] = arr
            yield out

    def count_rows(self) -> int | None:
        suffix = self.path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            pq = require("pyarrow.parquet")
            return pq.ParquetFile(self.path).metadata.num_rows
        if suffix == ".npy":
            arr = _open_npy(self.path)
            return int(arr.shape[0]) if arr.ndim else 1
        return None


def open_data(path: str | Path, specs: list[InputSpec]) -> DataSource:
    p = preflight(path, what="data file")
    if p.suffix.lower() not in DATA_SUFFIXES:
        raise UsageError(f"unsupported data file {p.name}; use one of {', '.join(DATA_SUFFIXES)}")
    return DataSource(p, specs)


def load_all(path: str | Path, specs: list[InputSpec]) -> Feeds:
    """Read a whole data file into one feed (for small files and saved references)."""
    src = open_data(path, specs)
    parts = list(src.batches(1 << 30))
    if not parts:
        raise InputError(f"data file {path} holds no rows")
    return parts[0] if len(parts) == 1 else concat_feeds(parts)


def concat_feeds(parts: list[Feeds]) -> Feeds:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise UnsafeInput(
                f"{path.name} holds a Python object array; loading it would unpickle (run code). "
                "Save numeric arrays instead",
            ) from None
        raise InputError(f"cannot read {path.name} as .npy: {exc}") from None
    except Exception as exc:  # numpy's header parser raises OSError, EOFError, SyntaxError, TokenError...
        raise InputError(f"cannot read {path.name} as .npy (truncated or not NumPy): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _npy_batches(path: Path, specs: list[InputSpec], n: int) -> Iterator[Feeds]:
    if len(specs) > 1:
        raise InputError(
            f"{path.name} holds one array but the model has {len(specs)} inputs "
            f"({', '.join(s.name for s in specs)}); use an .npz with one key per input",
        )
    arr = _open_npy(path)
    name = specs[0].name if specs else "input"
    if arr.ndim == 0:
        if specs and specs[0].shape is not None and len(specs[0].shape) == 0:
            yield {name: np.ascontiguousarray(arr)}  # the model takes a scalar: one run
            return
        raise InputError(f"{path.name} holds a scalar; expected a batch of inputs")
    if arr.shape[0] == 0:
        raise InputError(f"data file {path.name} holds no rows")
    if specs:
        _refuse_rows_for_unbatched(path, arr.shape, arr.dtype, specs[0])
    for i in range(0, arr.shape[0], n):
        yield {name: np.ascontiguousarray(arr[i : i + n])}


def one_sample_per_batch(specs: list[InputSpec]) -> bool:
    """Every input a fixed 1-D vector (x:[6]): the model takes one sample, not rows of scalars,
    so a batch counts as one row."""
    return bool(specs) and all(len(s.shape) == 1 and isinstance(s.shape[0], int) for s in specs)


def _refuse_rows_for_unbatched(path: Path, shape: tuple[int, ...], dtype: np.dtype, spec: InputSpec) -> None:
    """Rows of samples for a model that takes one sample with no batch dimension: cutting them
    into batches would make shapes the user never gave, so say what was given and what is taken."""
    fixed = bool(spec.shape) and all(isinstance(d, int) for d in spec.shape)
    if fixed and len(shape) == len(spec.shape) + 1 and tuple(shape[1:]) == tuple(spec.shape):
        raise InputError(
            f"{path.name} gives {spec.name} as {np.dtype(dtype).name}{list(shape)} ({shape[0]} rows of {list(shape[1:])}), "
            f"but the model takes {spec.name}: {describe_spec(spec)}, a single sample with no batch dimension",
            hint="give one sample per file, or export the model with a batch dimension",
        )


def _npz_batches(path: Path, specs: list[InputSpec], n: int) -> Iterator[Feeds]:
    import zipfile

    from onnxkit.foundation.mapping import check_data_keys
    from onnxkit.foundation.npz_stream import member_batches, read_members

    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # zipfile raises many types on corrupt files
        raise InputError(f"cannot read {path.name} as .npz (truncated or not NumPy): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    with zf:
        members = read_members(zf, path)  # headers only: sizes are checked before anything is inflated
        keys = list(members)
        if not keys:
            raise InputError(f"data file {path.name} holds no arrays")
        names = check_data_keys(keys, specs, path.name)
        by_name = {sp.name: sp for sp in specs}
        for k, m in members.items():
            if names[k] in by_name:
                _refuse_rows_for_unbatched(path, m.shape, m.dtype, by_name[names[k]])
        rows = {names[k]: m.rows for k, m in members.items()}
        counts = {r for r in rows.values() if r is not None}
        if len(counts) > 1:
            raise InputError(f"arrays in {path.name} have different row counts: {rows}")
        if not counts:  # scalars only: one run of the model, each scalar fed whole
            total, n = 1, 1
        else:
            total = counts.pop()
        if total == 0:
            raise InputError(f"data file {path.name} holds no rows")
        for feeds in member_batches(zf, list(members.values()), total, n, path.name):
            yield {names[k]: a for k, a in feeds.items()}


def _frame_to_feeds(frame, specs: list[InputSpec], path: Path) -> Feeds:
    cols = [str(c) for c in frame.columns]
    # Several model inputs named like the columns: one input per column (tabular pipelines).
    if len(specs) > 1:
        missing = [s.name for s in specs if s.name not in cols]
        if missing:
            raise InputError(
                f"the model expects inputs {', '.join(s.name for s in specs)}; columns missing from "
                f"{path.name}: {', '.join(missing)}",
            )
        feeds = {}
        for s in specs:
            col = frame[s.name].to_numpy()
            feeds[s.name] = _cast_column(col, s, path).reshape(-1, 1)
        return feeds
    spec = specs[0] if specs else None
    values = frame.to_numpy()
    if spec is not None and spec.dtype.kind in "fiub" and values.dtype == object:
        raise InputError(f"{path.name} has non-numeric columns but input {spec.name!r} is {spec.dtype.name}")
    if spec is not None:
        values = _cast_column(values, spec, path)
    return {spec.name if spec else "input": values}


def _cast_column(col: np.ndarray, spec: InputSpec, path: Path) -> np.ndarray:
    # Table files carry no exact dtype (CSV especially); a value-preserving cast to the
    # declared dtype is what the user means, a lossy one is refused.
    if spec.dtype.kind == "U":
        return col.astype(str).astype(object).astype(np.str_)
    try:
        cast = col.astype(spec.dtype)
    except (ValueError, TypeError):
        raise InputError(f"column values in {path.name} cannot be read as {spec.dtype.name} for input {spec.name!r}") from None
    if spec.dtype.kind in "iub" and col.dtype.kind == "f":
        finite = np.isfinite(col)
        if not np.array_equal(cast[finite].astype(col.dtype), col[finite]) or not finite.all():
            raise InputError(f"{path.name} holds fractional or missing values for integer input {spec.name!r}")
    return cast


def _table_batches(path: Path, specs: list[InputSpec], n: int, kind: str, notes: list[str] | None = None) -> Iterator[Feeds]:
    any_rows = False
    if kind == "csv":
        pd = require("pandas", "sklearn")
        check_csv(path)
        missing = [0, 0]  # empty or NaN fields, values past the float range
        try:
            # Never an index column: check_csv has made sure no row is wider than the header.
            reader = pd.read_csv(path, chunksize=n, index_col=False)
            for frame in reader:
                if len(frame):
                    any_rows = True
                    _count_missing(frame, missing)
                    yield _frame_to_feeds(frame, specs, path)
        except pd.errors.EmptyDataError:
            raise InputError(f"data file {path.name} holds no rows") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot parse {path.name} as CSV: {str(exc).splitlines()[0]}") from None
    else:
        pq = require("pyarrow.parquet")
        try:
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=n):
                frame = batch.to_pandas()
                if len(frame):
                    any_rows = True
                    yield _frame_to_feeds(frame, specs, path)
        except OSError as exc:
            raise InputError(f"cannot read {path.name} as Parquet: {exc}") from None
    if not any_rows:
        raise InputError(f"data file {path.name} holds no rows")
    if kind == "csv" and notes is not None and any(missing):
        note = (f"{path.name}: {missing[0]} empty or NaN field(s) read as NaN, {missing[1]} value(s) beyond the "
                "float range read as infinity")
        notes.append(note)
        log.warning("%s", note)


def _count_missing(frame, counts: list[int]) -> None:
    # An empty CSV field becomes NaN and 1e999 becomes inf without a word from pandas.
    numeric = frame.select_dtypes(include="number").to_numpy(dtype=np.float64, na_value=np.nan)
    counts[0] += int(np.isnan(numeric).sum())
    counts[1] += int(np.isinf(numeric).sum())


# ---------------------------------------------------------------- random inputs

def concrete_shape(spec: InputSpec, batch: int, seq: int, named: dict[str, int] | None = None) -> tuple[int, ...]:
    """Fill the dynamic dims of ``spec``: the first with ``batch``, others with ``seq``;
    a symbolic name keeps the same value across inputs (via ``named``)."""
    named = {} if named is None else named
    out = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int):
            out.append(d)
            continue
        value = batch if i == 0 else seq
        if isinstance(d, str):
            value = named.setdefault(d, value)
        out.append(value)
    return tuple(out)


def memory_bytes() -> int:
    """Physical memory of this machine (16 GiB when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def random_input_budget() -> int:
    """Most bytes one batch of generated inputs may take: a quarter of the memory, because
    floats are drawn as float64 before the cast and the model needs room to run on them."""
    return memory_bytes() // 4


def check_random_size(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse, before allocating, random inputs that cannot fit in memory, naming the input."""
    from onnxkit.results import fmt_bytes

    budget = random_input_budget()
    total = 0
    for spec in specs:
        shape = shapes[spec.name]
        nbytes = math.prod(shape) * (spec.dtype.itemsize or 4)
        total += nbytes
        if nbytes > budget or total > budget:
            dims = ",".join(str(d) for d in shape)
            raise InputError(
                f"random input {spec.name}:[{dims}]:{describe_spec(spec).split('[')[0]} would take {fmt_bytes(nbytes)}"
                + (f" ({fmt_bytes(total)} with the inputs before it)" if total != nbytes else "")
                + f", more than a quarter of this machine's {fmt_bytes(memory_bytes())} of memory",
                hint="give a data file, a smaller batch size, or smaller dimensions with --input",
            )


def random_feeds(
    specs: list[InputSpec],
    *,
    batch: int = 2,
    seq: int = 16,
    seed: int = 0,
    vocab: int = DEFAULT_VOCAB,
) -> Feeds:
    """Seeded random inputs that respect dtype and plausible value ranges."""
    rng = np.random.default_rng(seed)
    named: dict[str, int] = {}
    shapes = {spec.name: concrete_shape(spec, batch, seq, named) for spec in specs}
    check_random_size(specs, shapes)
    return {spec.name: random_array(spec, shapes[spec.name], rng, vocab) for spec in specs}


def random_array(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator, vocab: int = DEFAULT_VOCAB) -> np.ndarray:
    dt = spec.dtype
    if dt.kind == "b":
        return np.asarray(rng.random(shape) < 0.5)  # a 0-d comparison is a numpy scalar, which ORT refuses
    if dt.kind in "iu":
        if _MASK.search(spec.name):
            return np.ones(shape, dtype=dt)
        if _TYPES.search(spec.name):
            return np.zeros(shape, dtype=dt)
        if _POSITIONS.search(spec.name) and len(shape) >= 1:
            return np.broadcast_to(np.arange(shape[-1], dtype=dt), shape).copy()
        if spec.high is not None:
            high = spec.high
        else:
            high = vocab if _IDS.search(spec.name) else 10
        high = max(1, min(high, int(np.iinfo(dt).max)))
        return rng.integers(0, high, size=shape, dtype=dt)
    if dt.kind == "U":
        words = np.array(["a", "b", "c", "d"])
        return rng.choice(words, size=shape).astype(np.str_)
    return rng.standard_normal(shape).astype(dt)


def edge_case_feeds(specs: list[InputSpec], *, batch: int, seq: int, with_nan: bool) -> list[tuple[str, Feeds]]:
    """Named edge-case batches: zeros, ones, large and tiny magnitudes, NaN where accepted."""
    named: dict[str, int] = {}
    shapes = {s.name: concrete_shape(s, batch, seq, named) for s in specs}
    check_random_size(specs, shapes)
    rng = np.random.default_rng(1234)
    cases: list[tuple[str, Feeds]] = []

    def build(fill) -> Feeds:
        out = {}
        for s in specs:
            if s.dtype.kind == "f":
                out[s.name] = fill(shapes[s.name]).astype(s.dtype)
            else:  # ids/masks keep their plausible values; edge cases are about floats
                out[s.name] = random_array(s, shapes[s.name], rng)
        return out

    if not any(s.dtype.kind == "f" for s in specs):
        return [("zeros", {s.name: np.zeros(shapes[s.name], dtype=s.dtype) if s.dtype.kind != "U" else random_array(s, shapes[s.name], rng) for s in specs})]
    cases.append(("zeros", build(np.zeros)))
    cases.append(("ones", build(np.ones)))
    cases.append(("large", build(lambda sh: rng.standard_normal(sh) * 1e4)))
    cases.append(("tiny", build(lambda sh: rng.standard_normal(sh) * 1e-6)))
    if with_nan:
        def with_nans(sh):
            a = rng.standard_normal(sh)
            mask = rng.random(sh) < 0.2
            a[mask] = np.nan
            return a
        cases.append(("nan", build(with_nans)))
    return cases


# ---------------------------------------------------------------- checks

def describe(arr: np.ndarray) -> str:
    return f"{arr.dtype.name}[{','.join(str(d) for d in arr.shape)}]"


def describe_spec(spec: InputSpec) -> str:
    dims = ",".join("?" if d is None else str(d) for d in spec.shape)
    return f"{spec.dtype.name if spec.dtype.kind != 'U' else 'string'}[{dims}]"


def check_feeds(feeds: Feeds, specs: list[InputSpec], *, where: str = "data") -> Feeds:
    """Refuse feeds that do not fit: missing/extra names, rank, fixed dims, dtype.

    No silent casts: a dtype mismatch is an error naming both sides."""
    if not specs:  # a model without inputs takes empty feeds; None known: nothing to check
        return feeds
    if not feeds:
        raise InputError(f"{where} holds no inputs")
    expected = {s.name for s in specs}
    got = set(feeds)
    missing = sorted(expected - got)
    extra = sorted(got - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise InputError(
            f"{where} does not match the model inputs ({'; '.join(parts)}); expected: "
            + ", ".join(f"{s.name}: {describe_spec(s)}" for s in specs),
        )
    for s in specs:
        arr = np.asarray(feeds[s.name])
        if arr.size == 0:
            raise InputError(f"{where}: input {s.name!r} is empty; refusing a vacuous run")
        ok_dtype = arr.dtype == s.dtype or (s.dtype.kind == "U" and arr.dtype.kind in "UO")
        if s.shape and (arr.ndim != len(s.shape) or any(isinstance(d, int) and d != a for d, a in zip(s.shape, arr.shape))) or not ok_dtype:
            raise InputError(f"{where}: expected {s.name}: {describe_spec(s)}, got {describe(arr)}")
    return feeds


def non_finite_inputs(feeds: Feeds) -> list[str]:
    """Names of float inputs that hold NaN or Inf (reported, not refused)."""
    return [k for k, v in feeds.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]


def feeds_rows(feeds: Feeds) -> int:
    """Samples in a feed: the batched (rank >= 1) inputs count them; a feed of scalars
    alone is one sample."""
    if not feeds:
        return 0
    rows = [int(np.shape(v)[0]) for v in feeds.values() if np.ndim(v)]
    return max(rows) if rows else 1
