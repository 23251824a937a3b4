"""SA-V val/test ground truth on disk, read as the official ``sav_dataset/sav_evaluator.py`` reads it.

The released split folder ``sav_val/`` (``sav_test/``) holds ``sav_val.txt`` (the video list),
``JPEGImages_24fps/<video>/<frame>.jpg`` and ``Annotations_6fps/`` = the ground-truth root::

    <gt_root>/<video>/<object>/<frame>.png      one binary PNG per object and annotated frame (objects may overlap)

As in the official tool: the videos are the sub-folders of the root, in sorted order; the objects of a video are
its entries in sorted order (``000``, ``001``, ...; any name); the annotated frames of an object are every file of
its folder, in sorted order (``00000.png``, ``00004.png``, ...: SA-V annotates every 4th frame of its 24 fps video).
A mask is the decoded PNG (as ``np.array(PIL.Image.open(path))``) with at most 2 distinct values, binarised as
``value > 0``. An empty video folder has no object. A video folder holding only ``.png`` files is the official
tool's DAVIS-style layout (one multi-object label map per frame), which vos does not read (:class:`DatasetError`).

Arrays: masks are ``bool`` H×W indexed ``[row, col]``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vos.errors import DatasetError, VosError
from vos.io.paths import is_dir, is_file

FRAMES_FOLDER = "JPEGImages_24fps"


@dataclass(frozen=True)
class ObjectStart:
    """Where an object is first annotated: the frame stem (``"00008"``) and its annotation PNG."""

    first_frame: str
    annotation: Path


@dataclass(frozen=True)
class LongVideo:
    """A video for tracking: its frames folder (``<split>/JPEGImages_24fps/<video>/``) when present, and per object
    (keyed by its folder name, e.g. ``"000"``) the first annotated frame where its mask is not empty."""

    name: str
    frames_dir: Path | None
    objects: dict[str, ObjectStart]


@dataclass(frozen=True)
class SavObject:
    """One object folder: ``name`` (``"000"``), ``folder`` and ``frames``, its file names (``"00004.png"``), sorted."""

    name: str
    folder: Path
    frames: tuple[str, ...]

    def mask(self, frame: str) -> np.ndarray:
        """Ground-truth mask of ``frame`` (a file name of :attr:`frames`): ``bool`` H×W."""
        mask = read_binary_mask(self.folder / frame, DatasetError, "annotation")
        if mask.ndim != 2:
            raise DatasetError(f"{self.folder / frame}: annotation is not a single-channel image "
                               f"(shape {'x'.join(map(str, mask.shape))})")
        return mask


@dataclass(frozen=True)
class SavVideo:
    """One ground-truth video folder and its objects in evaluation order."""

    name: str
    folder: Path
    objects: tuple[SavObject, ...]


def read_binary_mask(path: Path, error: type[VosError], what: str) -> np.ndarray:
    """Decode a PNG as PIL does and binarise it (``value > 0``), rejecting more than 2 distinct values (shape as
    decoded: H×W, or H×W×C for colour images)."""
    try:
        with Image.open(path) as img:
            values = np.asarray(img)
    except (OSError, ValueError) as err:
        raise error(f"{path}: cannot read {what} PNG ({err})") from err
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if low != high and not np.all((values == low) | (values == high)):
        raise error(f"{path}: {what} has more than 2 distinct pixel values; SA-V masks are binary, one object per "
                    f"PNG")
    return values > 0


def _listdir(folder: Path, what: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError as err:
        raise DatasetError(f"{folder}: cannot list the {what} ({err.strerror or err})") from None


class SavDataset:
    """An SA-V ground-truth root: ``SavDataset(gt_root, video_list=None)``.

    ``videos``: every video folder of the root, sorted (the official tool's set), or the videos named in
    ``video_list`` (a text file, one name a line, e.g. ``sav_val.txt``; a relative path is taken relative to the
    split folder, the root's parent), sorted as the official tool sorts them. Layout errors raise
    :class:`DatasetError` naming the path.
    """

    def __init__(self, gt_root, video_list: str | None = None):
        self.root = Path(gt_root)
        if not is_dir(self.root, "ground-truth root", DatasetError):
            raise DatasetError(f"{self.root}: SA-V ground-truth folder not found")
        on_disk = [n for n in _listdir(self.root, "video folders") if is_dir(self.root / n, "video", DatasetError)]
        self.videos = on_disk if video_list is None else self._listed(video_list, on_disk)
        if not self.videos:
            raise DatasetError(f"{self.root}: no video folder")

    def _listed(self, video_list: str, on_disk: list[str]) -> list[str]:
        path = self.root.parent / video_list
        if not is_file(path, "video list", DatasetError):
            raise DatasetError(f"{path}: video list not found")
        names = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
        missing = [n for n in names if n not in on_disk]
        if missing:
            raise DatasetError(f"{path}: video(s) {', '.join(missing[:5])} listed but not in {self.root}")
        return names

    def video(self, name: str) -> SavVideo:
        """The objects of video ``name`` and the files of each (names only; no PNG is decoded)."""
        folder = self.root / name
        entries = _listdir(folder, "object folders")
        if entries and all(e.endswith(".png") for e in entries):
            raise DatasetError(f"{folder}: holds PNG files, not object folders (the official tool's DAVIS-style "
                               f"layout, which vos does not evaluate)")
        objects = []
        for entry in entries:
            path = folder / entry
            if not is_dir(path, "object folder", DatasetError):
                raise DatasetError(f"{path}: not an object folder (a video folder of the SA-V layout holds only "
                                   f"one folder per object)")
            objects.append(SavObject(entry, path, tuple(_listdir(path, "annotation files"))))
        return SavVideo(name, folder, tuple(objects))

    def long_video(self, name: str) -> LongVideo:
        """Video ``name`` for tracking: frames folder and each object's first non-empty annotation."""
        frames = self.root.parent / FRAMES_FOLDER / name
        starts = {}
        for obj in self.video(name).objects:
            first = next((f for f in obj.frames if obj.mask(f).any()), None)
            if first is None:
                raise DatasetError(f"{obj.folder}: the object's mask is empty on every annotated frame")
            starts[obj.name] = ObjectStart(Path(first).stem, obj.folder / first)
        return LongVideo(name, frames if is_dir(frames, "frames folder", DatasetError) else None, starts)
