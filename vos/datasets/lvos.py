"""LVOS v1/v2 on disk: ``<root>/<set>_meta.json``, ``<root>/Annotations/<vid>/<%08d>.png``,
``<root>/JPEGImages/<vid>/``.

The meta file (``{"videos": {vid: {"objects": {id: {"frame_range": {"start", "end", "frame_nums"}}}}}}``, numbers
as ints or strings, as the official ``lvos-evaluation`` reads them with ``int()``) says where each object lives:
annotations exist every 5th frame, ``start``/``end`` are the object's first and last annotated frame numbers and
``frame_nums`` their count. Objects may start after frame 0, so each one has its own first frame. Annotation PNGs
are palette (or 8-bit grayscale) label maps, ``uint8`` H×W indexed [row, col]: pixel value = object id. Nothing is
decoded here; frames are optional (the evaluation needs only annotations).

Official rules kept here: the sets are ``valid`` and ``test``; videos are taken in sorted name order and objects in
meta order. Metas the official tool crashes on raise :class:`vos.errors.DatasetError` naming the meta file:
``frame_nums`` < 2, a range yielding more frames than ``frame_nums`` (an IndexError there), values ``int()`` cannot
read; vos also rejects ids outside 1..255 and duplicate ids (the official tool would match id 0 against the
background and score duplicates twice).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vos.errors import DatasetError, InputError
from vos.io.paths import is_dir, is_file

SETS = ("valid", "test")
STEP = 5  # LVOS annotates every 5th frame


def frame_name(number: int) -> str:
    """``%08d`` file stem of frame ``number`` (as the official tool formats it)."""
    return f"{number:08d}"


@dataclass(frozen=True)
class ObjectStart:
    """Where an object enters: its first annotated frame's name and the annotation PNG of that frame."""

    first_frame: str
    annotation: Path


@dataclass(frozen=True)
class FrameRange:
    """An object's ``frame_range``: first and last annotated frame numbers and the number of annotated frames."""

    start: int
    end: int
    frame_nums: int

    @property
    def slots(self) -> int:
        """Number of per-frame values the official tool keeps for the object: ``frame_nums - 2``."""
        return self.frame_nums - 2

    def scored(self) -> list[tuple[int, int]]:
        """(slot, frame number) of every scored frame: the official walk over ``range(start, end, 5)`` (``end``
        itself is never visited) skipping the walk's first step and step ``frame_nums - 1``. With a consistent meta
        (``end = start + 5·(frame_nums - 1)``) that is every annotated frame but the object's first and last, and
        every slot is filled; slots left over by a shorter walk keep the value 0."""
        walk = range(self.start, self.end, STEP)
        return [(k - 1, f) for k, f in enumerate(walk) if 0 < k < self.frame_nums - 1]


@dataclass(frozen=True)
class LongVideo:
    """One video: ``objects`` and ``ranges`` are keyed by object id, in meta order. ``frames_dir`` is
    ``JPEGImages/<vid>`` when present."""

    name: str
    frames_dir: Path | None
    annotations_dir: Path
    objects: dict[int, ObjectStart]
    ranges: dict[int, FrameRange]

    def annotation_path(self, frame: str) -> Path:
        """``Annotations/<vid>/<frame>.png``."""
        return self.annotations_dir / f"{frame}.png"


def _int(value, meta: Path, where: str) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"{meta}: {where} is {value!r}, not a number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{meta}: {where} is {value!r}, not a number") from None


def _field(mapping, key: str, meta: Path, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise DatasetError(f"{meta}: {where} has no {key!r} entry")
    return mapping[key]


def _frame_range(entry, meta: Path, where: str) -> FrameRange:
    rng = _field(entry, "frame_range", meta, where)
    values = [_int(_field(rng, k, meta, f"{where}.frame_range"), meta, f"{where}.frame_range.{k}")
              for k in ("start", "end", "frame_nums")]
    frame_range = FrameRange(*values)
    if frame_range.frame_nums < 2:
        raise DatasetError(f"{meta}: {where}.frame_range.frame_nums is {frame_range.frame_nums}; at least 2 "
                           f"annotated frames are needed (the first and the last are never scored)")
    walk = len(range(frame_range.start, frame_range.end, STEP))
    if walk > frame_range.frame_nums:
        raise DatasetError(f"{meta}: {where}.frame_range: range({frame_range.start}, {frame_range.end}, {STEP}) has "
                           f"{walk} frames, more than frame_nums = {frame_range.frame_nums}")
    return frame_range


class LvosDataset:
    """An LVOS root and split: ``LvosDataset(root, set="valid")``; iterate for :class:`LongVideo` in sorted name
    order, ``dataset[name]`` for one. Layout errors raise :class:`vos.errors.DatasetError` naming the path."""

    def __init__(self, root, set: str = "valid"):
        if set not in SETS:
            raise InputError(f"LVOS set must be one of {', '.join(SETS)} (as the official tool), got {set!r}")
        self.root = Path(root)
        self.set = set
        if not is_dir(self.root, "LVOS root folder", DatasetError):
            raise DatasetError(f"{self.root}: LVOS root folder not found")
        self.meta_path = self.root / f"{set}_meta.json"
        if not is_file(self.meta_path, "LVOS meta file", DatasetError):
            raise DatasetError(f"{self.meta_path}: meta file of set {set!r} not found")
        self.annotations_dir = self.root / "Annotations"
        if not is_dir(self.annotations_dir, "annotation folder", DatasetError):
            raise DatasetError(f"{self.annotations_dir}: annotation folder not found")
        entries = self._read_meta()
        self._videos = {name: self._video(name, entries[name]) for name in sorted(entries)}

    def __len__(self) -> int:
        return len(self._videos)

    def __iter__(self) -> Iterator[LongVideo]:
        return iter(self._videos.values())

    def __getitem__(self, name: str) -> LongVideo:
        try:
            return self._videos[name]
        except KeyError:
            raise DatasetError(f"{self.meta_path}: no video {name!r}") from None

    @property
    def names(self) -> list[str]:
        """Video names in evaluation (sorted) order."""
        return list(self._videos)

    def _read_meta(self) -> dict:
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DatasetError(f"{self.meta_path}: cannot read the meta file ({err})") from None
        videos = _field(meta, "videos", self.meta_path, "the file")
        if not isinstance(videos, dict) or not videos:
            raise DatasetError(f"{self.meta_path}: 'videos' lists no video")
        return videos

    def _video(self, name: str, entry) -> LongVideo:
        where = f"videos.{name}"
        objects = _field(entry, "objects", self.meta_path, where)
        if not isinstance(objects, dict):
            raise DatasetError(f"{self.meta_path}: {where}.objects is not a mapping")
        annotations = self.annotations_dir / name
        if not is_dir(annotations, "annotation folder", DatasetError):
            raise DatasetError(f"{annotations}: annotation folder of video {name!r} (listed in "
                               f"{self.meta_path.name}) not found")
        starts: dict[int, ObjectStart] = {}
        ranges: dict[int, FrameRange] = {}
        for key, obj in objects.items():
            obj_where = f"{where}.objects.{key}"
            obj_id = _int(key, self.meta_path, f"object key {obj_where}")
            if not 1 <= obj_id <= 255:
                raise DatasetError(f"{self.meta_path}: {obj_where}: object ids must be 1..255")
            if obj_id in ranges:
                raise DatasetError(f"{self.meta_path}: {obj_where}: object id {obj_id} appears twice")
            ranges[obj_id] = _frame_range(obj, self.meta_path, obj_where)
            first = frame_name(ranges[obj_id].start)
            starts[obj_id] = ObjectStart(first, annotations / f"{first}.png")
        frames = self.root / "JPEGImages" / name
        frames_dir = frames if is_dir(frames, "frame folder", DatasetError) else None
        return LongVideo(name, frames_dir, annotations, starts, ranges)
