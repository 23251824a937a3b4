"""Personalise SAM on one reference photo + mask and segment a folder of photos (``vos persam``).

For every image of the folder: ``<out>/<stem>.png`` (the mask: 8-bit, 255 = object) and ``<stem>_overlay.jpg``, each
written atomically; the folder is guarded by its settings file, and images already segmented with the same settings
are not segmented again (an interrupted run continues where it stopped).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from PIL import Image

from vos.errors import InputError
from vos.io import image_files, read_rgb
from vos.io.images import save_mask_and_overlay
from vos.io.paths import is_dir
from vos.runs.folder import RunFolder
from vos.runs.options import ModelOptions


@dataclass(frozen=True)
class ImageRun:
    """``ref_image`` + ``ref_mask`` (non-zero = the object; 3-channel PerSeg annotations are kept as they are),
    the photos of folder ``images``, results into ``out``; ``method``: ``persam`` or ``persam_f``."""

    ref_image: Path
    ref_mask: Path
    images: Path
    out: Path
    method: str = "persam"
    model: ModelOptions = field(default_factory=ModelOptions)

    def settings(self) -> dict:
        return {"ref_image": str(Path(self.ref_image).resolve()), "ref_mask": str(Path(self.ref_mask).resolve()),
                "method": self.method, **self.model.settings()}


def read_reference_mask(path: Path) -> np.ndarray:
    """A reference mask file: 3-channel RGB masks are kept as they are (the reference pipeline uses the R channel,
    PerSeg convention R = 128); anything else becomes a 2-D mask, non-zero = object."""
    try:
        with Image.open(path) as im:
            if im.mode == "RGB":
                return np.array(im)
            if im.mode == "P":
                return np.array(im) != 0
            return np.array(im.convert("L")) != 0
    except FileNotFoundError:
        raise InputError(f"reference mask {path} does not exist") from None
    except OSError as err:
        raise InputError(f"reference mask {path} cannot be read as an image: {err}") from None


def list_images(folder: Path) -> List[Path]:
    """The JPEG/PNG photos of ``folder`` in natural order (a missing or empty folder is an :class:`InputError`)."""
    if not is_dir(folder, "image folder"):
        raise InputError(f"image folder {folder} does not exist")
    files = image_files(folder)
    if not files:
        raise InputError(f"image folder {folder} has no JPEG/PNG image")
    return files


def segment_images(run: ImageRun, model=None, on_image: Optional[Callable[[Path], None]] = None) -> int:
    """Segment every photo of ``run.images`` that has no result yet; returns how many were segmented."""
    from vos.methods import image_engine

    ref_image = read_rgb(run.ref_image, "reference image")
    ref_mask = read_reference_mask(Path(run.ref_mask))
    images = list_images(Path(run.images))
    folder = RunFolder(Path(run.out), "persam", "continue")
    folder.plan(run.settings())
    todo = [p for p in images if not ((run.out / f"{p.stem}.png").is_file()
                                      and (run.out / f"{p.stem}_overlay.jpg").is_file())]
    if not todo:
        return 0
    engine = image_engine(run.method, model if model is not None else run.model.load())
    try:
        engine.set_reference(ref_image, ref_mask)
    except InputError as err:
        raise InputError(f"{run.ref_mask}: {err}") from None
    if run.method == "persam_f":
        engine.fit()
    folder.start(run.settings())
    for path in todo:
        image = read_rgb(path, "image")
        save_mask_and_overlay(run.out, path.stem, image, engine.segment(image).mask)
        folder.commit()
        if on_image is not None:
            on_image(path)
    return len(todo)
