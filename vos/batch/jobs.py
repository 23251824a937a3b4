"""Job lists of a batch: one job per video (a video file or a frame folder, its first-frame mask and / or reference
photos, its name), read from a DAVIS 2017 root, a YouTube-VOS root, a CSV manifest or a list of videos. Nothing is
decoded here."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from vos.errors import DatasetError, InputError
from vos.io.paths import is_dir
from vos.io.video import image_files
from vos.runs.options import ObjectEntry, ReferencePhoto


@dataclass(frozen=True)
class Job:
    """One video of a batch: ``name`` (unique: its run folder is ``<out>/<name>``), ``video`` (file or frame
    folder), ``mask`` (first-frame mask file, or None), ``frames`` (the video's length when the layout says, else
    None), ``references`` (photos of objects to find in this video, besides the batch's own), ``entries`` (objects
    that enter on later frames: :class:`~vos.runs.options.ObjectEntry`), ``object_pngs`` (also each object's own
    mask PNGs, SA-V's layout)."""

    name: str
    video: str
    mask: Optional[str]
    frames: Optional[int] = None
    references: Tuple[ReferencePhoto, ...] = ()
    entries: Tuple[ObjectEntry, ...] = ()
    object_pngs: bool = False


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


def entry_job(name: str, frames: Path, starts: Sequence[Tuple[str, Path, Optional[int]]],
              object_pngs: bool = False) -> Job:
    """A job whose objects enter on their own first annotated frames (LVOS, YouTube-VOS, MOSE, SA-V): ``frames`` is
    the frame folder, ``starts`` the ``(frame name without extension, annotation file, object id)`` of each
    entry (id None: a label map whose ids not tracked yet enter there; an id: that object's binary mask). Frames
    before the first entry get empty label maps."""
    names = [f.stem for f in image_files(frames)]
    index = {stem: i for i, stem in enumerate(names)}
    entries = []
    for stem, annotation, obj_id in starts:
        if stem not in index:
            raise DatasetError(f"{annotation}: no frame {stem} in {frames} for this annotation")
        entries.append(ObjectEntry(index[stem], str(annotation), obj_id))
    if not entries:
        raise DatasetError(f"{frames}: no annotated object for video {name!r}")
    return Job(name, str(frames), None, len(names), entries=tuple(sorted(entries, key=lambda e: e.frame)),
               object_pngs=object_pngs)


def youtube_vos_jobs(root, split: str = "valid") -> List[Job]:
    """One job per video of a YouTube-VOS root (``<root>/<split>/JPEGImages/<video>/*.jpg`` and
    ``<root>/<split>/Annotations/<video>/*.png``): every frame, each object added on its first annotated frame
    (YouTube-VOS annotates each object once, where it first appears)."""
    base = Path(root) / split
    images, annotations = base / "JPEGImages", base / "Annotations"
    for folder in (images, annotations):
        if not is_dir(folder, "YouTube-VOS folder", DatasetError):
            raise DatasetError(f"{folder}: YouTube-VOS folder not found (expected <root>/{split}/JPEGImages and "
                               f"<root>/{split}/Annotations)")
    jobs = []
    for video in sorted(p for p in images.iterdir() if p.is_dir()):
        masks = sorted((annotations / video.name).glob("*.png"))
        if not masks:
            raise DatasetError(f"{annotations / video.name}: no annotation PNG for video {video.name!r}")
        jobs.append(entry_job(video.name, video, [(m.stem, m, None) for m in masks]))
    if not jobs:
        raise DatasetError(f"{images}: no video folder")
    return jobs


CSV_COLUMNS = ("name", "video", "mask")
#: Optional columns of a CSV job list: a reference photo and its mask (for rows without a mask, or besides it).
CSV_REFERENCE_COLUMNS = ("ref_image", "ref_mask")


def csv_jobs(path) -> List[Job]:
    """Jobs of a CSV manifest with the header ``name,video,mask`` and optionally ``ref_image,ref_mask`` (each row
    needs a mask, a reference photo with its mask, or both); relative paths are relative to the CSV file."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = tuple(rows[0].keys()) if rows else None
    except OSError as err:
        raise InputError(f"{path}: cannot read the job list ({err.strerror or err})") from None
    columns = set(header or ())
    has_objects = "mask" in columns or set(CSV_REFERENCE_COLUMNS) <= columns
    if not rows or not {"name", "video"} <= columns or not has_objects:
        raise InputError(f"{path}: a job list needs a header {','.join(CSV_COLUMNS)} (or name,video,"
                         f"{','.join(CSV_REFERENCE_COLUMNS)}, or all five) and at least one row")

    def cell(row, column: str) -> Optional[str]:
        value = (row.get(column) or "").strip()
        return None if not value else str(Path(value) if Path(value).is_absolute() else path.parent / value)

    jobs = []
    for number, row in enumerate(rows, start=2):
        name, video, mask = (row.get("name") or "").strip(), cell(row, "video"), cell(row, "mask")
        photo, photo_mask = cell(row, "ref_image"), cell(row, "ref_mask")
        if not name or video is None:
            raise InputError(f"{path}:{number}: every row needs a name and a video")
        if (photo is None) != (photo_mask is None):
            raise InputError(f"{path}:{number}: ref_image and ref_mask go together (a photo and its mask)")
        if mask is None and photo is None:
            raise InputError(f"{path}:{number}: the row needs a mask, or a ref_image with its ref_mask")
        references = () if photo is None else (ReferencePhoto(photo, photo_mask),)
        jobs.append(Job(name, video, mask, references=references))
    return check_names(jobs, str(path))


def video_jobs(videos: Sequence[str]) -> List[Job]:
    """One job per video file or frame folder, named after it, with no first-frame mask (for reference photos given
    to the whole batch: "find my object in these videos")."""
    jobs = [Job(Path(v).stem if Path(v).suffix else Path(v).name, str(v), None) for v in videos]
    return check_names(jobs, "--videos")


def check_names(jobs: List[Job], source: str) -> List[Job]:
    """Job names must be unique folder names."""
    seen = set()
    for job in jobs:
        if job.name in seen or "/" in job.name or job.name in ("", ".", ".."):
            problem = "repeated" if job.name in seen else "not a folder name"
            raise InputError(f"{source}: job name {job.name!r} is {problem}")
        seen.add(job.name)
    return jobs
