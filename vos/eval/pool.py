"""Evaluating videos in parallel: :func:`ordered_map`, shared by every benchmark's evaluator."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Job = TypeVar("Job")
Out = TypeVar("Out")


def ordered_map(fn: Callable[[Job], Out], jobs: Sequence[Job], workers: int) -> Iterator[Out]:
    """``map(fn, jobs)``: in this process for one worker (or one job), else in a pool of ``workers`` processes;
    results keep the order of ``jobs``. Jobs not started yet are cancelled when the iteration is abandoned."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        try:
            yield from pool.map(fn, jobs)
        finally:
            pool.shutdown(cancel_futures=True)
