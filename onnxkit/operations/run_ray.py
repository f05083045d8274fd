"""``onnxkit run --engine ray``: score a sharded data set with ONNX Runtime in Ray actors.

The driver (this process) lists the shards, cuts them into row ranges, hands the ranges to
actors (``runtime.ray_cluster`` / ``runtime.ray_actors``) and writes each range's outputs as
one ``part-NNNNN.parquet`` with an int64 ``row_id`` column, in a temporary folder beside
``-o DIR``. Before that folder is renamed to DIR, every range must have answered exactly
once with its number of rows and the parts on disk must hold exactly the data set's row
count. A shortfall there cannot come from the user's files (each range's row count was
checked when it arrived), so it is reported as an onnxkit bug (exit 70) and nothing is
published; a failing batch, shard or model is exit 2 naming the shard; Ctrl-C is exit 130.
Either way the temporary folder is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxkit.errors import Interrupted, UsageError
from onnxkit.operations.run import OutputSummary, _as_array, _columns, _Stats
from onnxkit.results import Result, Table, fmt_num

Progress = Callable[[int, int | None], None]
DEFAULT_RAY_BATCH = 256
# A task is this many batches of one shard: large enough that Ray's per-task cost (a few ms)
# is small against the work, small enough that a task's outputs stay well inside the object
# store and that a killed worker costs little to redo.
BATCHES_PER_TASK = 16
MAX_TASK_ROWS = 65_536
# Leading underscore: Parquet readers (pyarrow, pandas, Spark) skip such files, so
# pandas.read_parquet(DIR) reads the parts alone.
MANIFEST = "_manifest.json"


@dataclass
class WorkerRows:
    worker: int
    pid: int | None
    node: str | None
    rows: int = 0
    tasks: int = 0


@dataclass
class RayRunResult(Result):
    command: str = "run"
    engine: str = "ray"
    model: str = ""
    model_sha256: str = ""
    inputs_from: str = ""
    shards: int = 0
    rows: int = 0
    tasks: int = 0
    batch_size: int = 0
    address: str = ""
    cores: int = 0
    workers: int = 0
    threads_per_worker: int = 0
    threads_chosen: str = ""
    seconds: float = 0.0
    startup_seconds: float = 0.0  # Ray start (or connect) and the actors' sessions
    read_seconds: float = 0.0  # summed over actors
    inference_seconds: float = 0.0  # summed over actors (for an untrusted model: with the pipe to its worker)
    write_seconds: float = 0.0  # the driver, converting and writing parts
    rows_per_second: float = 0.0  # rows / (seconds - startup_seconds)
    per_worker: list[WorkerRows] = field(default_factory=list)
    actors_replaced: int = 0
    tasks_retried: int = 0
    contained: bool = False
    timeout_s: float | None = None
    outputs: list[OutputSummary] = field(default_factory=list)
    output_dir: str | None = None
    parts: int = 0
    columns: list[str] = field(default_factory=list)

    def headline(self) -> str:
        """The one line of --quiet."""
        line = (f"{self.rows:,} rows on {self.workers} Ray actor{'s' if self.workers != 1 else ''}, "
                f"{fmt_num(self.rows_per_second)} rows/s")
        return line + (f", written to {self.output_dir}" if self.output_dir else "")

    def tables(self) -> list[Table]:
        scoring = self.seconds - self.startup_seconds
        overview = Table(f"Run {Path(self.model).name} on Ray", ["property", "value"], [
            ["inputs", f"{self.inputs_from} ({self.shards} shard{'s' if self.shards != 1 else ''})"],
            ["rows", f"{self.rows:,} in {self.tasks} task(s) of batches of {self.batch_size:,}"],
            ["cluster", f"{self.address}: {self.cores} CPU(s)"],
            ["actors", f"{self.workers} x {self.threads_per_worker} ONNX Runtime thread(s) ({self.threads_chosen})"],
            ["time", f"{self.seconds:.2f} s: {self.startup_seconds:.2f} s start-up, {scoring:.2f} s scoring "
                     f"({fmt_num(self.rows_per_second)} rows/s)"],
            ["actor time", f"{self.read_seconds:.2f} s reading, {self.inference_seconds:.2f} s in ONNX Runtime"
                           + ("" if not self.contained else " and the pipe to its worker")],
            ["driver time", f"{self.write_seconds:.2f} s writing parts"],
            ["per worker", ", ".join(f"#{w.worker}: {w.rows:,}" for w in self.per_worker) or "-"],
            ["faults", f"{self.actors_replaced} actor(s) replaced, {self.tasks_retried} task(s) retried"],
            ["written to", f"{self.output_dir} ({self.parts} part(s) + {MANIFEST})" if self.output_dir else "-"],
            ["contained", f"yes (worker process per actor, {self.timeout_s:g} s per batch, memory limit)"
                          if self.contained else "no (--trust)"],
        ])
        outs = Table("Outputs", ["name", "dtype", "shape", "min", "max", "mean", "non-finite"], [
            [o.name, o.dtype, "[" + ", ".join(map(str, o.shape)) + "]", o.min, o.max, o.mean, o.non_finite]
            for o in self.outputs])
        return [overview, outs]


def _check_output_dir(out: Path, data: str) -> None:
    if out.exists() or out.is_symlink():
        raise UsageError(f"output folder {out} already exists; --engine ray never overwrites: give a new folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        from onnxkit.errors import EnvironmentProblem

        raise EnvironmentProblem(f"output folder's parent does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        from onnxkit.errors import EnvironmentProblem

        raise EnvironmentProblem(f"output folder's parent is not writable: {parent}")
    data_dir = Path(data)
    if data_dir.is_dir() and out.resolve().is_relative_to(data_dir.resolve()):
        raise UsageError(f"output folder {out} lies inside the data folder {data_dir}; write it elsewhere")


def _refuse_fixed_first_dims(model, specs) -> None:
    """Given row ids, such an output's values would be written against rows they do not belong to."""
    from onnxkit.operations.run import fixed_first_dim_output

    fixed = fixed_first_dim_output(model, specs)
    if fixed is not None:
        raise UsageError(f"output {fixed[0]!r} has a fixed first dimension of {fixed[1]} while the inputs' "
                         "batch dimension is free: it is not one row per input row, so --engine ray cannot give it "
                         "row ids; run it with --engine local")


def _task_rows(batch_size: int) -> int:
    return max(batch_size, min(batch_size * BATCHES_PER_TASK, MAX_TASK_ROWS))


class _Parts:
    """Writes one parquet part per task into the temporary folder, columns as local ``run``
    writes them (y[N,3] -> y_0, y_1, y_2), with ``row_id`` first."""

    def __init__(self, folder: Path | None, names: list[str]) -> None:
        self.folder = folder
        self.names = names
        self.columns: list[str] | None = None
        self.rows = 0
        self.files: list[Path] = []

    def write(self, index: int, first_row: int, outputs: dict[str, np.ndarray]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from onnxkit.errors import InputError

        n = next(iter(outputs.values())).shape[0]
        cols: dict[str, np.ndarray] = {"row_id": np.arange(first_row, first_row + n, dtype=np.int64)}
        owner = {"row_id": None}
        for name in self.names:
            for col, values in _columns(name, _as_array(name, outputs[name], "Parquet")).items():
                if col in owner and self.folder is not None:  # it would replace the first column of that name
                    raise InputError(_collision(col, owner[col], name))
                owner[col] = name
                cols[col] = values
        if self.columns is None:
            self.columns = list(cols)
        elif list(cols) != self.columns:
            raise InputError("the outputs' shapes change between batches, so they do not fit one table; "
                             "use --engine local with an .npz output")
        self.rows += n
        if self.folder is None:
            return
        path = self.folder / f"part-{index:05d}.parquet"
        try:
            pq.write_table(pa.table(cols), path)
        except OSError as exc:  # disk full, quota, folder removed: the machine's, not the data's
            from onnxkit.errors import EnvironmentProblem

            raise EnvironmentProblem(f"cannot write {path.name} into {self.folder}: {exc.strerror or exc}; "
                                     "nothing was published") from None
        self.files.append(path)


def _collision(column: str, first: str | None, second: str) -> str:
    if first is None:
        return (f"output {second!r} gives a column named {column!r}, the name of the row id column of --engine ray's "
                "parts; rename that output (or use --engine local)")
    return (f"outputs {first!r} and {second!r} both give a column named {column!r} (an output of several values "
            "per row is written as NAME_0, NAME_1, ...); rename one of them")


def _verify(parts: _Parts, seen: dict, expected: list, total: int) -> None:
    """The last gate before publishing: every range once, with its rows, and the files agree."""
    missing = [k for k in expected if k not in seen]
    if missing or len(seen) != len(expected) or parts.rows != total:
        raise RuntimeError(f"Ray run lost or duplicated rows: {len(seen)} of {len(expected)} ranges answered, "
                           f"{parts.rows:,} rows for {total:,}; nothing was written")
    if parts.folder is not None:
        import pyarrow.parquet as pq

        on_disk = sum(pq.ParquetFile(p).metadata.num_rows for p in parts.files)
        if on_disk != total or len(parts.files) != len(expected):
            raise RuntimeError(f"Ray run wrote {on_disk:,} rows in {len(parts.files)} parts for {total:,} rows in "
                               f"{len(expected)} ranges; nothing was published")


def _manifest(result: RayRunResult, shard_set, parts: _Parts) -> dict:
    return {
        "format": "onnxkit-ray-run/1",
        "model": result.model, "model_sha256": result.model_sha256,
        "input_shards": [{"path": str(s.path), "rows": s.rows, "first_row_id": s.offset} for s in shard_set.shards],
        "rows": parts.rows, "columns": parts.columns or [],
        "parts": [p.name for p in parts.files],
        "engine": "ray", "workers": result.workers, "threads_per_worker": result.threads_per_worker,
        "batch_size": result.batch_size,
    }


def _publish(tmp: Path, out: Path) -> None:
    if out.exists() or out.is_symlink():  # appeared while we were scoring: still never overwrite
        raise UsageError(f"output folder {out} appeared during the run; nothing was overwritten")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private; give it a normal folder's mode
    os.rename(tmp, out)


def run_model_ray(
    model: str | Path,
    *,
    data: str | Path,
    output: str | Path | None = None,
    inputs: list[str] | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    trust: bool = False,
    timeout: float | None = None,
    progress: Progress | None = None,
    num_cpus: int | None = None,
) -> RayRunResult:
    """Score ``data`` (shards) with ``model`` in Ray actors; see ``onnxkit run --engine ray``."""
    from onnxkit.foundation.files import sha256_file
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.foundation.shards import list_shards
    from onnxkit.foundation.spec import merge_specs, parse_specs, specs_from_onnx
    from onnxkit.runtime.contained import DEFAULT_BATCH_TIMEOUT_S
    from onnxkit.runtime.ray_cluster import RayCluster, import_ray

    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be a positive integer")
    for flag, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer")
    if timeout is not None and not (timeout > 0 and np.isfinite(timeout)):
        raise UsageError("--timeout must be a positive number of seconds")
    out = Path(output) if output is not None else None
    if out is not None:
        _check_output_dir(out, str(data))
    user_specs = parse_specs(inputs)
    loaded = load_onnx(model, load_external=False, trust=trust)
    specs = merge_specs(specs_from_onnx(loaded.model), user_specs)
    if not specs:
        raise UsageError(f"{Path(model).name} takes no inputs; there is nothing to score with --data")
    _refuse_fixed_first_dims(loaded.model, specs)
    del loaded
    shard_set = list_shards(data)
    import_ray()  # exit 3 before any work when the extra is missing
    from onnxkit.operations.validate import fixed_batch

    # A model without a batch dimension takes batches of exactly its fixed size, as locally.
    size = batch_size or fixed_batch(specs) or DEFAULT_RAY_BATCH
    result = RayRunResult(model=str(model), model_sha256=sha256_file(model), inputs_from=str(data),
                          shards=len(shard_set.shards), batch_size=size, contained=not trust,
                          timeout_s=None if trust else (timeout or DEFAULT_BATCH_TIMEOUT_S))
    ranges = shard_set.ranges(_task_rows(size))
    result.tasks = len(ranges)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)) if out is not None else None
    started = time.perf_counter()
    try:
        with RayCluster(address, workers=workers, threads=threads, num_cpus=num_cpus) as cluster:
            manifest = _score(cluster, model, specs, shard_set, ranges, size, trust, timeout, tmp, result, progress,
                              started)
        result.seconds = time.perf_counter() - started
        if tmp is not None:
            from onnxkit.foundation.files import write_text_atomic

            write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
            _publish(tmp, out)
            result.output_dir = str(out)
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    scoring = result.seconds - result.startup_seconds
    result.rows_per_second = result.rows / scoring if scoring > 0 else 0.0
    return result


def _score(cluster, model, specs, shard_set, ranges, size, trust, timeout, tmp, result, progress, started) -> dict:
    """Run every range on the actors, write the parts, fill ``result``; returns the manifest."""
    from onnxkit.runtime.ray_actors import OnnxScorer

    plan = cluster.plan
    result.address, result.cores = plan.address, plan.cores
    result.workers, result.threads_per_worker, result.threads_chosen = plan.workers, plan.threads, plan.chosen
    # Actors resolve paths from their own working folder (on another node, not this one).
    pool = cluster.pool(OnnxScorer, str(Path(model).absolute()), trust=trust, specs=specs, threads=plan.threads, timeout_s=timeout,
                        batch_size=size)
    try:
        names = cluster.ray.get(pool.workers[0].handle.output_names.remote())
        result.startup_seconds = time.perf_counter() - started
        parts = _Parts(tmp, names)
        stats = _Stats()
        seen: dict = {}
        by_worker: dict[int, WorkerRows] = {}
        notes: list[str] = []
        position = {k: i for i, k in enumerate(ranges)}  # part-NNNNN follows row_id order
        absolute = [dataclasses.replace(s, path=s.path.absolute()) for s in shard_set.shards]
        tasks = [(k, (absolute[k[0]], k[1], k[2])) for k in ranges]
        for key, payload, worker in pool.map("score", tasks):
            shard = shard_set.shards[key[0]]
            seen[key] = payload["rows"]
            t0 = time.perf_counter()
            parts.write(position[key], shard.offset + key[1], payload["outputs"])
            stats.add(payload["outputs"])
            result.write_seconds += time.perf_counter() - t0
            result.read_seconds += payload["read_s"]
            result.inference_seconds += payload["infer_s"]
            notes.extend(n for n in payload["notes"] if n not in notes)
            w = by_worker.setdefault(worker.index, WorkerRows(worker.index, worker.pid, worker.node))
            w.rows += payload["rows"]
            w.tasks += 1
            if progress is not None:
                progress(parts.rows, shard_set.rows)
        _verify(parts, seen, ranges, shard_set.rows)
        from onnxkit.foundation.shards import summarize_notes

        result.notes.extend(summarize_notes(notes))  # dtype casts done to fit the model's inputs
        result.notes.extend(shard_set.notes())
        result.rows, result.parts, result.columns = parts.rows, len(parts.files), parts.columns or []
        result.outputs = stats.summaries(names)
        result.per_worker = [by_worker[i] for i in sorted(by_worker)]
        result.actors_replaced, result.tasks_retried = pool.replaced, pool.retried
        return _manifest(result, shard_set, parts)
    finally:
        with contextlib.suppress(Exception):
            pool.close()


__all__ = ["RayRunResult", "run_model_ray"]
