"""PerSeg (Zhang et al., PerSAM): ``<root>/Images/<object>/NN.jpg`` and ``<root>/Annotations/<object>/NN.png``.

Object names are read from disk (listings disagree on spelling), hidden entries (``.DS_Store``, ``__MACOSX``,
names starting with ``.``) are skipped, images and masks are paired by file stem. Annotations are kept as the raw
RGB array (the PerSAM engine takes them as is) and binarised for scoring with the luminance rule of
``shared/specs/benchmarks.md`` §1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from vos.errors import DatasetError, InputError
from vos.io.images import read_rgb
from vos.io.paths import is_dir

EXPECTED_OBJECTS = 40
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_hidden(name: str) -> bool:
    """macOS and dot-file debris of the official zip."""
    return name.startswith(".") or name == "__MACOSX"


@dataclass(frozen=True)
class PerSegObject:
    """One object: ``images`` and ``annotations`` map the two-digit stem to the file."""

    name: str
    images: Dict[str, Path]
    annotations: Dict[str, Path]

    @property
    def stems(self) -> List[str]:
        """Sorted stems (``00``, ``01``, …)."""
        return sorted(self.images)


def _files(folder: Path, suffixes: tuple) -> Dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if is_hidden(path.name) or not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in files:
            raise DatasetError(f"{folder}: two files with stem {path.stem!r} ({files[path.stem].name}, {path.name})")
        files[path.stem] = path
    return files


def load_perseg(root: Union[str, Path]) -> List[PerSegObject]:
    """Objects of a PerSeg tree, sorted by name; every image must have a same-stem annotation.

    Warns if the object count is not 40 or an object's stems are not contiguous from ``00``.
    """
    root = Path(root)
    images_dir, annotations_dir = root / "Images", root / "Annotations"
    for folder in (images_dir, annotations_dir):
        if not is_dir(folder, "PerSeg folder", DatasetError):
            raise DatasetError(f"{folder}: PerSeg folder not found (expected <root>/Images and <root>/Annotations)")
    objects = []
    for obj_dir in sorted(p for p in images_dir.iterdir() if p.is_dir() and not is_hidden(p.name)):
        ann_dir = annotations_dir / obj_dir.name
        if not ann_dir.is_dir():
            raise DatasetError(f"{ann_dir}: annotation folder of object {obj_dir.name!r} not found")
        images, annotations = _files(obj_dir, IMAGE_SUFFIXES), _files(ann_dir, (".png",))
        if not images:
            raise DatasetError(f"{obj_dir}: no image")
        for stem in sorted(images):
            if stem not in annotations:
                raise DatasetError(f"{ann_dir / (stem + '.png')}: annotation of image {images[stem].name} not found")
        expected = [f"{i:02d}" for i in range(len(images))]
        if sorted(images) != expected:
            warnings.warn(f"PerSeg object {obj_dir.name!r}: image names {sorted(images)} are not contiguous "
                          f"two-digit stems from 00")
        objects.append(PerSegObject(obj_dir.name, images, {s: annotations[s] for s in images}))
    if not objects:
        raise DatasetError(f"{images_dir}: no object folder")
    if len(objects) != EXPECTED_OBJECTS:
        warnings.warn(f"PerSeg at {root} has {len(objects)} objects; the PerSAM paper's dataset has "
                      f"{EXPECTED_OBJECTS}")
    return objects


def luminance_foreground(rgb: np.ndarray) -> np.ndarray:
    """``bool H×W``: ``round(0.299 R + 0.587 G + 0.114 B) > 0`` on a ``uint8 H×W×3`` RGB array.

    Computed exactly in integers: ``299 R + 587 G + 114 B > 500`` (the weighted sum is never exactly 500, so
    rounding ties cannot occur). Any visible colour counts; PerSAM's dark red (128, 0, 0) is foreground.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected an H×W×3 RGB array, got shape {rgb.shape}")
    value = rgb[..., 0].astype(np.int32) * 299 + rgb[..., 1].astype(np.int32) * 587 + rgb[..., 2].astype(np.int32) * 114
    return value > 500


def read_binary_mask(path: Union[str, Path]) -> np.ndarray:
    """A PerSeg annotation or prediction PNG as ``bool H×W`` (luminance rule)."""
    return luminance_foreground(read_rgb(path))
