"""A strict first pass over CSV data files, before pandas reads them.

pandas quietly misreads a row with more fields than the header (the extra leading fields
become the index, and a row of millions of fields builds a MultiIndex for minutes) and fills
a short row with NaN. This pass, with the C-coded ``csv`` module, refuses both, naming the
line, and bounds the cost of a hostile file: the header's width and each field's size are
capped, so no line can make the later parse superlinear.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from onnxkit.errors import InputError

# Wider than any table a model is fed from (gene-expression tables reach tens of thousands);
# pandas needs about 2.5 s per hundred thousand header fields, so this bounds that parse.
MAX_COLUMNS = 100_000
# csv's own per-field limit (128 KiB, the module default): a longer field is refused rather
# than raised, so one multi-megabyte line costs a bounded read.
MAX_FIELD_CHARS = csv.field_size_limit()

# (resolved path, size, mtime_ns) of files already scanned: a pipeline opens its data once
# per validation, and the verdict of an unchanged file does not change.
_SCANNED: dict[tuple[str, int, int], int] = {}


def _blank(row: list[str]) -> bool:
    # pandas skips empty lines; csv returns them as [] (or [''] for a line of spaces).
    return not row or (len(row) == 1 and not row[0].strip())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_header(path: Path, record: list[str], line: int) -> None:
    """A first line of numbers is a data row, not column names: read as a header it would be
    dropped without a word. pandas' default names (0, 1, 2, ...) are a header all the same."""
    fields = [f.strip() for f in record]
    if fields != [str(i) for i in range(len(fields))] and all(f and _is_number(f) for f in fields):
        shown = ", ".join(fields[:4]) + (", ..." if len(fields) > 4 else "")
        raise InputError(f"{path.name}: line {line} ({shown}) is all numbers, but the first line of a CSV file is "
                         "its header (column names); as it is, that row would be dropped",
                         hint="add a header line such as f0,f1,... (or save the data as .npy)")


def check_csv(path: Path, *, max_rows: int | None = None) -> int:
    """Check that every record of ``path`` has as many fields as its header.

    Returns the number of data rows seen (at most ``max_rows`` when given: the pre-flight
    reads only the first rows). Raises InputError naming the first bad line."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if max_rows is None and key in _SCANNED:
        return _SCANNED[key]
    rows = 0
    line = 1
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            width = None
            for record in reader:
                start, line = line, reader.line_num + 1
                if _blank(record):
                    continue
                if width is None:
                    width = len(record)
                    if width > MAX_COLUMNS:
                        raise InputError(f"{path.name}: the header (line {start}) has {width} columns; "
                                         f"onnxkit reads at most {MAX_COLUMNS}")
                    _check_header(path, record, start)
                    continue
                if len(record) != width:
                    more = "more" if len(record) > width else "fewer"
                    raise InputError(
                        f"{path.name}: line {start} has {len(record)} fields, {more} than the {width} "
                        "columns of the header",
                        hint="every row needs one value per header column; quote values that hold commas",
                    )
                rows += 1
                if max_rows is not None and rows >= max_rows:
                    return rows
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex() if isinstance(exc.object, bytes) else "?"
        raise InputError(f"{path.name} is not UTF-8 text (invalid byte 0x{bad}); "
                         "is it really a CSV file?") from None
    except csv.Error as exc:
        text = str(exc)
        if "field larger than field limit" in text:
            text = f"a field longer than {MAX_FIELD_CHARS // 1024} KiB"
        raise InputError(f"cannot parse {path.name} as CSV: line {line}: {text}") from None
    if max_rows is None:
        _SCANNED[key] = rows
    return rows
