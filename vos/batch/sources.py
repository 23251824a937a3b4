"""Where a batch's jobs come from: one dataset root, a CSV manifest or a list of videos (:class:`JobSource`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from vos.batch.jobs import Job, csv_jobs, davis_jobs, video_jobs, youtube_vos_jobs
from vos.errors import InputError

#: Dataset layouts whose jobs add each object on its own first annotated frame (:data:`vos.batch.benchmarks.JOBS`).
BENCHMARK_ROOTS = ("lvos", "mosev2", "sav")


@dataclass(frozen=True)
class JobSource:
    """Exactly one of: ``videos`` (files or frame folders without masks, each job named after its file), a dataset
    ``root`` of layout ``kind`` (``davis``, ``youtube``, ``lvos``, ``mosev2``, ``sav``) or a ``csv`` manifest.
    ``set``: DAVIS sequence list (default ``val``), LVOS split, SA-V video list; ``resolution`` and ``sequences``
    (a subset, in this order): DAVIS only; ``split``: the YouTube-VOS split folder."""

    videos: Tuple[str, ...] = ()
    kind: Optional[str] = None
    root: Optional[str] = None
    csv: Optional[str] = None
    set: Optional[str] = None
    resolution: str = "480p"
    sequences: Optional[Tuple[str, ...]] = None
    split: str = "valid"

    def jobs(self) -> List[Job]:
        """The jobs, in the order of the source (each layout's own errors for a malformed one)."""
        if self.sequences is not None and self.kind != "davis":
            raise InputError("--sequences is for --davis-root")
        if self.videos:
            return video_jobs(list(self.videos))
        if self.kind == "davis":
            return davis_jobs(self.root, set=self.set or "val", resolution=self.resolution,
                              sequences=None if self.sequences is None else list(self.sequences))
        if self.kind == "youtube":
            return youtube_vos_jobs(self.root, split=self.split)
        if self.kind in BENCHMARK_ROOTS:
            from vos.batch.benchmarks import JOBS

            return JOBS[self.kind](Path(self.root), self.set, None)
        return csv_jobs(self.csv)
