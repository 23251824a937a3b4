"""The choice of batch engine, above both engines: :func:`~vos.batch.run.run_local` (this process) and
:func:`~vos.batch.ray.run_ray` (Ray actors). Ray is imported only when its engine runs."""
from __future__ import annotations

from vos.batch import ENGINES
from vos.batch.jobs import Job
from vos.batch.run import BatchRun, ResultFn, Summary, run_local
from vos.errors import InputError


def run_engine(engine: str, jobs: list[Job], batch: BatchRun, ray=None,
               on_result: ResultFn | None = None) -> Summary:
    """Every job through ``engine`` (one of :data:`~vos.batch.ENGINES`); ``ray``: the
    :class:`~vos.batch.ray.RayOptions` of the Ray engine (default: its defaults)."""
    if engine not in ENGINES:
        raise InputError(f"unknown batch engine {engine!r} (engines: {', '.join(ENGINES)})")
    if engine == "local":
        return run_local(jobs, batch, on_result=on_result)
    from vos.batch.ray import RayOptions, run_ray

    ray = ray or RayOptions()
    return run_ray(jobs, batch, ray.address, ray.workers, ray.cpus_per_worker, ray.gpus_per_worker, ray.attempts,
                   on_result=on_result)
