"""What ``onnxkit pipeline`` checks before its first stage runs.

A pipeline spends tens of seconds exporting and timing before it reads its validation data
or writes its reports; a mistake found then costs the whole run, and a report path that
names the source model destroys it. So, before anything runs:

* every path the run will write (artifacts and their ``.data`` files, every report, the
  ``--junit`` copy, ``$GITHUB_STEP_SUMMARY``) is compared with every path it reads (the
  config, the source model or its folder and its external-data files, weights, sample, data,
  calibration data) and with
  the other writes; an existing one must be a regular file (not a symlink, device, FIFO or
  socket);
* the folders it will create can be created;
* the data files exist, are readable, and their header and first rows parse;
* with input specs in the config, random inputs of the largest batch fit in memory.

Every problem is exit 2 (3 for a folder that cannot be written), and nothing is written.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxkit.errors import EnvironmentProblem, InputError, UnsafeInput, UsageError
from onnxkit.foundation.files import same_file
from onnxkit.operations.config import ConfigError, PipelineConfig

# A CSV up to this size is checked whole (csv runs at ~100 MB/s); a larger one is checked on
# its first rows here and whole when it is read.
FULL_CSV_SCAN_BYTES = 64 << 20
FIRST_ROWS = 1000


@dataclass(frozen=True)
class Planned:
    """A path the run will write, and what it is to the user."""

    path: Path
    role: str


def artifact_suffixes(cfg: PipelineConfig) -> list[str]:
    from onnxkit.operations.pipeline import _artifact_suffix

    out = [".onnx"]
    if cfg["optimize"]["enabled"]:
        out.append(".opt.onnx")
    if cfg["quantize"]["enabled"]:
        out.append(f".{_artifact_suffix(cfg['quantize']['mode'])}.onnx")
    return out


def planned_writes(cfg: PipelineConfig, report_dir: Path, junit: Path | None, step_summary: Path | None) -> list[Planned]:
    name = cfg["output"]["name"]
    writes: list[Planned] = []
    for suffix in artifact_suffixes(cfg):
        art = cfg.output_dir / f"{name}{suffix}"
        writes.append(Planned(art, "the artifact"))
        # Models over 2 GB keep their weights beside them.
        writes.append(Planned(art.parent / (art.name + ".data"), "the artifact's external data"))
    for file in ("pipeline.json", "junit.xml", "summary.md", "report.html"):
        writes.append(Planned(report_dir / file, "the report"))
    if junit is not None:
        writes.append(Planned(junit, "the --junit file"))
    if step_summary is not None:
        writes.append(Planned(step_summary, "$GITHUB_STEP_SUMMARY"))
    return writes


def planned_reads(cfg: PipelineConfig) -> list[Planned]:
    src = cfg["source"]
    reads = [Planned(cfg.path, "the config")]
    raw = str(src["path"])
    source = Path(raw)
    if not source.exists() and ":" in raw:  # a factory "file.py:function"
        source = Path(raw.rsplit(":", 1)[0])
    reads.append(Planned(source, "the source model"))
    from onnxkit.foundation.files import expand_reads

    # An ONNX source's weights may live in files beside it, under any name (even "out.onnx").
    reads.extend(Planned(p, "the source model's external data") for p in expand_reads(source)[1:])
    for section, key in (("source", "weights"), ("source", "sample"), ("validate", "data"), ("quantize", "calib_data"),
                         ("targets", "data")):
        value = cfg[section][key]
        if value is not None:
            reads.append(Planned(Path(value), f"{section}.{key}"))
    return reads


def _inside(path: Path, folder: Path) -> bool:
    with contextlib.suppress(OSError):
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    return False


def _check_collisions(writes: list[Planned], reads: list[Planned]) -> None:
    for w in writes:
        for r in reads:
            if same_file(w.path, r.path):
                other = "" if str(w.path) == str(r.path) else f" {r.path}"
                raise UsageError(f"{w.role} {w.path} would overwrite {r.role}{other}",
                                 hint="choose another output.name, output.dir or report path")
            if _inside(w.path, r.path):
                raise UsageError(f"{w.role} {w.path} lies inside {r.role} {r.path}, which the run reads",
                                 hint="put output.dir and the reports outside the source folder")
    for i, a in enumerate(writes):
        for b in writes[i + 1:]:
            # The --junit copy may be the report's own junit.xml: the same bytes twice.
            same_junit = {a.role, b.role} == {"the --junit file", "the report"} and a.path.name == b.path.name == "junit.xml"
            if not same_junit and same_file(a.path, b.path):
                raise UsageError(f"{a.role} {a.path} and {b.role} {b.path} are the same file; one would overwrite the other")


def _check_existing_target(w: Planned) -> None:
    try:
        mode = os.lstat(w.path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise EnvironmentProblem(f"cannot check {w.role} {w.path}: {exc.strerror}") from None
    if stat.S_ISLNK(mode):
        raise UsageError(f"{w.role} {w.path} is a symbolic link; refusing to write through it")
    if stat.S_ISDIR(mode):
        raise UsageError(f"{w.role} {w.path} is a directory, expected a file path")
    if not stat.S_ISREG(mode):
        from onnxkit.foundation.files import special_kind

        raise UsageError(f"{w.role} {w.path} is {special_kind(mode)}, not a regular file; refusing to write to it")


def _check_folder(folder: Path, what: str) -> None:
    """``folder`` exists as a writable directory, or can be created."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            raise UsageError(f"{what} {folder}: {probe} is a broken symbolic link")
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if not probe.is_dir():
        raise UsageError(f"{what} {folder}: {probe} exists and is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"{what} {folder} cannot be written ({probe} is not writable)")


def check_data_file(path: Path) -> None:
    """Exists, readable, a supported kind, and its header and first rows parse."""
    from onnxkit.foundation.data import DATA_SUFFIXES, _open_npy
    from onnxkit.foundation.files import preflight

    p = preflight(path, what="data file")
    suffix = p.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise UsageError(f"unsupported data file {p.name}; use one of {', '.join(DATA_SUFFIXES)}")
    if suffix == ".csv":
        from onnxkit.foundation.csv_scan import check_csv

        rows = check_csv(p, max_rows=None if p.stat().st_size <= FULL_CSV_SCAN_BYTES else FIRST_ROWS)
        if rows == 0:
            raise InputError(f"data file {p.name} holds no rows")
    elif suffix == ".npy":
        arr = _open_npy(p)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise InputError(f"data file {p.name} holds no rows")
    elif suffix == ".npz":
        _check_npz_headers(p)
    else:
        _check_parquet(p)


def _check_npz_headers(path: Path) -> None:
    """Read each member's .npy header only (no array data): dtype, shape, row counts."""
    rows: dict[str, int | None] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.endswith(".npy")]
            if not members:
                raise InputError(f"data file {path.name} holds no arrays")
            for m in members:
                with zf.open(m) as fh:
                    shape, dtype = _npy_header(fh)
                key = m[:-4]
                if dtype.hasobject:
                    raise UnsafeInput(f"array {key!r} in {path.name} is a Python object array; loading it "
                                      "would unpickle (run code). Save numeric arrays instead")
                rows[key] = shape[0] if shape else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path.name} as .npz (truncated or not NumPy): "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    counts = {r for r in rows.values() if r is not None}
    if len(counts) > 1:
        raise InputError(f"arrays in {path.name} have different row counts: {rows}")
    if not counts or counts == {0}:
        raise InputError(f"data file {path.name} holds no rows")


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(fh)
    else:  # 3.0 (UTF-8 field names) has no public reader
        shape, _, dtype = fmt._read_array_header(fh, version)
    return shape, dtype


def _check_parquet(path: Path) -> None:
    from onnxkit._lazy import require

    pq = require("pyarrow.parquet")
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... on a corrupt footer
        raise InputError(f"cannot read {path.name} as Parquet: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if rows == 0:
        raise InputError(f"data file {path.name} holds no rows")


def _check_random_inputs(cfg: PipelineConfig) -> None:
    """With specs in the config, the largest random batch must fit before export starts."""
    from onnxkit.foundation.data import check_random_size, concrete_shape
    from onnxkit.foundation.spec import parse_specs

    specs = parse_specs(cfg["source"]["inputs"])
    if not specs:
        return
    sizes = []
    if cfg["validate"]["enabled"] and cfg["validate"]["data"] is None:
        sizes += cfg["validate"]["batch_sizes"]
    if cfg["bench"]["enabled"]:
        sizes += cfg["bench"]["batch_sizes"]
    if sizes:
        named: dict[str, int] = {}
        try:
            check_random_size(specs, {s.name: concrete_shape(s, max(sizes), 16, named) for s in specs})
        except InputError as exc:
            raise ConfigError(f"{cfg.path.name}: batch size {max(sizes)}: {exc.message}",
                              hint="lower batch_sizes in [validate] and [bench], or give [validate] data") from None


def preflight_pipeline(cfg: PipelineConfig, report_dir: Path, *, junit: Path | None = None,
                       step_summary: Path | None = None) -> None:
    """Everything that can be checked before the first stage; raises on the first problem."""
    name = cfg["output"]["name"]
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(f"{cfg.path.name}: output.name = {name!r} must be a plain file name (no folders)",
                          hint="put the folder in output.dir")
    writes = planned_writes(cfg, report_dir, junit, step_summary)
    reads = planned_reads(cfg)
    _check_collisions(writes, reads)
    _check_folder(cfg.output_dir, "output.dir")
    _check_folder(report_dir, "report folder")
    if junit is not None:
        _check_folder(junit.parent if str(junit.parent) else Path("."), "--junit folder")
    for w in writes:
        _check_existing_target(w)
    for section, key in (("validate", "data"), ("quantize", "calib_data"), ("source", "sample"), ("targets", "data")):
        value = cfg[section][key]
        if value is None or (section == "quantize" and not cfg["quantize"]["enabled"]):
            continue
        try:
            if key == "sample":  # read as CSV whatever its name, on its first 1000 rows, as export does
                from onnxkit.foundation.csv_scan import check_csv
                from onnxkit.foundation.files import preflight

                check_csv(preflight(value, what="sample CSV"), max_rows=1000)
            elif section == "validate" and cfg["validate"]["engine"] == "ray":
                from onnxkit.foundation.shards import list_shards

                list_shards(value)  # a file, or a folder of shards
            else:
                check_data_file(Path(value))
        except (InputError, UsageError, UnsafeInput) as exc:
            raise type(exc)(f"{section}.{key}: {exc.message}", hint=exc.hint) from None
    _check_random_inputs(cfg)
    from onnxkit.operations.pipeline_targets import preflight as targets_preflight

    targets_preflight(cfg)
