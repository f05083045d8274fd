"""The Ray side of ``--engine ray``: connecting to (or starting) a cluster, sizing the actors,
and a pool that runs keyed tasks on them and survives a worker being killed.

This is the only module that imports ``ray``, and only when a command runs with
``--engine ray`` (``ray`` is the optional extra ``onnxkit[ray]``).

Why Ray core actors and not Ray Data's ``map_batches``: every task here is an explicit
``(shard, start, stop)`` row range with a key, so the driver knows exactly which rows each
result holds. When a worker dies, the tasks it had in flight (and only those) are sent to a
replacement actor, and a result is accepted once per key: rows can neither be lost nor
counted twice, and the check before publishing is a comparison of keys and counts. Ray
Data's retries and block boundaries are internal to it, so the same guarantee would have
to be reconstructed from the output. The actor classes themselves (``ray_actors``) are plain
Python; they are wrapped with ``ray.remote`` here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from onnxkit.errors import EnvironmentProblem, Interrupted, MissingDependency, UsageError

log = logging.getLogger(__name__)

# A local cluster shares the machine with everything else: its object store (shared memory
# holding task results until the driver takes them) is bounded, and spills to disk beyond.
LOCAL_OBJECT_STORE_BYTES = 300 << 20
# Tasks queued per actor: one running, one waiting, so an actor never idles between tasks.
IN_FLIGHT_PER_ACTOR = 2
# Replacement actors started per worker over a run before a dying cluster is given up on.
REPLACEMENTS_PER_WORKER = 3
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """``ray``, or exit 3 naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] != "ray":
            raise MissingDependency(f"ray (needs {exc.name})", "ray") from exc
        raise MissingDependency("ray", "ray") from exc
    return ray


@dataclass
class ClusterPlan:
    """Where the work runs and how it is split; goes into results as is."""

    address: str
    started_here: bool
    cores: int  # CPUs the cluster offers Ray
    workers: int  # actors
    threads: int  # ONNX Runtime intra-op threads per actor
    chosen: str = ""  # one line: why these numbers

    def describe(self) -> str:
        return (f"{self.workers} actor{'s' if self.workers != 1 else ''} x {self.threads} ONNX Runtime "
                f"thread{'s' if self.threads != 1 else ''} on {self.cores} CPU{'s' if self.cores != 1 else ''} "
                f"({self.address})")


def plan_workers(cores: int, workers: int | None, threads: int | None) -> tuple[int, int, str]:
    """Actors and threads per actor with actors x threads <= cores: by default one actor per
    core and one thread each (Ray scales by actors; ORT's threads would only fight them)."""
    if cores < 1:
        raise EnvironmentProblem("the Ray cluster offers no CPUs to run actors on")
    if workers is not None and workers < 1:
        raise UsageError("--workers must be a positive integer")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be a positive integer")
    if workers is not None and workers > cores:
        raise UsageError(f"--workers {workers} is more than the {cores} CPU(s) the Ray cluster offers; "
                         "each actor needs at least one")
    if workers is not None and threads is not None and workers * threads > cores:
        raise UsageError(f"--workers {workers} x --threads {threads} is more than the {cores} CPU(s) of the Ray cluster")
    if workers is None:
        workers = max(1, cores // (threads or 1))
        why = f"one actor per {'core' if not threads else f'{threads} cores'}"
    else:
        why = f"--workers {workers}"
    if threads is None:
        threads = max(1, cores // workers)
        why += f", {threads} thread(s) each so that actors x threads <= {cores} cores"
    else:
        why += f", --threads {threads}"
    return workers, threads, why


class RayCluster:
    """A connection to a Ray cluster for the length of a ``with`` block.

    ``address`` None starts a private local Ray on this machine (no dashboard, token
    authentication, bounded object store, its logs kept out of the terminal) and stops it at the end; a Ray
    already initialised in this process (tests, notebooks) is used as it is. ``auto`` or
    ``ray://host:port`` joins an existing cluster, which is left running."""

    def __init__(self, address: str | None = None, *, workers: int | None = None, threads: int | None = None,
                 num_cpus: int | None = None) -> None:
        self.address = address
        self.want_workers = workers
        self.want_threads = threads
        self.num_cpus = num_cpus
        self.ray: Any = None
        self.plan: ClusterPlan | None = None
        self._started = False
        self._stdout = contextlib.ExitStack()

    def __enter__(self) -> RayCluster:
        # Ray prints its notices (a worker died, a task failed) on stdout from a thread of its
        # own, where --json promises one document: they go to stderr while the cluster is in use.
        self._stdout.enter_context(contextlib.redirect_stdout(sys.stderr))
        try:
            return self._enter()
        except BaseException:
            self._stdout.close()
            raise

    def _enter(self) -> RayCluster:
        self.ray = ray = import_ray()
        label = self.address
        try:
            if self.address is None and ray.is_initialized():
                label = "the Ray already running in this process"
            elif self.address is None:
                # Ray 2.60's servers listen on every interface whatever address they are given
                # (127.0.0.1 is replaced by the node's address), so a local Ray cannot be kept to
                # loopback; what keeps others out is Ray's token authentication, which ray.init
                # turns on for a new local cluster unless RAY_AUTH_MODE says otherwise.
                ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=log.isEnabledFor(logging.DEBUG), logging_level=logging.ERROR,
                         configure_logging=True)
                self._started = True
                label = "local Ray started for this run"
            else:
                _check_reachable(self.address)
                ray.init(address=self.address, log_to_driver=log.isEnabledFor(logging.DEBUG), logging_level=logging.ERROR)
                self._started = True  # our connection (not the cluster): disconnect at the end
        except KeyboardInterrupt:
            self._shutdown()
            raise Interrupted() from None
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            self._shutdown()
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise EnvironmentProblem(f"cannot start or reach {where}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                                     hint="check --address (auto, HOST:6379 or ray://HOST:10001) and that `ray status` answers there; "
                                     "a cluster started with token authentication (`ray start`'s default) also needs "
                                     "RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN) here") from None
        try:
            cores = int(ray.cluster_resources().get("CPU", 0))
            workers, threads, why = plan_workers(cores, self.want_workers, self.want_threads)
        except BaseException:
            self._shutdown()
            raise
        self.plan = ClusterPlan(label, self.address is None and self._started, cores, workers, threads, why)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._shutdown()
        finally:
            self._stdout.close()

    def _shutdown(self) -> None:
        if self._started and self.ray is not None:
            self._started = False
            try:
                self.ray.shutdown()
            except Exception:  # already gone while unwinding from another error
                log.debug("ray.shutdown failed", exc_info=True)

    def pool(self, actor_cls: type, *args: Any, **kwargs: Any) -> ActorPool:
        """``plan.workers`` actors of ``actor_cls(*args, **kwargs)``, ``plan.threads`` CPUs each."""
        assert self.plan is not None, "use RayCluster in a with block"
        return ActorPool(self.ray, actor_cls, args, kwargs, workers=self.plan.workers, cpus=self.plan.threads)


@dataclass
class _Worker:
    index: int
    handle: Any
    in_flight: set = field(default_factory=set)
    pid: int | None = None
    node: str | None = None


class ActorPool:
    """Runs keyed tasks on a set of actors; a task's result is yielded once per key.

    Actor classes follow one protocol (see ``ray_actors``): ``ready()`` returns the reply
    of the constructor, ``where()`` returns ``(pid, node)``, and every task method returns a
    reply ``("ok", payload)`` or an error reply that :func:`raise_reply` turns into the
    matching onnxkit error. Errors are replies, not exceptions, so an exception reaching
    the driver is always Ray's own: the actor died."""

    def __init__(self, ray: Any, actor_cls: type, args: tuple, kwargs: dict, *, workers: int, cpus: int) -> None:
        self.ray = ray
        self._remote = ray.remote(actor_cls).options(num_cpus=cpus, max_restarts=0, max_task_retries=0)
        self._args, self._kwargs = args, kwargs
        self.workers: list[_Worker] = []
        self.replaced = 0  # actors that died and were replaced
        self.retried = 0  # tasks sent again after their actor died
        self._budget = REPLACEMENTS_PER_WORKER * workers
        self._next_index = 0
        try:
            for _ in range(workers):
                self.workers.append(self._start())
            self._wait_ready(range(workers))
        except BaseException:
            self.close()
            raise

    def _start(self) -> _Worker:
        w = _Worker(self._next_index, self._remote.remote(*self._args, **self._kwargs))
        self._next_index += 1
        return w

    def _wait_ready(self, indices: Iterable[int]) -> None:
        """Wait for ``self.workers[i]`` to have made its session; one that died while starting
        (killed, out of memory, its node lost) is replaced, in place, within the run's
        replacement budget (in place: close() must reach the replacement too)."""
        for i in indices:
            w = self.workers[i]
            while True:
                try:
                    reply = self.ray.get(w.handle.ready.remote())
                    w.pid, w.node = self.ray.get(w.handle.where.remote())
                except KeyboardInterrupt:
                    raise Interrupted() from None
                except self.ray.exceptions.RayActorError as exc:
                    w = self.workers[i] = self._replace_dead(w, exc)
                    continue
                except self.ray.exceptions.RayError as exc:
                    raise EnvironmentProblem(f"a Ray actor could not start: {_ray_reason(exc)}") from None
                raise_reply(reply)
                break

    def _replace_dead(self, worker: _Worker, exc: Exception) -> _Worker:
        why = _ray_reason(exc)
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(worker.handle)
        if self.replaced >= self._budget:
            raise EnvironmentProblem(f"Ray actors kept dying ({self.replaced} replaced, last: {why}); giving up")
        log.warning("Ray actor %d died while starting (%s); starting another", worker.index, why)
        self.replaced += 1
        return self._start()

    def map(self, method: str, tasks: Iterable[tuple[Hashable, tuple]],
            on_retry: Callable[[Hashable, str], None] | None = None) -> Iterator[tuple[Hashable, Any, _Worker]]:
        """Run ``actor.method(*args)`` for every ``(key, args)``; yield ``(key, payload, worker)``
        as results arrive (in any order). A task whose actor dies is sent to a replacement."""
        queue = list(tasks)[::-1]  # popped from the end: first task first
        pending: dict[Any, tuple[Hashable, tuple, _Worker]] = {}
        done: set = set()
        try:
            while queue or pending:
                self._fill(method, queue, pending)
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    key, args, worker = pending.pop(ref)
                    worker.in_flight.discard(ref)
                    try:
                        reply = self.ray.get(ref)
                    except self.ray.exceptions.RayError as exc:
                        errors = self.ray.exceptions
                        if isinstance(exc, errors.RayTaskError) and not isinstance(exc, errors.RayActorError):
                            # An exception escaped a task method, which returns its errors: our bug.
                            raise RuntimeError(f"Ray task {method} failed: {_ray_reason(exc)}") from None
                        # The actor died, or its result was lost with a node: run the task again.
                        self._lost(worker, exc, queue, pending, on_retry, (key, args))
                        continue
                    if key in done:  # cannot happen: a key is in flight once; refuse to count rows twice
                        raise RuntimeError(f"task {key!r} answered twice")
                    raise_reply(reply)
                    done.add(key)
                    yield key, reply[1], worker
        except KeyboardInterrupt:
            self._cancel(pending)
            raise Interrupted() from None
        except BaseException:
            self._cancel(pending)
            raise

    def _fill(self, method: str, queue: list, pending: dict) -> None:
        for w in sorted(self.workers, key=lambda w: len(w.in_flight)):
            while queue and len(w.in_flight) < IN_FLIGHT_PER_ACTOR:
                key, args = queue.pop()
                ref = getattr(w.handle, method).remote(*args)
                w.in_flight.add(ref)
                pending[ref] = (key, args, w)

    def _lost(self, worker: _Worker, exc: Exception, queue: list, pending: dict,
              on_retry: Callable[[Hashable, str], None] | None, task: tuple) -> None:
        """``worker`` died: requeue its task(s) at the front and start a replacement."""
        requeue = [task]
        for ref in list(worker.in_flight):
            key, args, _ = pending.pop(ref)
            requeue.append((key, args))
        worker.in_flight.clear()
        why = _ray_reason(exc)
        log.warning("Ray actor %d (pid %s) died (%s); %d task(s) sent to a new actor", worker.index, worker.pid, why,
                    len(requeue))
        for key, _ in requeue:
            if on_retry is not None:
                on_retry(key, why)
        queue.extend(sorted(requeue, key=lambda t: str(t[0]), reverse=True))
        self.retried += len(requeue)
        if worker in self.workers:
            self.workers.remove(worker)
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(worker.handle)
        if self.replaced >= self._budget:
            raise EnvironmentProblem(f"Ray actors kept dying ({self.replaced} replaced, last: {why}); giving up")
        self.replaced += 1
        self.workers.append(self._start())
        self._wait_ready([len(self.workers) - 1])

    def _cancel(self, pending: dict) -> None:
        for ref in list(pending):
            with contextlib.suppress(Exception):  # already gone
                self.ray.cancel(ref)
        self.close()

    def pids(self) -> list[int | None]:
        return [w.pid for w in self.workers]

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(w.handle)
        self.workers = []


def raise_reply(reply: tuple) -> None:
    """Turn an actor's error reply into the onnxkit error it stands for."""
    kind = reply[0]
    if kind == "ok":
        return
    if kind == "onnxkit":
        from onnxkit.foundation.sandbox import _rebuild_error

        raise _rebuild_error(*reply[1])
    if kind == "interrupted":
        raise Interrupted()
    name, text, tb = reply[1]
    log.debug("Ray actor failed:\n%s", tb)
    raise RuntimeError(f"Ray actor: {name}: {text}")


def _ray_reason(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:  # Ray's messages open with a generic line; the cause is further down
        if "SIGKILL" in ln or "killed" in ln.lower() or "exit" in ln.lower():
            return ln[:300]
    return lines[0][:300] if lines else type(exc).__name__


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable address for minutes without a word; a plain TCP connect
    says in seconds whether anything listens there."""
    import socket

    if address == "auto":
        return  # Ray reads the address of the cluster started on this machine and fails fast without one
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: expected auto, HOST:PORT (the head's GCS port, 6379 by default) "
                         "or ray://HOST:PORT (the Ray client port, 10001 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise EnvironmentProblem(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                                 hint="start one with `ray start --head` there, or check the host and port") from None


__all__ = ["ActorPool", "ClusterPlan", "RayCluster", "import_ray", "plan_workers", "raise_reply",
           "LOCAL_OBJECT_STORE_BYTES"]
