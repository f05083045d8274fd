"""``onnxkit run``: inference with ONNX Runtime on random inputs or a data set, streamed batch
by batch into .npz/.npy/.csv/.parquet with bounded memory."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxkit.foundation.data import Feeds, check_feeds, one_sample_per_batch, open_data, random_feeds
from onnxkit.foundation.files import atomic_output, check_output_path
from onnxkit.foundation.npz_names import renaming_notes, safe_member_names
from onnxkit.errors import InputError, UsageError
from onnxkit.results import Result, Table, fmt_num

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".npz", ".npy", ".csv", ".parquet", ".pq")
DEFAULT_DATA_BATCH = 256
PARQUET_ROW_GROUP = 65_536

Progress = Callable[[int, int | None], None]


@dataclass
class OutputSummary:
    name: str
    dtype: str
    shape: list[int]
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    non_finite: int = 0


@dataclass
class RunResult(Result):
    command: str = "run"
    model: str = ""
    inputs_from: str = ""
    providers_requested: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    node_providers: dict[str, int] | None = None
    rows: int = 0
    batches: int = 0
    batch_size: int = 0
    seconds: float = 0.0
    inference_seconds: float = 0.0
    rows_per_second: float = 0.0
    outputs: list[OutputSummary] = field(default_factory=list)
    output_file: str | None = None
    contained: bool = False  # every batch ran in a worker process under --timeout and a memory limit
    timeout_s: float | None = None
    rehearsed: bool = False  # OpenVINO: read, compiled and run once in a worker first, then in-process
    precision: str | None = None  # OpenVINO's inference precision; None: ONNX Runtime runs the graph's own types

    def tables(self) -> list[Table]:
        nodes = ", ".join(f"{p}: {n}" for p, n in self.node_providers.items()) if self.node_providers else "-"
        where = " and the round trip to its worker" if self.contained else ""
        overview = Table(f"Run {Path(self.model).name}", ["property", "value"], [
            ["inputs", self.inputs_from],
            ["providers", " > ".join(self.providers)],
            ["nodes per provider", nodes],
            ["rows", self.rows], ["batches", _batches_text(self.batches, self.batch_size, self.rows)],
            ["time", f"{self.seconds:.3f} s ({self.inference_seconds:.3f} s in ONNX Runtime{where}, {fmt_num(self.rows_per_second)} rows/s)"],
            ["written to", self.output_file or "-"],
            ["contained", f"yes (worker process, {self.timeout_s:g} s per batch, memory limit)" if self.contained else ("no: one rehearsal run in a worker first" if self.rehearsed else "no (--trust)")],
        ])
        outs = Table("Outputs", ["name", "dtype", "shape", "min", "max", "mean", "non-finite"], [
            [o.name, o.dtype, "[" + ", ".join(map(str, o.shape)) + "]", o.min, o.max, o.mean, o.non_finite] for o in self.outputs
        ])
        return [overview, outs]


# ---------------------------------------------------------------- output writers

class _Sink:
    """Receives output batches and writes them to ``tmp`` (the atomic temp file)."""

    def __init__(self, tmp: Path, names: list[str]) -> None:
        self.tmp = tmp
        self.names = names

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _as_array(name: str, value: object, fmt: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputError(
            f"output {name!r} is a {type(value).__name__} (a sequence/map such as ZipMap), which cannot be written to {fmt}; "
            "re-export without ZipMap",
        )
    return value


class _NpzSink(_Sink):
    """Each numeric output streams to a raw spill file; the .npz is assembled at the end by
    writing an .npy header with the final row count followed by the raw bytes, so memory stays
    at one batch whatever the data set size. String outputs (labels) are kept in memory."""

    def __init__(self, tmp: Path, names: list[str], single: bool = False) -> None:
        super().__init__(tmp, names)
        self.single = single
        self.spill = Path(tempfile.mkdtemp(prefix=".onnxkit-run-", dir=tmp.parent))
        self.meta: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self.rows: dict[str, int] = {}
        self.strings: dict[str, list[np.ndarray]] = {}
        self.members = safe_member_names(names)

    def notes(self) -> list[str]:
        return [] if self.single else renaming_notes(self.members)

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        for name in self.names:
            arr = _as_array(name, outputs[name], "NumPy files")
            if arr.ndim == 0:
                arr = arr.reshape(1)
            if arr.dtype.kind in "UO":
                self.strings.setdefault(name, []).append(arr.astype(np.str_))
                continue
            dtype, rest = arr.dtype, tuple(arr.shape[1:])
            if name in self.meta and self.meta[name] != (dtype, rest):
                prev = self.meta[name]
                raise InputError(
                    f"output {name!r} changes shape between batches ({prev[0].name}[N,{','.join(map(str, prev[1]))}] then "
                    f"{dtype.name}[N,{','.join(map(str, rest))}]) and cannot be stacked into one array; use --batch-size "
                    "large enough for one batch, or .npz per batch",
                )
            self.meta.setdefault(name, (dtype, rest))
            self.rows[name] = self.rows.get(name, 0) + arr.shape[0]
            with open(self.spill / f"{list(self.meta).index(name)}.raw", "ab") as fh:
                fh.write(np.ascontiguousarray(arr).tobytes())

    def _write_npy(self, fh, name: str) -> None:
        if name in self.strings:
            np.lib.format.write_array(fh, np.concatenate(self.strings[name]), allow_pickle=False)
            return
        dtype, rest = self.meta[name]
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (self.rows[name], *rest)}
        np.lib.format.write_array_header_2_0(fh, header)
        with open(self.spill / f"{list(self.meta).index(name)}.raw", "rb") as raw:
            shutil.copyfileobj(raw, fh, 1 << 20)

    def close(self) -> None:
        try:
            if self.single:
                with open(self.tmp, "wb") as fh:
                    self._write_npy(fh, self.names[0])
            else:
                with zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for name in self.names:
                        with zf.open(f"{self.members[name]}.npy", "w", force_zip64=True) as fh:
                            self._write_npy(fh, name)
        finally:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.spill, ignore_errors=True)


def _columns(name: str, arr: np.ndarray) -> dict[str, np.ndarray]:
    """One table column per output element: y[N] -> y; y[N,3] -> y_0..y_2; y[N,2,2] -> y_0_0.."""
    if arr.ndim <= 1:
        return {name: arr.reshape(-1)}
    flat = arr.reshape(arr.shape[0], -1)
    if flat.shape[1] == 1:
        return {name: flat[:, 0]}
    idx = np.ndindex(*arr.shape[1:])
    return {f"{name}_{'_'.join(map(str, i))}": flat[:, k] for k, i in enumerate(idx)}


class _TableSink(_Sink):
    def __init__(self, tmp: Path, names: list[str], kind: str) -> None:
        super().__init__(tmp, names)
        self.kind = kind
        self.writer = None
        self.header: list[str] | None = None
        self.pending: list = []
        self.pending_rows = 0

    def _frame(self, outputs: dict[str, np.ndarray]):
        import pandas as pd

        cols: dict[str, np.ndarray] = {}
        for name in self.names:
            for col, values in _columns(name, _as_array(name, outputs[name], self.kind.upper())).items():
                if col in cols:  # y[N] beside y_0[N, 2]: one would silently replace the other
                    raise InputError(f"two outputs map to the table column {col!r} ({', '.join(self.names)}); "
                                     "write .npz instead")
                cols[col] = values
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise InputError(f"outputs have different row counts ({', '.join(self.names)}); write them to .npz instead")
        frame = pd.DataFrame(cols)
        if self.header is None:
            self.header = list(frame.columns)
        elif list(frame.columns) != self.header:
            raise InputError("the outputs' shapes change between batches, so they do not fit one table; write .npz instead")
        return frame

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        frame = self._frame(outputs)
        if self.kind == "csv":
            first = self.writer is None
            frame.to_csv(self.tmp, mode="w" if first else "a", header=first, index=False)
            self.writer = True
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.writer is None:
                self.writer = pq.ParquetWriter(str(self.tmp), table.schema)
            # Small batches would make tiny row groups (slow to read back); gather up to a
            # bounded number of rows first.
            self.pending.append(table)
            self.pending_rows += table.num_rows
            if self.pending_rows >= PARQUET_ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
            self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        if self.kind == "parquet" and self.writer is not None:
            self._flush()
            self.writer.close()

    def abort(self) -> None:
        if self.kind == "parquet" and self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # closing a half-written file while unwinding; it is deleted next
                pass


def make_sink(tmp: Path, dest: Path, names: list[str]) -> _Sink:
    suffix = dest.suffix.lower()
    if suffix == ".npz":
        return _NpzSink(tmp, names)
    if suffix == ".npy":
        if len(names) != 1:
            raise UsageError(f"the model has {len(names)} outputs ({', '.join(names)}); .npy holds one array, use .npz")
        return _NpzSink(tmp, names, single=True)
    if suffix == ".csv":
        return _TableSink(tmp, names, "csv")
    return _TableSink(tmp, names, "parquet")


# ---------------------------------------------------------------- statistics

class _Stats:
    def __init__(self) -> None:
        self.by_name: dict[str, OutputSummary] = {}
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def add(self, outputs: dict[str, object]) -> None:
        for name, value in outputs.items():
            if not isinstance(value, np.ndarray):
                self.by_name.setdefault(name, OutputSummary(name, type(value).__name__, []))
                continue
            s = self.by_name.get(name)
            if s is None:
                s = self.by_name[name] = OutputSummary(name, value.dtype.name, list(value.shape))
            elif value.ndim:
                s.shape[0] += value.shape[0]
                # A dim that differs between batches is reported as -1 (varies).
                s.shape[1:] = [a if a == b else -1 for a, b in zip(s.shape[1:], value.shape[1:])]
            if value.dtype.kind in "fiub" and value.size:
                v = value.astype(np.float64, copy=False)
                finite = np.isfinite(v)
                s.non_finite += int(v.size - finite.sum())
                if finite.any():
                    fv = v[finite]
                    s.min = float(fv.min()) if s.min is None else min(s.min, float(fv.min()))
                    s.max = float(fv.max()) if s.max is None else max(s.max, float(fv.max()))
                    self._sum[name] = self._sum.get(name, 0.0) + float(fv.sum())
                    self._count[name] = self._count.get(name, 0) + int(fv.size)
                    s.mean = self._sum[name] / self._count[name]

    def summaries(self, order: list[str]) -> list[OutputSummary]:
        return [self.by_name[n] for n in order if n in self.by_name]


# ---------------------------------------------------------------- the run

def fallback_notes(requested: list[str] | None, chosen: list[str]) -> list[str]:
    """What --fallback dropped, for the result (the log warning alone scrolls away)."""
    from onnxkit.runtime.session import resolve_provider

    dropped = [p for p in (resolve_provider(n) for n in requested or []) if p not in chosen]
    return [f"{', '.join(dropped)} not available; fell back to {', '.join(chosen)} (--fallback)"] if dropped else []


def fixed_first_dim_output(model, specs) -> tuple[str, int] | None:
    """An output whose first dimension is a fixed number while every input's batch dimension is
    free does not hold one row per input row (a transpose, a pooled summary), though a batch
    with that many rows would not show it. 1 is left alone: a model exported at batch 1 whose
    inputs were made free later keeps [1, ...] on outputs that do follow the batch."""
    if not specs or not all(s.shape and not isinstance(s.shape[0], int) for s in specs):
        return None
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim if out.type.HasField("tensor_type") else []
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1:
            return out.name, dims[0].dim_value
    return None


def _check_table_output(out_path: Path | None, model, specs) -> None:
    if out_path is None or out_path.suffix.lower() not in (".csv", ".parquet"):
        return
    fixed = fixed_first_dim_output(model, specs)
    if fixed is not None:
        raise UsageError(f"output {fixed[0]!r} has a fixed first dimension of {fixed[1]} while the inputs' batch "
                         "dimension is free: it is not one row per input row, so it cannot be written as table rows; "
                         "write .npz instead")


def _check_rows_line_up(outs: dict, rows: int, sink: _Sink, batch_index: int) -> None:
    """A written row must be its input row's answer: an output whose first axis is not the batch
    (a transpose, a reduction over rows) would put other numbers under that row."""
    for name, value in outs.items():
        arr = np.asarray(value)
        if arr.ndim and arr.shape[0] != rows and (isinstance(sink, _TableSink) or batch_index > 0):
            raise InputError(f"output {name!r} has {arr.shape[0]} rows for a batch of {rows} input rows: it is not one "
                             "row per input row, so its rows cannot be written beside the inputs'; run it without -o "
                             "or in one batch to .npz")


def _run_batches(session, batches: Iterator[Feeds], result: RunResult, stats: _Stats, specs, *, data, out_path: Path | None,
                 progress: Progress | None, total: int | None) -> None:
    unbatched = one_sample_per_batch(specs)

    def loop(sink: _Sink | None) -> None:
        for i, feeds in enumerate(batches):
            where = f"{Path(data).name} (batch {i + 1})" if data is not None else "random inputs"
            check_feeds(feeds, specs, where=where)
            t0 = time.perf_counter()
            outs = session.run(feeds)
            result.inference_seconds += time.perf_counter() - t0
            if i == 0:
                result.node_providers = session.node_providers()
            result.batches += 1
            first_input = next(iter(feeds.values()), None)  # None: a model without inputs runs once
            result.rows += int(first_input.shape[0]) if first_input is not None and first_input.ndim and not unbatched else 1
            stats.add(outs)
            if sink is not None:
                if first_input is not None and first_input.ndim and not unbatched:
                    _check_rows_line_up(outs, int(first_input.shape[0]), sink, i)
                sink.add(outs)
            if progress is not None:
                progress(result.rows, total)

    if out_path is None:
        loop(None)
        return
    with atomic_output(out_path, suffix=out_path.suffix) as tmp:
        sink = make_sink(tmp, out_path, session.output_names)
        result.notes.extend(sink.notes())
        try:
            loop(sink)
            sink.close()
        except BaseException:
            sink.abort()
            raise
    result.output_file = str(out_path)


def _batches_text(batches: int, size: int, rows: int) -> str:
    text = f"{batches} batch{'es' if batches != 1 else ''} of {size:,} row{'s' if size != 1 else ''}"
    return text + (" (the last one shorter)" if batches > 1 and rows < batches * size else "")


def run_model(
    model: str | Path,
    *,
    providers: list[str] | None = None,
    provider_options: list[str] | None = None,
    fallback: bool = False,
    data: str | Path | None = None,
    inputs: list[str] | None = None,
    output: str | Path | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    trust: bool = False,
    timeout: float | None = None,
    progress: Progress | None = None,
    precision: str | None = None,
) -> RunResult:
    """Run ``model`` with ONNX Runtime and optionally write the outputs; see ``onnxkit run``."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.operations.quantize.target import notes_for_model
    from onnxkit.foundation.spec import merge_specs, parse_specs, specs_from_onnx
    from onnxkit.runtime.providers import check_active, parse_provider_options, plan_providers, provider_options_for
    from onnxkit.runtime.contained import open_session
    from onnxkit.operations.validate import fixed_batch
    from onnxkit.runtime.session import resolve_provider

    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be a positive integer")
    out_path: Path | None = None
    if output is not None:
        out_path = Path(output)
        if out_path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise UsageError(f"unsupported output file {out_path.name}; use one of {', '.join(OUTPUT_SUFFIXES)}")
        check_output_path(out_path, model, data)
    user_specs = parse_specs(inputs)
    from onnxkit.runtime import openvino_session

    use_openvino = openvino_session.wanted(providers)  # the openvino package, not an ORT provider
    if use_openvino and provider_options:
        raise UsageError("--provider-option is for ONNX Runtime providers; --provider openvino takes --precision")
    chosen = ["CPUExecutionProvider"] if use_openvino else plan_providers(providers, fallback=fallback)
    options = provider_options_for(chosen, parse_provider_options(provider_options, chosen))
    loaded = load_onnx(model, load_external=False, trust=trust)
    specs = merge_specs(specs_from_onnx(loaded.model), user_specs)
    _check_table_output(out_path, loaded.model, specs)
    del loaded  # the session reads the file itself; do not hold a second copy of the weights
    if data is not None and not specs:
        raise UsageError(f"{Path(model).name} takes no inputs; run it without --data")
    if data is not None:
        source = open_data(data, specs)
        size = batch_size or fixed_batch(specs) or DEFAULT_DATA_BATCH
        batches: Iterator[Feeds] = source.batches(size)
        total: int | None = source.count_rows()
    else:
        size = batch_size or 1
        batches = iter([random_feeds(specs, batch=size, seed=seed)])
        total = size
    # An untrusted model runs in a worker process, every batch under the timeout and a memory
    # limit; --trust runs it here, for models the user vouches for.
    if use_openvino:
        import itertools

        first = next(batches, None)
        batches = itertools.chain([first] if first is not None else [], batches)
        session = openvino_session.open_openvino(model, trust=trust, first_feeds=first, precision=precision, threads=threads)
    else:
        session = open_session(model, trust=trust, providers=chosen, provider_options=options, threads=threads,
                               profile=True, timeout_s=timeout)
    try:
        requested = [resolve_provider(n) for n in providers] if providers else ["CPUExecutionProvider"]
        result = RunResult(model=str(model), providers_requested=requested, providers=list(session.providers))
        if use_openvino:
            result.providers_requested = list(session.providers)
            result.precision = session.precision
            result.notes.extend(openvino_session.precision_notes(session, precision))
        else:
            result.notes.extend(check_active(chosen, session.providers, fallback=fallback))
            result.notes.extend(fallback_notes(providers, chosen))
            if precision not in (None, "f32"):
                result.notes.append(f"--precision {precision} ignored: ONNX Runtime runs the graph's own types")
        result.notes.extend(notes_for_model(model))  # a model made for VNNI on a CPU without it
        result.inputs_from = (str(data) if data is not None else f"random (seed {seed})" if specs
                              else "none (the model takes no inputs)")
        result.batch_size = 1 if one_sample_per_batch(specs) else size
        result.contained = not trust and not use_openvino
        result.rehearsed = use_openvino and not trust
        result.timeout_s = None if trust or use_openvino else session.timeout_s
        stats = _Stats()
        started = time.perf_counter()
        _run_batches(session, batches, result, stats, specs, data=data, out_path=out_path, progress=progress, total=total)
    finally:
        # Ends ORT profiling (and removes its file) even when the first batch never ran.
        session.node_providers()
        session.close()
    result.seconds = time.perf_counter() - started
    if data is not None:
        result.notes.extend(source.notes)  # dtype casts done to fit the model's inputs
    result.rows_per_second = result.rows / result.inference_seconds if result.inference_seconds > 0 else 0.0
    result.outputs = stats.summaries(session.output_names)
    return result


__all__ = ["RunResult", "OutputSummary", "run_model", "OUTPUT_SUFFIXES"]
