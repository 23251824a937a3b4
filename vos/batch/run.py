"""Track many videos into one folder: each job through the run layer into ``<out>/<name>/``, resumable, with a
summary of every video's fate.

A job whose run folder is complete is skipped; a partial one resumes after its last frame; a job that fails (a
corrupt file, a bad mask, out of memory) is recorded with its error and the others go on. The summary
(``<out>/batch_summary.csv`` and ``.json``: video, status, frames, seconds, error) is written atomically after every
job. Engines: :func:`run_local` (one job after another in this process) and ``vos.batch.ray`` (Ray actors), both
reached through :func:`vos.batch.engines.run_engine`.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from vos.batch.jobs import Job
from vos.errors import BatchFailed, OutputError, VosError
from vos.io.atomic import atomic_write
from vos.io.paths import is_file
from vos.runs import RUN_FILE, ModelOptions, RunFolder, TrackRun, is_complete, track
from vos.runs.options import ReferencePhoto, tracking_settings
from vos.trackers import TrackerOptions

SUMMARY = "batch_summary"
STATUSES = ("skipped", "done", "failed")


@dataclass(frozen=True)
class BatchRun:
    """How every job of a batch is tracked: into ``out/<name>/`` with ``tracker`` and ``model``; ``max_frames`` per
    video; ``rle`` / ``overlay``: also write ``out/<name>.jsonl`` / ``out/<name>.mp4``; ``references``: photos of
    objects to find in every video (besides each job's own); ``redetect``: each job's first-frame objects become
    references too (:class:`~vos.runs.TrackRun`)."""

    out: Path
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    max_frames: Optional[int] = None
    rle: bool = False
    overlay: bool = False
    references: Tuple[ReferencePhoto, ...] = ()
    redetect: bool = False

    def job_run(self, job: Job) -> TrackRun:
        """The run layer's options for one job (``resume`` when its folder already holds a run)."""
        out = Path(self.out) / job.name
        return TrackRun(video=job.video, mask=job.mask, out=out, resume=is_file(out / RUN_FILE, "job run", OutputError),
                        overlay=Path(self.out) / f"{job.name}.mp4" if self.overlay else None,
                        rle=Path(self.out) / f"{job.name}.jsonl" if self.rle else None, max_frames=self.max_frames,
                        tracker=self.tracker, model=self.model, references=job.references + self.references,
                        redetect=self.redetect, entries=job.entries, object_pngs=job.object_pngs)

    def settings(self) -> dict:
        """What every job shares (the batch folder's guard)."""
        return {**tracking_settings(self.tracker, self.model), "max_frames": self.max_frames, "rle": self.rle,
                "overlay": self.overlay, "references": [r.settings() for r in self.references],
                "redetect": self.redetect}


@dataclass
class JobResult:
    """The fate of one job: ``status`` ``skipped`` (already complete), ``done`` or ``failed`` (with ``error``);
    ``frames`` complete in its folder; ``seconds`` spent on it in this invocation."""

    video: str
    status: str
    frames: int
    seconds: float
    error: str = ""


def run_job(job: Job, batch: BatchRun, model) -> JobResult:
    """Track one job with an already loaded ``model``; every failure becomes a ``failed`` result."""
    from vos.runs import completed_frames

    out = Path(batch.out) / job.name
    if is_complete(out):
        return JobResult(job.name, "skipped", completed_frames(out), 0.0)
    start = time.perf_counter()
    try:
        summary = track(batch.job_run(job), model=model)
    except (VosError, MemoryError, RuntimeError) as err:   # RuntimeError: torch's out-of-memory and decoder faults
        return JobResult(job.name, "failed", completed_frames(out), time.perf_counter() - start,
                         f"{type(err).__name__}: {err}" if not isinstance(err, VosError) else str(err))
    return JobResult(job.name, "done", summary.frames, time.perf_counter() - start)


class Summary:
    """``<out>/batch_summary.csv`` and ``.json``, rewritten atomically whenever a job finishes."""

    def __init__(self, out: Path, jobs: Iterable[Job]):
        self.out = Path(out)
        self.results: Dict[str, Optional[JobResult]] = {job.name: None for job in jobs}

    def add(self, result: JobResult) -> None:
        self.results[result.video] = result
        rows = [asdict(r) for r in self.results.values() if r is not None]
        pending = [name for name, r in self.results.items() if r is None]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(asdict(result)))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda f: f.write(text.getvalue()), binary=False)
        doc = {"videos": rows, "pending": pending, "counts": self.counts()}
        atomic_write(self.out / f"{SUMMARY}.json", lambda f: f.write(json.dumps(doc, indent=1) + "\n"), binary=False)

    @property
    def path(self) -> Path:
        """The summary's CSV file."""
        return self.out / f"{SUMMARY}.csv"

    def counts(self) -> Dict[str, int]:
        """Finished jobs per status (:data:`STATUSES`)."""
        finished = [r for r in self.results.values() if r is not None]
        return {status: sum(r.status == status for r in finished) for status in STATUSES}

    def check(self) -> None:
        """Raise :class:`~vos.errors.BatchFailed` if a job failed: how many of all, the first one's error and where
        every job's fate is."""
        failed = [r for r in self.results.values() if r is not None and r.status == "failed"]
        if failed:
            raise BatchFailed(f"{len(failed)} of {len(self.results)} video(s) failed, e.g. {failed[0].video}: "
                              f"{' '.join(failed[0].error.split())} (every video's fate in {self.path})")

    @property
    def ok(self) -> bool:
        """Every job finished and none failed."""
        return all(r is not None and r.status != "failed" for r in self.results.values())


ResultFn = Callable[[JobResult], None]


def prepare(jobs: List[Job], batch: BatchRun) -> Summary:
    """Guard the batch folder (same tracker and model settings as an earlier invocation) and start the summary."""
    folder = RunFolder(Path(batch.out), "batch", "continue")
    settings = batch.settings()
    folder.plan(settings)
    folder.start(settings)
    folder.commit()
    return Summary(batch.out, jobs)


def pending(jobs: List[Job], batch: BatchRun) -> List[Job]:
    """The jobs whose run folder is not complete yet."""
    return [job for job in jobs if not is_complete(Path(batch.out) / job.name)]


def run_local(jobs: List[Job], batch: BatchRun, model=None, on_result: Optional[ResultFn] = None) -> Summary:
    """Every job, one after another in this process, the model loaded once (before anything is written, and only
    if some job has work left)."""
    if model is None and pending(jobs, batch):
        model = batch.model.load()
    summary = prepare(jobs, batch)
    for job in jobs:
        result = run_job(job, batch, model)
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return summary

