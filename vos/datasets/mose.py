"""MOSEv2 ground truth on disk: ``<root>/meta.json``, ``<root>/Annotations/<vid>/<%05d>.png`` (palette PNGs whose
pixel values are object ids), optionally ``<root>/JPEGImages/<vid>/``.

``meta.json`` is ``{"videos": {<vid>: {"length": N, "height": H, "width": W, "objects": {<id>: {...}, ...}}}}``
(``height``/``width`` may be null: the first annotation's size is used then). As in the official ``score.py``:
the videos are the entries of ``Annotations/`` in ``os.listdir`` order (not sorted: that order is the order of the
official outputs), each must be a video of the meta, and its folder must hold exactly ``length`` entries. vos also
requires every entry to be a ``<number>.png`` file (the official tool never looks at their names). The objects are the
meta's, in the meta's order; an object may be absent from every annotation.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.datasets.davis import read_label_map
from vos.errors import DatasetError, VosError
from vos.io.paths import is_dir, is_file, unreachable

META_FILE = "meta.json"
_FRAME = re.compile(r"\d+\.png")


@dataclass(frozen=True)
class ObjectStart:
    """Where an object is first annotated: the frame name (``"00000"``) and its annotation PNG."""

    first_frame: str
    annotation: Path


@dataclass(frozen=True)
class MoseVideo:
    """One video: ``frame_names`` are the annotation stems sorted by frame number; ``object_keys`` the meta's object
    ids as written there (``"1"``, ...), in meta order; ``size`` is (H, W) from the meta, or None when it is null."""

    name: str
    frames_dir: Path | None
    annotation_dir: Path
    frame_names: tuple[str, ...]
    size: tuple[int, int] | None
    object_keys: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.frame_names)

    @property
    def object_ids(self) -> tuple[int, ...]:
        """The objects' integer ids (the pixel values of the annotations)."""
        return tuple(int(k) for k in self.object_keys)

    def annotation_path(self, index: int) -> Path:
        return self.annotation_dir / f"{self.frame_names[index]}.png"

    def label_map(self, index: int) -> np.ndarray:
        """Annotation of frame ``index`` (0-based): ``uint8`` H×W object ids, indexed [row, col]."""
        return read_label_map(self.annotation_path(index))

    def objects(self) -> dict[int, ObjectStart]:
        """Each object's first annotated frame, decoding annotations in order until every object was seen (objects
        never annotated are left out)."""
        wanted = set(self.object_ids)
        found: dict[int, ObjectStart] = {}
        for index in range(len(self)):
            if not wanted:
                break
            present = set(np.unique(self.label_map(index)).tolist()) & wanted
            for obj in present:
                found[obj] = ObjectStart(self.frame_names[index], self.annotation_path(index))
            wanted -= present
        return {obj: found[obj] for obj in self.object_ids if obj in found}


def list_folder(path: Path, what: str, error: type[VosError] = DatasetError) -> list[str]:
    """``os.listdir(path)`` (file-system order), raising ``error`` naming ``path`` when it cannot be read."""
    try:
        return os.listdir(path)
    except OSError as err:
        raise error(unreachable(path, what, err)) from None


def _load_meta(path: Path) -> dict:
    if not is_file(path, "MOSEv2 meta file", DatasetError):
        raise DatasetError(f"{path}: MOSEv2 meta file not found")
    try:
        videos = json.loads(path.read_text())["videos"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not a MOSEv2 meta file with a 'videos' object ({err!r})") from None
    if not isinstance(videos, dict):
        raise DatasetError(f"{path}: 'videos' must be an object of videos")
    return videos


def _int_or_none(value, what: str, meta: Path) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise DatasetError(f"{meta}: {what} must be a non-negative integer or null, got {value!r}")


def _object_keys(objects, name: str, meta: Path) -> tuple[str, ...]:
    keys = [str(k) for k in (objects if isinstance(objects, (dict, list)) else ())]
    if not isinstance(objects, (dict, list)) or not all(re.fullmatch(r"\d+", k) for k in keys):
        raise DatasetError(f"{meta}: videos.{name}.objects must map integer object ids, got {objects!r}")
    return tuple(keys)


class MoseDataset:
    """A MOSEv2 ground-truth root: ``MoseDataset(root)``; iterate it for :class:`MoseVideo` in official order.

    Raises :class:`vos.errors.DatasetError` naming the file for a layout the official tool would not accept.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.meta_path = self.root / META_FILE
        self.annotations = self.root / "Annotations"
        if not is_dir(self.root, "MOSEv2 ground-truth root", DatasetError):
            raise DatasetError(f"{self.root}: MOSEv2 ground-truth root not found")
        meta = _load_meta(self.meta_path)
        if not is_dir(self.annotations, "annotation folder", DatasetError):
            raise DatasetError(f"{self.annotations}: annotation folder not found")
        images = self.root / "JPEGImages"
        self._images = images if is_dir(images, "frame folder", DatasetError) else None
        self.videos: list[MoseVideo] = [self._load(name, meta)
                                        for name in list_folder(self.annotations, "annotation folder")]

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[MoseVideo]:
        return iter(self.videos)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.videos]

    def _load(self, name: str, meta: dict) -> MoseVideo:
        folder = self.annotations / name
        if name not in meta:
            raise DatasetError(f"{folder}: video {name!r} is not in {self.meta_path}")
        entry = meta[name]
        try:
            length, height, width, objects = (entry[k] for k in ("length", "height", "width", "objects"))
        except (KeyError, TypeError):
            raise DatasetError(f"{self.meta_path}: videos.{name} needs length, height, width and objects") from None
        if not is_dir(folder, "annotation folder", DatasetError):
            raise DatasetError(f"{folder}: not a folder of annotation PNGs")
        files = list_folder(folder, "annotation folder")
        if _int_or_none(length, f"videos.{name}.length", self.meta_path) != len(files):
            raise DatasetError(f"{folder}: {len(files)} annotation files but the meta says length {length}")
        bad = sorted(f for f in files if not _FRAME.fullmatch(f))
        if bad:
            raise DatasetError(f"{folder / bad[0]}: not an annotation frame (<number>.png)")
        stems = sorted((f[:-4] for f in files), key=int)
        h = _int_or_none(height, f"videos.{name}.height", self.meta_path)
        w = _int_or_none(width, f"videos.{name}.width", self.meta_path)
        has_frames = self._images is not None and is_dir(self._images / name, "frame folder", DatasetError)
        frames = self._images / name if has_frames else None
        return MoseVideo(name, frames, folder, tuple(stems), None if h is None or w is None else (h, w),
                         _object_keys(objects, name, self.meta_path))
