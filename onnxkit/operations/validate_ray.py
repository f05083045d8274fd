"""``onnxkit validate SOURCE MODEL.onnx --data SHARDS --engine ray``: the comparison of a whole
data set, spread over Ray actors.

Each worker is a pair of actors: one runs the source (loaded as local validate loads it), the
other the ONNX model. Both read the same row range of the same shard; the source's outputs go
to the ONNX actor through Ray's object store (never through this process), which compares and
returns a :class:`~onnxkit.foundation.compare_merge.MergeableComparator` state. The states are
merged here in row order, and the verdict and report are built by the same code as a local
run's (``validate.build_result``): same schema, same figures.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.errors import EnvironmentProblem, Interrupted, UsageError
from onnxkit.foundation.compare import Tolerance
from onnxkit.operations.validate import ValidationResult

log = logging.getLogger(__name__)

DEFAULT_RAY_BATCH = 4096
# Row ranges queued per worker: one being compared, one being run by the source.
IN_FLIGHT_PER_WORKER = 2
# Times a worker's actors may be replaced (one died) before the run is given up.
REPLACEMENTS_PER_WORKER = 2


@dataclass
class RayValidateOptions:
    address: str | None = None
    workers: int | None = None
    batch_size: int = DEFAULT_RAY_BATCH


def check_ray_usage(*, data, samples, edge_cases: bool, localize: bool, save_outputs, load_outputs,
                    batch_size: int | None, providers=None, reference_providers=None, precision=None) -> None:
    """What --engine ray cannot do (yet), refused before anything starts."""
    if data is None:
        raise UsageError("--engine ray validates a data set: give --data FILE, FOLDER or GLOB of shards")
    refused = {"--samples": samples is not None, "--edge-cases": edge_cases, "--localize": localize,
               "--save-outputs": save_outputs is not None, "--load-outputs": load_outputs is not None,
               # the actors hold ONNX Runtime sessions; OpenVINO runs only in a local validate
               "--provider openvino": "openvino" in [str(p).split(":")[0].lower() for p in [*(providers or []), *(reference_providers or [])]],
               "--precision": precision is not None}
    bad = [flag for flag, given in refused.items() if given]
    if bad:
        raise UsageError(f"{', '.join(bad)} cannot be combined with --engine ray; run them with --engine local")
    if batch_size is not None and batch_size <= 0:
        raise UsageError("--batch-size must be a positive integer")


def validate_on_ray(
    source: str,
    model: str | Path,
    *,
    tolerance: Tolerance,
    options: Any,
    data: str | Path,
    ray_options: RayValidateOptions,
    providers: list[str] | None = None,
    reference_providers: list[str] | None = None,
    timeout: float | None = None,
    input_map: dict[str, str] | None = None,
    output_map: dict[str, str] | None = None,
    progress: Any = None,
) -> ValidationResult:
    """SOURCE against MODEL.onnx on every row of the shards in ``data``, on Ray."""
    from onnxkit.foundation.shards import list_shards
    from onnxkit.runtime.ray_cluster import RayCluster, import_ray

    if ray_options.batch_size <= 0:
        raise UsageError("--batch-size must be a positive integer")
    import_ray()  # a missing extra is exit 3 before any model is loaded
    shards = list_shards(data)  # an unreadable or empty shard: exit 2 naming it, before Ray starts
    # The actors' working folder is not this process's (another node, or a Ray started from
    # elsewhere): every path travels absolute.
    model, source, options, shards = _absolute(Path(model), source, options, shards)
    side = _prepare(source, model, options, providers, timeout, input_map, reference_providers)
    from onnxkit.operations.validate import fixed_batch

    # A model without a batch dimension takes batches of exactly its fixed size, as local
    # validate cuts them; a task then holds whole batches of it.
    fixed = fixed_batch(side.specs)
    ranges = shards.ranges(max(fixed, ray_options.batch_size // fixed * fixed) if fixed else ray_options.batch_size)

    t0 = time.perf_counter()
    # Ray prints its own notices (a worker died, and so on) on stdout, where --json promises
    # one document: they go to stderr while Ray runs.
    with contextlib.redirect_stdout(sys.stderr), RayCluster(ray_options.address, workers=ray_options.workers) as cluster:
        plan = cluster.plan
        run = _Run(cluster.ray, plan.workers, plan.threads, source, model, options, side, tolerance, providers,
                   reference_providers, timeout, input_map, output_map)
        started = time.perf_counter() - t0
        try:
            states, per_worker = run.compare(shards, ranges, progress)
        finally:
            run.close()
    seconds = time.perf_counter() - t0 - started
    return _result(states, shards, ranges, side, run, tolerance, model, plan, per_worker, (started, seconds), ray_options)


def _absolute(model: Path, source: str, options: Any, shards):
    import dataclasses

    def absolute(path: str) -> str:
        p = Path(path)
        if p.exists():
            return str(p.absolute())
        head, sep, tail = path.rpartition(":")  # a torch factory, FILE.py:function
        return f"{Path(head).absolute()}{sep}{tail}" if sep and head and Path(head).is_file() else path

    if dataclasses.is_dataclass(options):
        changes = {k: Path(absolute(str(v))) for k in ("weights", "sample") if getattr(options, k, None) is not None
                   for v in [getattr(options, k)]}
        options = dataclasses.replace(options, **changes) if changes else options
    moved = tuple(dataclasses.replace(s, path=s.path.absolute()) for s in shards.shards)
    return model.absolute(), absolute(str(source)), options, dataclasses.replace(shards, shards=moved)


def validate_stage_on_ray(cfg: Any, artifact: Path, tolerance: Tolerance) -> ValidationResult:
    """A pipeline validation stage with ``[validate] engine = "ray"``: the configured source
    against ``artifact`` on every row of ``validate.data``."""
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.frameworks.base import LoadOptions

    src, exp, v = cfg["source"], cfg["export"], cfg["validate"]
    options = LoadOptions(
        framework=src["framework"], trust=src["trust"], inputs=parse_specs(src["inputs"]), weights=src["weights"],
        signature=src["signature"], sample=src["sample"], exporter=exp["exporter"], opset=exp["opset"],
        zipmap=exp["zipmap"], random_weights=exp["random_weights"],
    )
    ray_options = RayValidateOptions(address=v["address"], workers=v["workers"],
                                     batch_size=v["batch_size"] or DEFAULT_RAY_BATCH)
    return validate_on_ray(str(src["path"]), artifact, tolerance=tolerance, options=options, data=v["data"],
                           ray_options=ray_options)


@dataclass
class _Sides:
    specs: list
    reference_name: str
    pairing_note: str | None
    label_outputs: tuple[str, ...]
    ordered_outputs: bool
    onnx_source: bool


def _prepare(source: str, model: Path, options, providers, timeout, input_map, reference_providers=None) -> _Sides:
    """Everything local validate checks before comparing, done here so that a refusal (an
    untrusted file, a missing input) exits as locally, before any Ray work starts."""
    from onnxkit.foundation import mapping
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.foundation.spec import merge_specs
    from onnxkit.operations.validate_files import _is_onnx_source, _load_reference_source, _paired, _session

    load_onnx(model, trust=options.trust, load_external=False)
    cand = _session(model, options, providers, timeout)
    try:
        specs = merge_specs(cand.input_specs, mapping.user_specs_for_model(options.inputs, cand.input_specs, input_map))
    finally:
        cand.close()
    if _is_onnx_source(str(source), options):
        load_onnx(source, trust=options.trust, load_external=False)
        ref = _session(source, options, reference_providers, timeout)
        try:
            mapping.check_user_spec_names(options.inputs, ref.input_specs, specs)
            _, note = _paired(ref.run, ref.input_specs, specs, input_map, False)
            name = f"{Path(source).name} on {ref.providers[0]}"  # as local validate names it
        finally:
            ref.close()
        return _Sides(specs, name, note, (), False, True)
    src = _load_reference_source(source, options, specs)
    ordered = src.framework == "torch"
    _, note = _paired(src.predict, src.input_specs, specs, input_map, ordered)
    return _Sides(specs, f"{src.framework} {Path(str(source)).name}", note, tuple(src.label_outputs or ()), ordered, False)


class _Run:
    """The actor pairs of one run and the loop that keeps them busy."""

    def __init__(self, ray, workers: int, threads: int, source, model: Path, options, side: _Sides, tolerance,
                 providers, reference_providers, timeout, input_map, output_map) -> None:
        self.ray = ray
        from onnxkit.operations.validate_ray_actors import OnnxCompareActor, SourceActor

        # The two actors of a pair take turns on a range (the source runs, then the ONNX model
        # and the comparison): each asks for half of the pair's CPUs.
        cpus = threads / 2
        self._src_cls = ray.remote(SourceActor).options(num_cpus=cpus, max_restarts=0, max_task_retries=0)
        self._onnx_cls = ray.remote(OnnxCompareActor).options(num_cpus=cpus, max_restarts=0, max_task_retries=0)
        kwargs = {"label_outputs": side.label_outputs, "output_map": output_map, "ordered_outputs": side.ordered_outputs}
        self._src_args = (str(source), options, side.specs, input_map, side.onnx_source, reference_providers, threads, timeout)
        self._onnx_args = (str(model), options, side.specs, providers, threads, timeout, tolerance, kwargs)
        self.pairs: list[tuple[Any, Any]] = []
        from onnxkit.operations.validate import fixed_batch

        self.fixed = fixed_batch(side.specs)  # rows per batch of a model without a batch dimension
        self.provider = ""
        self.replaced = 0
        self.retried = 0
        self._budget = REPLACEMENTS_PER_WORKER * workers
        try:
            for _ in range(workers):
                self.pairs.append(self._start_pair())
            self._wait_ready(range(workers))
        except BaseException:
            self.close()  # a Ray this run did not start keeps running: leave no actors on it
            raise

    def _start_pair(self) -> tuple[Any, Any]:
        return self._src_cls.remote(*self._src_args), self._onnx_cls.remote(*self._onnx_args)

    def _wait_ready(self, indices) -> None:
        """Wait for the pairs ``self.pairs[p]`` to have loaded their models; a pair that lost
        an actor while starting (killed, out of memory) is replaced in place, within the run's
        replacement budget."""
        from onnxkit.runtime.ray_cluster import raise_reply

        for p in indices:
            while True:
                try:
                    replies = self.ray.get([a.ready.remote() for a in self.pairs[p]])
                except KeyboardInterrupt:
                    raise Interrupted() from None
                except self.ray.exceptions.RayActorError as exc:
                    self._kill(self.pairs[p])
                    if self.replaced >= self._budget:
                        raise EnvironmentProblem(f"Ray actors kept dying ({self.replaced} replaced, last: "
                                                 f"{_reason(exc)}); giving up") from None
                    log.warning("a Ray actor died while starting (%s); starting another pair", _reason(exc))
                    self.replaced += 1
                    self.pairs[p] = self._start_pair()
                    continue
                except self.ray.exceptions.RayError as exc:
                    raise EnvironmentProblem(f"a Ray actor could not start: {_reason(exc)}") from None
                for reply in replies:
                    raise_reply(reply)
                self.provider = replies[1][1] or self.provider
                break

    def _kill(self, pair) -> None:
        for actor in pair:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass

    def compare(self, shards, ranges: list[tuple[int, int, int]], progress) -> tuple[list, dict[int, int]]:
        """Every range compared exactly once: its state, and rows compared per worker pid."""
        from onnxkit.runtime.ray_cluster import raise_reply

        queue = list(enumerate(ranges))[::-1]
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (range index, pair index)
        load = [0] * len(self.pairs)
        done: dict[int, Any] = {}
        per_worker: dict[int, int] = {}
        if progress is not None:
            progress.start(shards.rows)
        try:
            while queue or pending:
                for p in range(len(self.pairs)):
                    while queue and load[p] < IN_FLIGHT_PER_WORKER:
                        key, (i, a, b) = queue.pop()
                        src, onnx = self.pairs[p]
                        ref = src.reference.remote(shards.shards[i], a, b, self.fixed)
                        pending[onnx.compare.remote(shards.shards[i], a, b, ref, self.fixed)] = (key, p)
                        load[p] += 1
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                for obj in ready:
                    key, p = pending.pop(obj)
                    load[p] -= 1
                    try:
                        reply = self.ray.get(obj)
                    except self.ray.exceptions.RayActorError as exc:
                        self._replace(p, exc, pending, queue, ranges, load, key)
                        continue
                    except self.ray.exceptions.RayTaskError as exc:
                        raise RuntimeError(f"Ray validate task failed: {_reason(exc)}") from None
                    raise_reply(reply)
                    if key in done:
                        raise RuntimeError(f"row range {key} compared twice")
                    state, nonfinite, pid, notes = reply[1]
                    done[key] = (state, nonfinite, notes)
                    rows = ranges[key][2] - ranges[key][1]
                    per_worker[pid] = per_worker.get(pid, 0) + rows
                    if progress is not None:
                        progress.advance(rows)
        except KeyboardInterrupt:
            self._cancel(pending)
            raise Interrupted() from None
        except BaseException:
            self._cancel(pending)
            raise
        finally:
            if progress is not None:
                progress.stop()
        if sorted(done) != list(range(len(ranges))):
            raise RuntimeError(f"{len(ranges) - len(done)} row range(s) never came back")
        return [done[k] for k in range(len(ranges))], per_worker

    def _replace(self, p: int, exc: Exception, pending: dict, queue: list, ranges, load: list[int], key: int) -> None:
        """Pair ``p`` lost an actor: its ranges go back in the queue and a fresh pair takes its place."""
        lost = [key]
        for obj, (k, q) in list(pending.items()):
            if q == p:
                del pending[obj]
                lost.append(k)
        log.warning("a Ray actor died (%s); %d row range(s) sent to a new pair", _reason(exc), len(lost))
        load[p] = 0
        queue.extend((k, ranges[k]) for k in lost)
        queue.sort(key=lambda t: -t[0])  # popped from the end: the lowest range first
        self.retried += len(lost)
        self._kill(self.pairs[p])
        if self.replaced >= self._budget:
            raise EnvironmentProblem(f"Ray actors kept dying ({self.replaced} replaced, last: {_reason(exc)}); giving up")
        self.replaced += 1
        self.pairs[p] = self._start_pair()
        self._wait_ready([p])

    def _cancel(self, pending: dict) -> None:
        for obj in list(pending):
            try:
                self.ray.cancel(obj)
            except Exception:  # noqa: BLE001 - finished or gone meanwhile
                pass

    def close(self) -> None:
        actors = [a for pair in self.pairs for a in pair]
        try:
            self.ray.wait([a.close.remote() for a in actors], num_returns=len(actors), timeout=10)
        except Exception:  # noqa: BLE001 - a dead actor has nothing to close
            pass
        for a in actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.pairs = []


def _result(states, shards, ranges, side: _Sides, run: _Run, tolerance: Tolerance, model: Path, plan,
            per_worker: dict[int, int], timing: tuple[float, float], ray_options: RayValidateOptions) -> ValidationResult:
    from onnxkit.foundation.compare_merge import merge_all
    from onnxkit.operations.validate import build_result

    from onnxkit.foundation.shards import summarize_notes

    merged = merge_all(s for s, _, _ in states)
    if merged.row_count != shards.rows:
        raise RuntimeError(f"compared {merged.row_count} rows of {shards.rows}: refusing a partial verdict")
    nonfinite: set[str] = set()
    data_notes: list[str] = []
    for _, names, notes in states:
        nonfinite.update(names)
        data_notes.extend(n for n in notes if n not in data_notes)
    labels = [f"{shards.shards[i].path.name} rows {a}-{b - 1}" for i, a, b in ranges]
    result = build_result(merged, tolerance, side.reference_name, f"{model.name} on {run.provider}", labels,
                          nonfinite, summarize_notes(data_notes))
    if side.pairing_note:
        result.notes.insert(0, side.pairing_note)
    result.notes.extend(shards.notes())
    started, seconds = timing
    rate = shards.rows / seconds if seconds > 0 else 0.0
    counts = ", ".join(f"{n}" for _, n in sorted(per_worker.items()))
    result.notes.append(
        f"engine ray: {plan.describe()}; {plan.chosen}; {len(shards.shards)} shard(s), {len(ranges)} range(s) of at most "
        f"{ray_options.batch_size} rows; Ray and the actors ready in {started:.1f} s, then {shards.rows} rows compared in "
        f"{seconds:.1f} s ({rate:,.0f} rows/s); rows per worker process: {counts}" + (f"; {run.retried} range(s) retried after {run.replaced} actor(s) died" if run.retried else ""))
    return result


def _reason(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__


__all__ = ["DEFAULT_RAY_BATCH", "RayValidateOptions", "check_ray_usage", "validate_on_ray", "validate_stage_on_ray"]
