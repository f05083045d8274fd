"""Sharded data sets: a file, a folder or a glob of parquet / csv / jsonl / npy shards.

Shards are taken in sorted path order and every row gets a global ``row_id``: its 0-based
position across the shards in that order. That id is what makes a distributed run checkable
(each row must come back exactly once) and its output comparable with a local run.

A shard (or a row range of it) is read into the same ``{input: array}`` feeds that
``run --data`` builds from one file: the column-to-input rules are those of
:mod:`onnxkit.foundation.data`, not a second copy. One addition: a parquet or jsonl column
whose cells are lists (token ids of one sentence per row) feeds an input of rank 2 or more,
one row per cell, which a table of scalars cannot express.
"""

from __future__ import annotations

import dataclasses
import glob as globmod
import io
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxkit._lazy import require
from onnxkit.errors import InputError, UsageError
from onnxkit.foundation.files import preflight
from onnxkit.foundation.spec import InputSpec

Feeds = dict[str, np.ndarray]

# suffix -> format; a data set mixes no formats (their column rules differ).
SHARD_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                 ".npy": "npy"}
_GLOB_CHARS = set("*?[")
_CSV_CHUNK = 65_536


@dataclass(frozen=True)
class Shard:
    path: Path
    kind: str
    rows: int
    offset: int  # row_id of its first row
    # The data set's columns in the first shard's order (None for npy): every range is read
    # into this order, so a shard (or a jsonl line) that lists the same columns in another
    # order still feeds each value to the same position of the input.
    columns: tuple[str, ...] | None = None

    @property
    def stop(self) -> int:
        return self.offset + self.rows


@dataclass(frozen=True)
class ShardSet:
    source: str
    kind: str
    shards: tuple[Shard, ...]
    # Shards without rows (a writer's empty partitions): they give no row ids and no work.
    empty: tuple[Path, ...] = ()
    # Files of a data folder that are not shards (a .csv.gz, a .json): left out, and said.
    others: tuple[Path, ...] = ()

    def notes(self) -> list[str]:
        def names(paths) -> str:
            return ", ".join(p.name for p in paths[:3]) + ("..." if len(paths) > 3 else "")

        out = []
        if self.empty:
            out.append(f"{len(self.empty)} empty data shard(s) skipped: {names(self.empty)}")
        if self.others:
            out.append(f"{len(self.others)} file(s) of the data folder are not {self.kind} shards and were not read: "
                       f"{names(self.others)}")
        return out

    @property
    def rows(self) -> int:
        return self.shards[-1].stop if self.shards else 0

    def ranges(self, rows_per_range: int) -> list[tuple[int, int, int]]:
        """``(shard index, start, stop)`` pieces of at most ``rows_per_range`` rows, never
        crossing a shard, in row_id order: the units of work of a distributed run."""
        if rows_per_range < 1:
            raise UsageError("rows per range must be a positive integer")
        out = []
        for i, s in enumerate(self.shards):
            out.extend((i, a, min(a + rows_per_range, s.rows)) for a in range(0, s.rows, rows_per_range))
        return out


def _others(folder: Path) -> list[Path]:
    # Hidden and underscore files are a writer's bookkeeping (_SUCCESS, .crc, _manifest.json).
    return sorted(c for c in folder.iterdir() if c.suffix.lower() not in SHARD_FORMATS
                  and not c.name.startswith((".", "_")) and c.is_file())


def _candidates(source: str) -> list[Path]:
    p = Path(source)
    if any(c in source for c in _GLOB_CHARS) and not p.exists():
        found = [Path(f) for f in globmod.glob(source, recursive=True)]
        files = [f for f in found if f.is_file() or not f.exists()]
        if not files:
            raise InputError(f"no data shards match {source}")
        return files
    preflight(p, what="data", allow_dir=True)
    if p.is_dir():
        files = [c for c in p.iterdir() if c.suffix.lower() in SHARD_FORMATS and not c.name.startswith(".")]
        if not files:
            raise InputError(f"data folder {p} holds no shards ({', '.join(sorted(set(SHARD_FORMATS)))})")
        return files
    return [p]


def list_shards(source: str | os.PathLike[str]) -> ShardSet:
    """The shards of ``source`` in sorted path order, each with its row count and offset.

    Row counts come from the files' metadata where they have one (parquet, npy) and from one
    pass over the text otherwise (csv, jsonl), so the offsets are known before any row is
    scored. A missing or unreadable shard is an InputError naming it; empty shards are left
    out (``ShardSet.empty``), and a data set with no row at all is an InputError."""
    files = sorted(_candidates(os.fspath(source)), key=lambda f: str(f))
    kinds: dict[str, list[str]] = {}
    for f in files:
        kind = SHARD_FORMATS.get(f.suffix.lower())
        if kind is None:
            raise UsageError(f"unsupported data shard {f.name}; use {', '.join(sorted(SHARD_FORMATS))}")
        kinds.setdefault(kind, []).append(f.name)
    if len(kinds) > 1:
        listed = "; ".join(f"{k}: {', '.join(v[:2])}{'...' if len(v) > 2 else ''}" for k, v in sorted(kinds.items()))
        raise InputError(f"{source} mixes shard formats ({listed}); give one format per data set")
    kind = next(iter(kinds))
    shards, empty, offset = [], [], 0
    for f in files:
        if kind in ("csv", "jsonl") and _zero_byte_file(f):  # a text writer's empty partition
            empty.append(f)
            continue
        preflight(f, what="data shard")
        rows = count_rows(f, kind)
        if rows == 0:
            empty.append(f)
            continue
        shards.append(Shard(f, kind, rows, offset))
        offset += rows
    if not shards:
        raise InputError(f"data shard {files[0]} holds no rows" if len(files) == 1
                         else f"none of the {len(files)} data shards of {source} holds a row")
    if kind != "npy":
        columns = _first_columns(shards[0])
        shards = [dataclasses.replace(s, columns=columns) for s in shards]
    folder = Path(source)
    others = tuple(_others(folder)) if folder.is_dir() else ()
    return ShardSet(os.fspath(source), kind, tuple(shards), tuple(empty), others)


def _zero_byte_file(path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False  # preflight says why
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _first_columns(shard: Shard) -> tuple[str, ...]:
    try:
        return tuple(str(c) for c in _frame_rows(shard, 0, 1).columns)
    except InputError as exc:
        raise InputError(_naming(exc.message, shard.path), hint=exc.hint) from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read data shard {shard.path} as {shard.kind}: {_first_line(exc)}") from None


def count_rows(path: Path, kind: str) -> int:
    try:
        if kind == "parquet":
            return int(require("pyarrow.parquet").ParquetFile(path).metadata.num_rows)
        if kind == "npy":
            from onnxkit.foundation.data import _open_npy

            arr = _open_npy(path)
            if arr.ndim == 0:
                raise InputError(f"data shard {path} holds a scalar; expected rows")
            return int(arr.shape[0])
        if kind == "csv":
            from onnxkit.foundation.csv_scan import check_csv

            return int(check_csv(path))
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except InputError as exc:
        raise InputError(_naming(exc.message, path), hint=exc.hint) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read data shard {path} as {kind}: {_first_line(exc)}") from None


def read_shard(shard: Shard, specs: list[InputSpec], start: int = 0, stop: int | None = None,
               notes: list[str] | None = None) -> Feeds:
    """Rows ``[start, stop)`` of ``shard`` (positions inside the shard) as model feeds; the
    dtype casts done to fit the model's inputs are appended to ``notes`` (as a local run
    reports them; :func:`summarize_notes` folds the shards' notes together)."""
    stop = shard.rows if stop is None else min(stop, shard.rows)
    if not 0 <= start < stop:
        raise UsageError(f"empty row range {start}:{stop} of data shard {shard.path}")
    try:
        if shard.kind == "npy":
            feeds = _npy_rows(shard.path, specs, start, stop, notes)
        else:
            frame = _frame_rows(shard, start, stop)
            if len(frame) != stop - start:
                raise InputError(f"data shard {shard.path} holds {len(frame)} rows where {stop - start} were expected "
                                 f"at rows {start}-{stop - 1}; it changed while being read")
            frame = _in_column_order(frame, shard)
            if notes is not None and shard.kind in ("csv", "jsonl"):  # parquet has real nulls and NaNs
                _missing_notes(frame, shard.path, notes)
            feeds = _frame_feeds(frame, specs, shard.path, notes)
    except InputError as exc:
        raise InputError(_naming(exc.message, shard.path), hint=exc.hint) from None
    except (OSError, ValueError, TypeError) as exc:  # the readers' own errors on a corrupt file
        raise InputError(f"cannot read data shard {shard.path} as {shard.kind}: {_first_line(exc)}") from None
    return feeds


def _npy_rows(path: Path, specs: list[InputSpec], start: int, stop: int, notes: list[str] | None) -> Feeds:
    from onnxkit.foundation.casts import fit_dtype
    from onnxkit.foundation.data import _npy_batches

    # _npy_batches applies the local rules (one input, rows of samples refused for a model
    # without a batch dimension) and yields views of the memory map.
    first = next(_npy_batches(path, specs, 1))
    name = next(iter(first))
    arr = np.ascontiguousarray(np.load(path, mmap_mode="r", allow_pickle=False)[start:stop])
    spec = next((s for s in specs if s.name == name), None)
    if spec is not None:
        arr, note = fit_dtype(arr, spec.dtype, name=name, where=path.name)
        _note(notes, note)
    return {name: arr}


def _frame_rows(shard: Shard, start: int, stop: int):
    pd = require("pandas", "sklearn")
    if shard.kind == "parquet":
        pq = require("pyarrow.parquet")
        pf = pq.ParquetFile(shard.path)
        parts, at = [], 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if at + n > start and at < stop:
                t = _row_group(pf, shard.path, g)
                parts.append(t.slice(max(start - at, 0), min(stop, at + n) - max(start, at)))
            at += n
        return require("pyarrow").concat_tables(parts).to_pandas() if parts else pd.DataFrame()
    if shard.kind == "csv":
        # Rows are counted as pandas parses them (blank lines skipped, quoted line breaks kept):
        # skipping physical lines instead would shift a range by every blank line before it.
        # index_col=False as locally (check_csv has refused rows wider than the header).
        parts, at = [], 0
        for chunk in pd.read_csv(shard.path, chunksize=_CSV_CHUNK, index_col=False):
            n = len(chunk)
            if at + n > start:
                parts.append(chunk.iloc[max(start - at, 0):stop - at])
            at += n
            if at >= stop and stop < shard.rows:
                break
        if stop == shard.rows and at > shard.rows:
            # The shard's last range reads to the end: rows the count did not see would
            # otherwise be dropped without a word.
            raise InputError(f"data shard {shard.path} parses into {at} rows but {shard.rows} were counted (a line "
                             "such as \"\" or a quoted field over several lines is read differently); "
                             "clean that file or convert it to parquet")
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    # utf-8-sig: a byte order mark (as Windows tools write) is not part of the first record.
    with open(shard.path, encoding="utf-8-sig") as fh:
        lines = list(itertools.islice((line for line in fh if line.strip()), start, stop))
    return pd.read_json(io.StringIO("".join(lines)), lines=True, orient="records", dtype=False)


# The last row group decoded: a row group is the smallest unit Parquet decodes, and the row
# ranges of a run are usually smaller, so consecutive ranges of one group decode it once.
_LAST_GROUP: list = [None, None]


def _row_group(pf, path: Path, g: int):
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, g)
    if _LAST_GROUP[0] != key:
        _LAST_GROUP[:] = [None, None]  # free the previous group before decoding the next
        _LAST_GROUP[:] = [key, pf.read_row_group(g)]
    return _LAST_GROUP[1]


def _in_column_order(frame, shard: Shard):
    if shard.columns is None:
        return frame
    have = [str(c) for c in frame.columns]
    if have == list(shard.columns):
        return frame
    if shard.kind == "jsonl" and set(have) < set(shard.columns):
        # Lines of a range that all lack a key: that key is missing on each, as it would be
        # beside a line that has it (NaN, noted).
        frame.columns = have
        return frame.reindex(columns=list(shard.columns))
    if sorted(have) != sorted(shard.columns):
        extra = [c for c in have if c not in shard.columns]
        missing = [c for c in shard.columns if c not in have]
        raise InputError(f"data shard {shard.path} does not have the columns of the first shard: "
                         + "; ".join(part for part in (f"missing {', '.join(missing[:5])}" if missing else "",
                                                      f"extra {', '.join(extra[:5])}" if extra else "") if part)
                         + "; every shard of a data set must hold the same columns")
    frame.columns = have
    return frame[list(shard.columns)]


def _frame_feeds(frame, specs: list[InputSpec], path: Path, notes: list[str] | None = None) -> Feeds:
    from onnxkit.foundation.data import _frame_to_feeds

    listed = [s for s in specs if s.name in frame.columns and len(s.shape or ()) >= 2 and _holds_lists(frame[s.name])]
    if not listed:
        return _frame_to_feeds(frame, specs, path)
    feeds = {s.name: _stack_lists(frame[s.name], s, path, notes) for s in listed}
    rest = [s for s in specs if s not in listed]
    if rest:
        feeds.update(_frame_to_feeds(frame[[s.name for s in rest]], rest, path) if len(rest) > 1
                     else _frame_to_feeds(frame[[rest[0].name]] if rest[0].name in frame.columns else frame, rest, path))
    return feeds


def _holds_lists(col) -> bool:
    first = col.iloc[0] if len(col) else None
    return isinstance(first, (list, tuple, np.ndarray))


def _stack_lists(col, spec: InputSpec, path: Path, notes: list[str] | None) -> np.ndarray:
    from onnxkit.foundation.casts import fit_dtype

    try:
        cells = [_cell(c) for c in col]
    except ValueError:  # numpy refuses a ragged nested list
        raise InputError(f"column {spec.name!r} of {path.name} holds nested lists of different lengths; "
                         "pad them to one shape") from None
    shapes = {c.shape for c in cells}
    if len(shapes) > 1:
        raise InputError(f"column {spec.name!r} of {path.name} holds lists of different lengths "
                         f"({', '.join(str(s[0]) if s else '?' for s in sorted(shapes)[:3])}...); pad them to one length")
    arr = np.stack(cells)
    if arr.dtype == object:
        raise InputError(f"column {spec.name!r} of {path.name} holds nested lists that are not numbers")
    arr, note = fit_dtype(arr, spec.dtype, name=spec.name, where=path.name)
    _note(notes, note)
    return arr


def _missing_notes(frame, path: Path, notes: list[str]) -> None:
    # An empty csv field, a jsonl line without a key or with null, become NaN without a word
    # from pandas (1e999 becomes inf): said, as a local run says it of a csv file.
    from onnxkit.foundation.data import _count_missing

    counts = [0, 0]
    _count_missing(frame, counts)
    if counts[0]:
        _note(notes, f"{path.name}: empty, missing or null field(s) read as NaN")
    if counts[1]:
        _note(notes, f"{path.name}: value(s) beyond the float range read as infinity")


def _cell(c) -> np.ndarray:
    # pyarrow gives a list of lists as an object array of arrays: its nested values are
    # numbers all the same (an input of rank 3 or more).
    if isinstance(c, np.ndarray) and c.dtype == object:
        return np.asarray(c.tolist())
    return np.asarray(c)


def _note(notes: list[str] | None, note: str | None) -> None:
    if notes is not None and note and note not in notes:
        notes.append(note)


def summarize_notes(notes: list[str]) -> list[str]:
    """One line per kind of note however many shards gave it: ``a.npy: float64 data cast...``
    from 300 shards reads ``a.npy and 299 other shard(s): float64 data cast...``."""
    first: dict[str, str] = {}
    names: dict[str, set[str]] = {}
    for n in notes:
        where, sep, what = n.partition(": ")
        key = what if sep else n
        first.setdefault(key, where if sep else "")
        names.setdefault(key, set()).add(where)
    out = []
    for key, where in first.items():
        others = len(names[key]) - 1
        out.append(f"{where}{f' and {others} other shard(s)' if others else ''}: {key}" if where else key)
    return out


def _naming(message: str, path: Path) -> str:
    return message if str(path) in message else f"data shard {path}: {message}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["Shard", "ShardSet", "SHARD_FORMATS", "list_shards", "read_shard", "count_rows", "summarize_notes"]
