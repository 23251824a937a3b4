"""Label maps on disk: the DAVIS palette, loading first-frame masks, validating them, writing palette PNGs.

A label map is a ``uint8`` array of shape ``(H, W)`` indexed ``[row, col]``: 0 is background, 1..255 are object ids
(DAVIS palette indices). Ids are kept as given, never renumbered.

Rules of :func:`load_label_map`, by PNG/image mode:

* palette (``P``, ``PA``): the palette index of a pixel is its object id (the DAVIS convention).
* 1-bit (``1``): white pixels are object 1.
* grayscale (``L``, ``LA``, 16-bit ``I;16`` / ``I``) and RGB whose pixels are all grey (R = G = B):
  the pixel value is the object id, except that
  - a binary mask whose only non-zero value is the format's maximum (255, or 65535 for 16-bit) means object 1;
  - more than :data:`MAX_LABEL_LEVELS` distinct non-zero values is a soft mask (a matte, a JPEG-compressed mask):
    :class:`~vos.errors.MaskError`, unless ``threshold`` is given (then ``value >= threshold`` is object 1).
* RGB(A) with colours (alpha is ignored): when every colour is a DAVIS palette colour, the colour's palette index is
  the id (an RGB rendering of a DAVIS annotation; PerSeg's dark red (128, 0, 0) is object 1); otherwise, when there is
  a single non-black colour, it is object 1; anything else is refused.

Ids above 255 (16-bit label PNGs) are refused with :class:`~vos.errors.MaskError` naming the id.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image

from vos.errors import MaskError
from vos.io.atomic import save_image

PathLike = Union[str, os.PathLike]

#: A grayscale image with more distinct non-zero values than this is a soft mask, not a label map.
MAX_LABEL_LEVELS = 32


def _voc_colormap() -> np.ndarray:
    """The PASCAL VOC colour map: the bits of the index, three at a time, fill R, G, B from the high bit down."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code, rgb = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << shift
            code >>= 3
        cmap[index] = rgb
    return cmap


#: ``(256, 3) uint8``: RGB colour of each object id in DAVIS annotations (1 = (128, 0, 0), 2 = (0, 128, 0), ...).
DAVIS_PALETTE = _voc_colormap()
DAVIS_PALETTE.flags.writeable = False


def as_label_map(array: np.ndarray, source: PathLike) -> np.ndarray:
    """Check that ``array`` is a 2-D integer/bool label map with ids 0..255 and return it as ``uint8 (H, W)``.

    ``source`` names the mask in error messages.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise MaskError(f"{source}: a label map must be 2-D (H, W), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise MaskError(f"{source}: a label map must hold integer ids, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        bad = int(array.max()) if array.max() > 255 else int(array.min())
        raise MaskError(f"{source}: object id {bad} is out of range: ids must be 0 (background) to 255")
    return array.astype(np.uint8)


def _grey_levels(values: np.ndarray, full_scale: int, path: PathLike, threshold: Optional[int]) -> np.ndarray:
    """Label map from grey values (see the module docstring for the rules)."""
    if threshold is not None:
        return (values >= threshold).astype(np.uint8)
    levels = np.unique(values)
    levels = levels[levels != 0]
    if len(levels) == 1 and levels[0] == full_scale:
        return (values != 0).astype(np.uint8)
    if len(levels) > MAX_LABEL_LEVELS:
        raise MaskError(
            f"{path}: looks like a soft mask ({len(levels)} grey levels, not object ids): threshold it "
            f"(e.g. threshold=128: value >= 128 is the object) or save the ids as a palette PNG")
    return as_label_map(values, path)


def _colours(rgb: np.ndarray, path: PathLike) -> np.ndarray:
    """Label map from a colour RGB image (see the module docstring for the rules)."""
    flat = rgb.reshape(-1, 3)
    codes = (flat[:, 0].astype(np.int32) << 16) | (flat[:, 1].astype(np.int32) << 8) | flat[:, 2]
    colours, inverse = np.unique(codes, return_inverse=True)
    palette_codes = ((DAVIS_PALETTE[:, 0].astype(np.int32) << 16) | (DAVIS_PALETTE[:, 1].astype(np.int32) << 8)
                     | DAVIS_PALETTE[:, 2])
    in_palette = np.isin(colours, palette_codes)
    if in_palette.all():
        code_to_id = {int(code): index for index, code in enumerate(palette_codes)}
        ids = np.array([code_to_id[int(code)] for code in colours], dtype=np.uint8)
        return ids[inverse].reshape(rgb.shape[:2])
    if len(colours[colours != 0]) == 1:
        return (codes != 0).astype(np.uint8).reshape(rgb.shape[:2])
    raise MaskError(
        f"{path}: an RGB mask with {len(colours)} colours, {int((~in_palette).sum())} of them not DAVIS palette "
        f"colours: save it as a palette PNG (index = object id) or a grayscale label PNG")


def load_label_map(path: PathLike, threshold: Optional[int] = None) -> np.ndarray:
    """Read a mask image as a ``uint8 (H, W)`` label map (rules in the module docstring).

    ``threshold``: read grey values as a soft mask, ``value >= threshold`` being object 1 (ignored for palette images,
    whose values are ids). Raises :class:`~vos.errors.MaskError` for unreadable files and refused contents.
    """
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise MaskError(f"{path}: mask file not found") from None
    except (OSError, ValueError) as err:
        raise MaskError(f"{path}: cannot read the mask image: {err}") from None
    mode = image.mode
    if mode in ("P", "PA"):
        return np.asarray(image.getchannel(0) if mode == "PA" else image, dtype=np.uint8)
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("L", "LA"):
        return _grey_levels(np.asarray(image.getchannel(0)), 255, path, threshold)
    if mode.startswith("I;16") or mode == "I":
        return _grey_levels(np.asarray(image).astype(np.int64), 65535, path, threshold)
    if mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(image.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return _grey_levels(rgb[..., 0], 255, path, threshold)
        return _colours(rgb, path)
    raise MaskError(f"{path}: unsupported image mode {mode!r} for a mask (use a palette, grayscale or RGB PNG)")


def validate_first_mask(label_map: np.ndarray, frame_hw: Tuple[int, int], path: PathLike, resize: bool = False,
                        min_pixels: int = 1) -> np.ndarray:
    """Check a first-frame label map against its frame and return it as ``uint8 (H, W)``.

    ``frame_hw`` is the frame's ``(height, width)``. A different size is an error unless ``resize`` is true, in which
    case the map is resized with nearest-neighbour sampling (an object that vanishes in the resize is an error).
    Every object must cover at least ``min_pixels`` pixels, and there must be at least one object.
    ``path`` names the mask in error messages.
    """
    label_map = as_label_map(label_map, path)
    height, width = int(frame_hw[0]), int(frame_hw[1])
    if label_map.shape != (height, width):
        mask_h, mask_w = label_map.shape
        if not resize:
            raise MaskError(
                f"{path}: the mask is {mask_w}x{mask_h} (WxH) but the frame is {width}x{height}: "
                f"use --resize-mask to resize it (nearest neighbour)")
        before = set(np.unique(label_map).tolist())
        label_map = np.asarray(Image.fromarray(label_map).resize((width, height), Image.Resampling.NEAREST))
        lost = sorted(before - set(np.unique(label_map).tolist()))
        if lost:
            raise MaskError(f"{path}: object id(s) {lost} vanished when resizing the mask from {mask_w}x{mask_h} "
                            f"to {width}x{height}")
    ids, counts = np.unique(label_map, return_counts=True)
    objects = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
    if not objects:
        raise MaskError(f"{path}: no object in the mask (every pixel is background, 0)")
    small = {i: c for i, c in objects.items() if c < min_pixels}
    if small:
        i, c = next(iter(small.items()))
        raise MaskError(f"{path}: object {i} covers {c} pixel(s), fewer than the {min_pixels} needed")
    return label_map


def save_palette_png(path: PathLike, label_map: np.ndarray) -> None:
    """Write ``label_map`` (``(H, W)`` ids 0..255) as a mode-P PNG with the DAVIS palette, atomically.

    The image goes to a hidden temporary file in the same folder, is fsync'ed, then renamed over ``path``; on failure
    the temporary file is removed and :class:`~vos.errors.OutputError` names ``path``.
    """
    path = Path(path)
    image = Image.fromarray(as_label_map(label_map, path))
    image.putpalette(DAVIS_PALETTE.tobytes())
    save_image(path, image, fsync=True, format="PNG")
