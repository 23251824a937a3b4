"""DAVIS 2017 on disk: ``ImageSets/2017/<set>.txt``, ``Annotations/<res>/<seq>/*.png``,
``JPEGImages/<res>/<seq>/*.jpg``.

Nothing here is loaded eagerly: a :class:`DavisSequence` knows its file names and decodes one frame or label map at a
time. ``JPEGImages`` is optional (the evaluation needs only annotations); without it the frame list comes from the
annotation PNGs. Label maps are returned as stored: ``uint8`` H×W, 0 = background, 1..255 = object ids, and 255 is
DAVIS *void* (the evaluation turns it into background).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from vos.errors import DatasetError, InputError
from vos.io.images import read_rgb
from vos.io.paths import exists, is_dir

RESOLUTIONS = ("480p", "Full-Resolution")
VOID_ID = 255


def read_label_map(path: Path) -> np.ndarray:
    """Decode a palette (``P``) or 8-bit grayscale (``L``) PNG into its pixel values: ``uint8`` H×W."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DatasetError(f"{path}: annotation must be a palette or 8-bit grayscale PNG, got mode {img.mode}")
            return np.asarray(img)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read annotation PNG ({err})") from err


def _require_dir(path: Path, what: str) -> Path:
    if not is_dir(path, what, DatasetError):
        raise DatasetError(f"{path}: {what} not found")
    return path


def _stems(folder: Path, suffix: str) -> list[str]:
    return sorted(p.stem for p in folder.glob(f"*{suffix}") if p.is_file())


class DavisSequence:
    """One sequence: file names up front, pixels on demand (picklable, so it can be sent to worker processes).

    ``frame_names`` are file stems ("00000", ...) in sorted order. ``has_ground_truth`` is False for the
    test-dev/test-challenge layout, where only the first frame is annotated.
    """

    def __init__(self, name: str, annotation_dir: Path, image_dir: Optional[Path],
                 frame_names: Sequence[str], has_ground_truth: bool):
        self.name = name
        self.annotation_dir = annotation_dir
        self.image_dir = image_dir
        self.frame_names = tuple(frame_names)
        self.has_ground_truth = has_ground_truth

    def __len__(self) -> int:
        return len(self.frame_names)

    def __repr__(self) -> str:
        return f"DavisSequence({self.name!r}, {len(self)} frames)"

    def annotation_path(self, index: int) -> Path:
        """Path of the annotation PNG of frame ``index`` (0-based)."""
        return self.annotation_dir / f"{self.frame_names[index]}.png"

    def frames(self) -> Iterator[np.ndarray]:
        """Yield every frame as RGB ``uint8`` H×W×3, one decoded frame in memory at a time."""
        if self.image_dir is None:
            raise DatasetError(f"{self.annotation_dir}: this DAVIS copy has no JPEGImages folder, so no frames")
        for stem in self.frame_names:
            yield read_rgb(self.image_dir / f"{stem}.jpg", "frame")

    def label_map(self, index: int) -> np.ndarray:
        """Ground-truth label map of frame ``index`` as stored (``uint8`` H×W, 255 = void)."""
        if index != 0 and not self.has_ground_truth:
            raise DatasetError(f"{self.annotation_dir}: only the first frame is annotated")
        return read_label_map(self.annotation_path(index))

    def label_maps(self) -> Iterator[np.ndarray]:
        """Yield the ground-truth label map of every frame, lazily (see :meth:`label_map`)."""
        for index in range(len(self)):
            yield self.label_map(index)

    @cached_property
    def first_label_map(self) -> np.ndarray:
        """Label map of the first frame (``uint8`` H×W): the one-shot reference."""
        return self.label_map(0)

    @cached_property
    def object_ids(self) -> list[int]:
        """Object ids present in the first frame, ascending (0 and void 255 excluded)."""
        ids = np.unique(self.first_label_map)
        return [int(i) for i in ids if i not in (0, VOID_ID)]


class DavisDataset:
    """A DAVIS 2017 root: ``DavisDataset(root, set="val", resolution="480p")``.

    ``sequences`` lists the names of ``ImageSets/2017/<set>.txt`` in file order (or ``only``, in the order given,
    each of which must be listed there). Every listed sequence must exist on disk; ``dataset[name]`` returns its
    :class:`DavisSequence`. Layout errors raise :class:`vos.errors.DatasetError` naming the path.
    """

    def __init__(self, root, set: str = "val", resolution: str = "480p", only: Optional[Sequence[str]] = None):
        if resolution not in RESOLUTIONS:
            raise InputError(f"DAVIS resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
        self.root = Path(root)
        self.set = set
        self.resolution = resolution
        _require_dir(self.root, "DAVIS root folder")
        self._annotations = _require_dir(self.root / "Annotations" / resolution, "annotation folder")
        images = self.root / "JPEGImages"
        has_frames = exists(images, "frame folder", DatasetError)
        self._images = _require_dir(images / resolution, "frame folder") if has_frames else None
        listed = self._read_set_file()
        self.sequences = listed if only is None else self._select(listed, only)
        self._loaded = {name: self._load(name) for name in self.sequences}

    def __len__(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[DavisSequence]:
        return (self._loaded[name] for name in self.sequences)

    def __getitem__(self, name: str) -> DavisSequence:
        try:
            return self._loaded[name]
        except KeyError:
            raise DatasetError(f"{self.root}: sequence {name!r} is not part of this dataset selection") from None

    def _read_set_file(self) -> list[str]:
        path = self.root / "ImageSets" / "2017" / f"{self.set}.txt"
        if not path.is_file():
            raise DatasetError(f"{path}: sequence list of set {self.set!r} not found")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise DatasetError(f"{path}: sequence list is empty")
        return names

    def _select(self, listed: list[str], only: Sequence[str]) -> list[str]:
        unknown = [name for name in only if name not in listed]
        if unknown:
            raise DatasetError(f"{self.root}: sequence(s) {', '.join(unknown)} not listed in "
                               f"ImageSets/2017/{self.set}.txt")
        if not only:
            raise InputError("the selection of DAVIS sequences is empty")
        return list(dict.fromkeys(only))

    def _load(self, name: str) -> DavisSequence:
        annotation_dir = _require_dir(self._annotations / name, f"annotations of sequence {name!r}")
        annotated = _stems(annotation_dir, ".png")
        if not annotated:
            raise DatasetError(f"{annotation_dir}: no annotation PNG")
        if self._images is None:
            return DavisSequence(name, annotation_dir, None, annotated, has_ground_truth=True)
        image_dir = _require_dir(self._images / name, f"frames of sequence {name!r}")
        frames = _stems(image_dir, ".jpg")
        if not frames:
            raise DatasetError(f"{image_dir}: no JPEG frame")
        first_only = len(annotated) == 1 and len(frames) > 1
        if not first_only and len(annotated) != len(frames):
            raise DatasetError(f"{name}: {len(frames)} JPEG frames in {image_dir} but {len(annotated)} "
                               f"annotation PNGs in {annotation_dir}")
        for frame, mask in zip(frames, annotated):
            if frame != mask:
                raise DatasetError(f"{name}: frame {image_dir / (frame + '.jpg')} has no annotation of the same "
                                   f"name in {annotation_dir} (found {mask}.png)")
        return DavisSequence(name, annotation_dir, image_dir, frames, has_ground_truth=not first_only)
