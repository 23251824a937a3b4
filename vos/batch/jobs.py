"""Job lists of a batch: one job per video (a video file or a frame folder, its first-frame mask, its name), read
from a DAVIS 2017 root, a YouTube-VOS root or a CSV manifest. Nothing is decoded here."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from vos.errors import DatasetError, InputError


@dataclass(frozen=True)
class Job:
    """One video of a batch: ``name`` (unique: its run folder is ``<out>/<name>``), ``video`` (file or frame
    folder), ``mask`` (first-frame mask file), ``frames`` (the video's length when the layout says, else None)."""

    name: str
    video: str
    mask: str
    frames: Optional[int] = None


def davis_jobs(root, set: str = "val", resolution: str = "480p",
               sequences: Optional[Sequence[str]] = None) -> List[Job]:
    """One job per sequence of ``ImageSets/2017/<set>.txt`` (or of ``sequences``): its JPEG folder and the
    annotation of its first frame."""
    from vos.datasets.davis import DavisDataset

    dataset = DavisDataset(root, set=set, resolution=resolution, only=sequences)
    jobs = []
    for seq in dataset:
        if seq.image_dir is None:
            raise DatasetError(f"{Path(root) / 'JPEGImages' / resolution / seq.name}: frames missing: tracking needs "
                               f"the JPEG frames of every sequence")
        jobs.append(Job(seq.name, str(seq.image_dir), str(seq.annotation_path(0)), len(seq)))
    return jobs


def youtube_vos_jobs(root, split: str = "valid") -> List[Job]:
    """One job per video of a YouTube-VOS root (``<root>/<split>/JPEGImages/<video>/*.jpg`` and
    ``<root>/<split>/Annotations/<video>/*.png``): the frames from the first annotated one on, and that annotation.

    YouTube-VOS also introduces objects on later frames (their first annotation there); a job tracks the objects of
    its first annotation only.
    """
    base = Path(root) / split
    images, annotations = base / "JPEGImages", base / "Annotations"
    for folder in (images, annotations):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: YouTube-VOS folder not found (expected <root>/{split}/JPEGImages and "
                               f"<root>/{split}/Annotations)")
    jobs = []
    for video in sorted(p for p in images.iterdir() if p.is_dir()):
        masks = sorted((annotations / video.name).glob("*.png"))
        if not masks:
            raise DatasetError(f"{annotations / video.name}: no annotation PNG for video {video.name!r}")
        frames = sorted(video.glob("*.jpg"))
        if not (video / f"{masks[0].stem}.jpg").is_file():
            raise DatasetError(f"{video}: no frame {masks[0].stem}.jpg for the first annotation {masks[0]}")
        start = [f.stem for f in frames].index(masks[0].stem)
        jobs.append(Job(video.name, str(video), str(masks[0]), len(frames) - start))
    if not jobs:
        raise DatasetError(f"{images}: no video folder")
    return jobs


CSV_COLUMNS = ("name", "video", "mask")


def csv_jobs(path) -> List[Job]:
    """Jobs of a CSV manifest with the header ``name,video,mask`` (relative paths are relative to the CSV file)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = tuple(rows[0].keys()) if rows else None
    except OSError as err:
        raise InputError(f"{path}: cannot read the job list ({err.strerror or err})") from None
    if not rows or not set(CSV_COLUMNS) <= set(header or ()):
        raise InputError(f"{path}: a job list needs a header {','.join(CSV_COLUMNS)} and at least one row")
    jobs = []
    for number, row in enumerate(rows, start=2):
        if not all((row.get(c) or "").strip() for c in CSV_COLUMNS):
            raise InputError(f"{path}:{number}: every row needs a name, a video and a mask")
        video, mask = (str(p if p.is_absolute() else path.parent / p) for p in (Path(row["video"]), Path(row["mask"])))
        jobs.append(Job(row["name"].strip(), video, mask))
    return check_names(jobs, str(path))


def check_names(jobs: List[Job], source: str) -> List[Job]:
    """Job names must be unique folder names."""
    seen = set()
    for job in jobs:
        if job.name in seen or "/" in job.name or job.name in ("", ".", ".."):
            raise InputError(f"{source}: job name {job.name!r} is {'repeated' if job.name in seen else 'not a folder name'}")
        seen.add(job.name)
    return jobs
