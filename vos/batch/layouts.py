"""A batch's run folders in the layouts the benchmarks' evaluators and servers read.

A run folder names its palette PNGs by frame index (``00000.png`` …) and its per-object masks
``objects/<id:03d>/<index:05d>.png``; the benchmarks name predictions after their frames (LVOS ``00000005.png``,
YouTube-VOS ``00035.png``). Nothing is decoded: files are linked (copied across file systems) under the frame's
name, replacing what the destination held.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from PIL import Image

from vos.batch.jobs import Job
from vos.errors import OutputError
from vos.io.atomic import atomic_write
from vos.io.masks import save_palette_png
from vos.io.video import image_files
from vos.runs.track import OBJECTS_DIR, completed_frames


def frame_names(job: Job) -> List[str]:
    """The job's frame names without extension, in the order they are tracked (``job.video`` is a frame folder)."""
    return [f.stem for f in image_files(job.video)]


def _place(source: Path, target: Path) -> None:
    """``target`` becomes a hard link to ``source`` (a copy where links cannot be made), replacing what was there."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot write ({err.strerror or err})") from None


def _folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot create the folder ({err.strerror or err})") from None
    return path


def _complete_frames(run: Path, names: Sequence[str]) -> int:
    frames = completed_frames(run)
    if frames < len(names):
        raise OutputError(f"{run}: the run has {frames} of the video's {len(names)} frames: finish it first "
                          f"(run the batch again; it resumes)")
    return frames


def export_label_maps(run: Path, job: Job, dest: Path, only: Optional[Iterable[str]] = None) -> List[Path]:
    """The run's palette PNGs as ``dest/<frame name>.png`` (every frame, or the names in ``only``)."""
    names = frame_names(job)
    _complete_frames(run, names)
    wanted = set(names if only is None else only)
    _folder(dest)
    written = []
    for index, name in enumerate(names):
        if name in wanted:
            _place(run / f"{index:05d}.png", dest / f"{name}.png")
            written.append(dest / f"{name}.png")
    return written


def export_object_masks(run: Path, job: Job, dest: Path, folders: Dict[int, str]) -> List[Path]:
    """The run's per-object masks as SA-V's ``dest/<folder>/<frame name>.png`` (0 / 1 palette PNGs), ``folders``
    naming each tracked id's folder, for every frame; frames before an object entered get an empty mask, as the
    evaluator reads one PNG per object and annotated frame."""
    names = frame_names(job)
    _complete_frames(run, names)
    with Image.open(run / "00000.png") as image:
        empty = np.zeros((image.height, image.width), np.uint8)
    written = []
    for obj_id, folder_name in folders.items():
        folder, target = run / OBJECTS_DIR / f"{obj_id:03d}", _folder(dest / folder_name)
        for index, name in enumerate(names):
            source, path = folder / f"{index:05d}.png", target / f"{name}.png"
            if source.is_file():
                _place(source, path)
            else:
                save_palette_png(path, empty)
            written.append(path)
    return written


def youtube_submission(out: Path, jobs: Sequence[Job], path: Path) -> Path:
    """The YouTube-VOS server's submission zip: ``Annotations/<video>/<frame name>.png`` for every frame of every
    video (the run folders ``out/<video>/``), written atomically."""
    members = []
    for job in jobs:
        names = frame_names(job)
        run = Path(out) / job.name
        _complete_frames(run, names)
        members += [(run / f"{i:05d}.png", f"Annotations/{job.name}/{name}.png") for i, name in enumerate(names)]

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            for source, name in members:
                archive.write(source, name)

    atomic_write(path, write)
    return path
