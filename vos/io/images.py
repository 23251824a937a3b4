"""Still images: one reader for every RGB photo or frame file the tools and dataset loaders open."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vos.errors import InputError
from vos.io.atomic import save_image


def read_rgb(path: Union[str, os.PathLike], what: str = "image", upright: bool = False) -> np.ndarray:
    """An image file as RGB ``uint8 H×W×3`` (palette expanded, alpha dropped, grayscale replicated).

    ``upright``: apply the EXIF orientation first (as photo viewers show the photo). A missing or undecodable file is
    an :class:`InputError` naming it; ``what`` says what the file is for ("reference image", "frame", …).
    """
    try:
        with Image.open(path) as im:
            return np.asarray((ImageOps.exif_transpose(im) if upright else im).convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise InputError(f"cannot read {what} {path}: {err}") from None


def save_mask_and_overlay(folder: Union[str, os.PathLike], stem: str, image: np.ndarray, mask: np.ndarray) -> Path:
    """Write ``<folder>/<stem>.png`` (8-bit, 255 = object) and ``<stem>_overlay.jpg`` (the RGB ``uint8 H×W×3`` image
    with the ``bool H×W`` mask tinted and outlined), each atomically; returns the PNG's path."""
    from vos.io.writers import draw_overlay

    folder = Path(folder)
    png = folder / f"{stem}.png"
    save_image(png, Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255))
    save_image(folder / f"{stem}_overlay.jpg", Image.fromarray(draw_overlay(image, np.asarray(mask, np.uint8))),
               quality=90)
    return png
