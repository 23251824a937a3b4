"""The Ray engine of a batch: the same jobs, outputs and summary as :func:`vos.batch.run_local`, tracked by Ray actors
in parallel across videos.

Each actor loads the model once and tracks one whole video at a time through :func:`vos.batch.run.run_job`, so its
run folder, PNGs and RLE are byte for byte those of the local engine run with as many torch threads; an actor's
torch intra-op threads are set from the CPUs it reserves, so actors never oversubscribe the cores. (The image
encoder gives the same bits at any thread count; a few later CPU kernels round differently with another one, which
can move a mask pixel where a logit is within rounding of 0: seen with vit_b random weights and with the tiny test
model at 1 vs 2 threads.) A complete run folder is
skipped (no cluster is started when every folder is complete), a partial one resumes, a video that fails is
recorded and the others go on. An actor that dies mid-video (``ray.kill``, the OOM killer, a lost node) is replaced
and its video resumed by the new actor, up to ``attempts`` times per video; then the video is recorded failed with
the reason. The summary is rewritten as each video finishes, in the job order.

Cluster: ``address=None`` starts a local cluster on 127.0.0.1 with exactly ``workers × cpus_per_worker`` CPUs (no
dashboard, worker logs kept in Ray's session folder) and stops it at the end; an address (``auto``,
``host:port``, ``ray://host:10001``) connects to a running cluster and leaves it running. A driver that already
called ``ray.init`` keeps its connection. The workers import ``vos``: on a cluster of other machines, vos (the same
version, with its model extras) must be installed on every worker node, and the input and output paths must be the
same shared folders there. Ray is imported only when this engine runs (``pip install 'vos[ray]'``).

The actors are named ``vos-batch-<n>`` in the driver's Ray namespace (``ray.util.list_named_actors()`` lists them).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, Iterator, List, Optional, Tuple

from vos.batch.jobs import Job
from vos.batch.run import BatchRun, JobResult, ResultFn, Summary, pending, prepare, run_job
from vos.errors import ClusterError, InputError, VosError
from vos.machine import usable_cpus

ACTOR_PREFIX = "vos-batch"
#: Object store of a local cluster: the actors only return small results.
LOCAL_OBJECT_STORE = 100 * 1024 ** 2


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray batch runs: ``address`` (None: a local cluster of this machine), ``workers`` (actors,
    each tracking one video at a time), ``cpus_per_worker`` (default: the machine's cores shared out on a local
    cluster, 1 on a running one; also the actor's torch threads, at least 1), ``gpus_per_worker`` (may be a
    fraction), ``attempts`` (actors a video may lose before it is recorded failed)."""

    address: Optional[str] = None
    workers: int = 1
    cpus_per_worker: Optional[float] = None
    gpus_per_worker: float = 0.0
    attempts: int = 3

    def check(self) -> None:
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise InputError(f"--cpus-per-worker must be positive, got {self.cpus_per_worker}")
        if not self.gpus_per_worker >= 0:
            raise InputError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.attempts < 1:
            raise InputError(f"--attempts must be at least 1, got {self.attempts}")

    @property
    def cpus(self) -> float:
        """CPUs each actor reserves."""
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        return max(1, usable_cpus() // self.workers) if self.address is None else 1

    @property
    def threads(self) -> int:
        """torch intra-op threads of each actor."""
        return max(1, int(self.cpus))


class _Worker:
    """The body of a Ray actor: one model, loaded on first use, tracking one job per call."""

    def __init__(self, batch: BatchRun, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.batch, self.model = batch, None

    def load(self) -> None:
        if self.model is None:
            self.model = self.batch.model.load()

    def track(self, job: Job) -> JobResult:
        self.load()
        return run_job(job, self.batch, self.model)


def run_ray(jobs: List[Job], batch: BatchRun, address: Optional[str] = None, workers: int = 1,
            cpus_per_worker: Optional[float] = None, gpus_per_worker: float = 0.0, attempts: int = 3,
            on_result: Optional[ResultFn] = None) -> Summary:
    """Every job on Ray actors (see the module's description and :class:`RayOptions`); ``on_result`` is called in
    this process with each video's result as it finishes. The model is loaded by every actor before anything is
    written (a bad checkpoint fails the batch as with the local engine), and only if some job has work left."""
    options = RayOptions(address, workers, cpus_per_worker, gpus_per_worker, attempts)
    options.check()
    todo = pending(jobs, batch)
    if not todo:                                          # nothing to track: no cluster, no model
        return _report_complete(prepare(jobs, batch), jobs, batch, on_result)
    with _cluster(options) as ray:
        _check_resources(ray, options)
        pool = _Pool(ray, batch, options, min(options.workers, len(todo)))
        try:
            pool.load()
            summary = _report_complete(prepare(jobs, batch), [job for job in jobs if job not in todo], batch,
                                       on_result)
            _Dispatch(pool, todo, summary, on_result).run()
        finally:
            pool.close()
    return summary


def _report_complete(summary: Summary, complete: List[Job], batch: BatchRun, on_result: Optional[ResultFn]) -> Summary:
    """The ``skipped`` results of jobs whose run folder is complete (``run_job`` needs no model for them)."""
    for job in complete:
        _report(summary, run_job(job, batch, None), on_result)
    return summary


def _report(summary: Summary, result: JobResult, on_result: Optional[ResultFn]) -> None:
    summary.add(result)
    if on_result is not None:
        on_result(result)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("the Ray engine needs Ray: pip install 'vos[ray]'") from None
    return ray


@contextlib.contextmanager
def _cluster(options: RayOptions) -> Iterator:
    """Ray connected for the block: a new local cluster (stopped afterwards), the cluster at ``options.address``
    (disconnected afterwards, left running), or the caller's own connection (left as it is)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(**_init_args(options))
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:
        where = "start a local Ray cluster" if options.address is None else f"connect to Ray at {options.address}"
        raise ClusterError(f"cannot {where} ({_first_line(err)})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _init_args(options: RayOptions) -> dict:
    quiet = {"logging_level": "error", "log_to_driver": False}
    if options.address is not None:
        return {"address": options.address, **quiet}
    package_root = str(Path(__file__).resolve().parents[2])      # the workers import this very vos
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    gpus = math.ceil(options.workers * options.gpus_per_worker)
    return {"address": "local", "num_cpus": math.ceil(options.workers * options.cpus),
            "num_gpus": gpus or None, "include_dashboard": False, "_node_ip_address": "127.0.0.1",
            "object_store_memory": LOCAL_OBJECT_STORE, "runtime_env": {"env_vars": {"PYTHONPATH": path}}, **quiet}


def _check_resources(ray, options: RayOptions) -> None:
    """A cluster too small for every actor would leave some waiting for ever."""
    total = ray.cluster_resources()
    for name, each, flag in (("CPU", options.cpus, "--cpus-per-worker"), ("GPU", options.gpus_per_worker,
                                                                           "--gpus-per-worker")):
        need = options.workers * each
        if need > total.get(name, 0) + 1e-9:
            raise ClusterError(f"the Ray cluster has {total.get(name, 0):g} {name}(s); --workers {options.workers} "
                               f"x {flag} {each:g} needs {need:g}")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


class _Pool:
    """The actors of one batch, created and replaced under the names ``vos-batch-<n>``."""

    def __init__(self, ray, batch: BatchRun, options: RayOptions, size: int):
        self.ray, self.batch, self.options = ray, batch, options
        self.actor_class = ray.remote(_Worker)
        self.created = 0
        self.actors = [self.new() for _ in range(size)]

    def new(self):
        actor = self.actor_class.options(name=f"{ACTOR_PREFIX}-{self.created}", num_cpus=self.options.cpus,
                                         num_gpus=self.options.gpus_per_worker, max_restarts=0)
        actor = actor.remote(self.batch, self.options.threads)
        self.created += 1
        return actor

    def load(self) -> None:
        """Every actor's model loaded; a model that cannot load is the batch's error, as with the local engine."""
        exceptions = self.ray.exceptions
        try:
            self.ray.get([actor.load.remote() for actor in self.actors])
        except exceptions.RayTaskError as err:
            if isinstance(err.cause, VosError):
                raise err.cause from None
            raise ClusterError(f"a Ray worker cannot load the model ({_first_line(err.cause)})") from None
        except exceptions.RayError as err:
            raise ClusterError(f"a Ray worker died while loading the model ({_first_line(err)})") from None

    def replace(self, actor):
        """A new actor instead of a dead one."""
        self.actors.remove(actor)
        self.ray.kill(actor)
        fresh = self.new()
        self.actors.append(fresh)
        return fresh

    def retire(self, actor) -> None:
        """An actor with nothing left to do."""
        self.actors.remove(actor)
        self.ray.kill(actor)

    def close(self, wait: float = 60.0) -> None:
        """Kill the remaining actors and wait (up to ``wait`` s) until the cluster no longer lists any actor of this
        pool: ``ray.kill`` is asynchronous, and a batch that follows on the same cluster reuses the names. Nothing to
        do once Ray is disconnected (a Ray call would start a new local cluster)."""
        if not self.ray.is_initialized():
            return
        for actor in list(self.actors):
            self.retire(actor)
        names = {f"{ACTOR_PREFIX}-{n}" for n in range(self.created)}
        deadline = time.monotonic() + wait
        while names & set(self.ray.util.list_named_actors()) and time.monotonic() < deadline:
            time.sleep(0.05)


class _Dispatch:
    """The jobs handed out to idle actors, one at a time each; results collected as they finish."""

    def __init__(self, pool: _Pool, todo: List[Job], summary: Summary, on_result: Optional[ResultFn]):
        self.pool, self.summary, self.on_result = pool, summary, on_result
        self.queue: Deque[Job] = deque(todo)
        self.running: Dict[object, Tuple[object, Job]] = {}
        self.deaths: Dict[str, int] = {}
        self.seconds: Dict[str, float] = {}
        self.started: Dict[str, float] = {}

    def run(self) -> None:
        for actor in list(self.pool.actors):
            self.submit(actor)
        while self.running:
            [ref], _ = self.pool.ray.wait(list(self.running), num_returns=1)
            actor, job = self.running.pop(ref)
            self.submit(self.collect(ref, actor, job))

    def submit(self, actor) -> None:
        if actor is None:
            return
        if not self.queue:
            self.pool.retire(actor)
            return
        job = self.queue.popleft()
        self.started[job.name] = time.perf_counter()
        self.running[actor.track.remote(job)] = (actor, job)

    def collect(self, ref, actor, job: Job):
        """The finished call's result reported (or its job queued again after a lost actor); returns the actor that
        takes the next job (None: no actor)."""
        exceptions = self.pool.ray.exceptions
        self.seconds[job.name] = self.seconds.get(job.name, 0.0) + time.perf_counter() - self.started[job.name]
        try:
            result = self.pool.ray.get(ref)
        except (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.OutOfMemoryError,
                exceptions.NodeDiedError) as err:
            return self.lost(actor, job, err)
        except exceptions.RayTaskError as err:       # an error run_job does not expect: the video fails, not the batch
            result = self.failed(job, f"{type(err.cause).__name__}: {_first_line(err.cause)}")
        _report(self.summary, result, self.on_result)
        return actor

    def lost(self, actor, job: Job, err: BaseException):
        """The actor died mid-video: a new one resumes the video first, unless it has used up its attempts."""
        self.deaths[job.name] = self.deaths.get(job.name, 0) + 1
        if self.deaths[job.name] < self.pool.options.attempts:
            self.queue.appendleft(job)
        else:
            _report(self.summary, self.failed(job, f"the Ray worker tracking it died {self.deaths[job.name]} "
                                                   f"time(s), last: {_first_line(err)}"), self.on_result)
        if not self.queue:
            self.pool.retire(actor)
            return None
        return self.pool.replace(actor)

    def failed(self, job: Job, error: str) -> JobResult:
        from vos.runs import completed_frames

        return JobResult(job.name, "failed", completed_frames(Path(self.pool.batch.out) / job.name),
                         self.seconds[job.name], error)
