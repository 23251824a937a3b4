"""Subject masks for DreamBooth's instance photos: read or segment them with PerSAM, save them, bring them to the
latent grid.

Geometry shared by images and masks (so the two stay aligned pixel for pixel): the largest centred square of the
photo (``top = (H - S) // 2``, ``left = (W - S) // 2``, ``S = min(H, W)``) is resized to ``resolution × resolution``
with antialiased bilinear filtering. The mask goes through the same crop and filter as a float image in [0, 1].

Latent mask rule (``mode``): the VAE maps each ``f × f`` pixel cell (``f`` = the pipeline's VAE scale factor, 8 for
Stable Diffusion) to one latent pixel, so the latent weight of a cell is

* ``"soft"`` (default): the fraction of the cell covered by the object (area average, ``F.avg_pool2d(mask, f)``),
  a weight in [0, 1]. Boundary cells count partially and thin parts of the object never vanish.
* ``"binary"``: 1 where that fraction is at least 0.5, else 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from vos.errors import InputError, MaskError, OutputError
from vos.io.images import read_rgb, save_mask_and_overlay

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LATENT_MASK_MODES = ("soft", "binary")


@dataclass
class InstanceImage:
    """One training photo (instance or class image): ``image`` uint8 ``H×W×3`` RGB; ``mask`` bool ``H×W``
    (True = subject) once known (instance photos only)."""

    path: Path
    image: np.ndarray
    mask: Optional[np.ndarray] = None

    @property
    def name(self) -> str:
        return self.path.name


def list_images(folder: "str | os.PathLike", what: str = "instance") -> List[Path]:
    """Image files (``IMAGE_EXTENSIONS``, case-insensitive) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    stems = [p.stem for p in paths]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise InputError(f"{what} image folder {folder} has several images named {clash[0]!r} (different "
                         f"extensions); masks are matched by name, keep one")
    return paths


def read_image(path: "str | os.PathLike") -> np.ndarray:
    """Read an image file as uint8 ``H×W×3`` RGB, upright (EXIF orientation applied, as photo viewers show it, so
    masks drawn on the displayed photo fit)."""
    return read_rgb(path, upright=True)


def read_mask(path: "str | os.PathLike") -> np.ndarray:
    """Read a mask file as bool ``H×W``: any non-zero value (palette index, grey level or colour channel) is object.

    Covers DAVIS palette PNGs, 0/255 grey masks and PerSeg's coloured masks; an alpha channel is ignored.
    """
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "PA"):
                im = im.convert("RGB") if im.mode == "RGBA" else im.getchannel(0)
            arr = np.array(im)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise InputError(f"cannot read mask {path}: {err}") from None
    mask = arr.any(axis=2) if arr.ndim == 3 else arr != 0
    if not mask.any():
        raise MaskError(f"mask {path} has no foreground pixel (all values are 0)")
    return mask


def load_instance_images(folder: "str | os.PathLike", what: str = "instance") -> List[InstanceImage]:
    """Every image of ``folder`` (sorted by file name); an empty folder is an :class:`InputError`."""
    paths = list_images(folder, what)
    if not paths:
        raise InputError(f"{what} image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [InstanceImage(p, read_image(p)) for p in paths]


def _check_size(mask: np.ndarray, item: InstanceImage, mask_path: "str | os.PathLike") -> None:
    if mask.shape != item.image.shape[:2]:
        raise InputError(f"mask {mask_path} is {mask.shape[1]}×{mask.shape[0]} (W×H) but image {item.path} is "
                         f"{item.image.shape[1]}×{item.image.shape[0]}")


def masks_from_dir(items: Sequence[InstanceImage], mask_dir: "str | os.PathLike") -> None:
    """Give every image the mask of the same stem in ``mask_dir`` (``dog1.jpg`` ↔ ``dog1.png``, any image type)."""
    by_stem = {p.stem: p for p in list_images(mask_dir, "mask")}
    for item in items:
        path = by_stem.get(item.path.stem)
        if path is None:
            raise InputError(f"mask folder {mask_dir} has no mask for {item.name} (expected {item.path.stem}.png)")
        mask = read_mask(path)
        _check_size(mask, item, path)
        item.mask = mask


def find_reference(items: Sequence[InstanceImage], ref_image: Optional[str]) -> int:
    """Index of the reference photo: the one named ``ref_image`` (file name or stem), default the first."""
    if ref_image is None:
        return 0
    for i, item in enumerate(items):
        if ref_image in (item.name, item.path.stem):
            return i
    raise InputError(f"--ref-image {ref_image!r} is not one of the instance images: "
                     f"{', '.join(item.name for item in items)}")


def read_reference_mask(items: Sequence[InstanceImage], ref_mask: "str | os.PathLike",
                        ref_image: Optional[str] = None) -> int:
    """Read the one reference mask, check it against its photo and attach it; returns the photo's index."""
    index = find_reference(items, ref_image)
    mask = read_mask(ref_mask)
    _check_size(mask, items[index], ref_mask)
    items[index].mask = mask
    return index


def segment_with_persam(items: Sequence[InstanceImage], sam: torch.nn.Module, ref_index: int,
                        finetune: bool = False, finetune_iterations: int = 1000, progress: bool = True) -> None:
    """Segment the subject in every photo that has no mask yet, with PerSAM (``finetune``: PerSAM-F, trained for
    ``finetune_iterations`` AdamW steps) personalised on ``items[ref_index]`` and its mask. A photo where PerSAM
    finds nothing is a :class:`MaskError`."""
    from vos.methods import image_engine

    ref = items[ref_index]
    engine = (image_engine("persam_f", sam, iterations=finetune_iterations) if finetune
              else image_engine("persam", sam))
    engine.set_reference(ref.image, ref.mask)
    todo = [item for item in items if item.mask is None]
    for item in tqdm(todo, desc="PerSAM-F masks" if finetune else "PerSAM masks", disable=not progress):
        mask = np.asarray(engine.segment(item.image).mask, dtype=bool)
        if not mask.any():
            raise MaskError(f"PerSAM found no subject in {item.path}; give its mask with --mask-dir or leave "
                            f"the photo out")
        item.mask = mask


def save_masks(items: Sequence[InstanceImage], folder: "str | os.PathLike") -> List[Path]:
    """Write ``<stem>.png`` (grey 0/255, photo size) and ``<stem>_overlay.jpg`` for every photo; returns the PNGs."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for item in items:
            written.append(save_mask_and_overlay(folder, item.path.stem, item.image, item.mask))
    except OSError as err:
        raise OutputError(f"cannot write masks to {folder}: {err}") from None
    return written


def center_square(height: int, width: int) -> "tuple[int, int, int]":
    """``(top, left, size)`` of the largest centred square of an ``height × width`` picture."""
    size = min(height, width)
    return (height - size) // 2, (width - size) // 2, size


def crop_resize(array: torch.Tensor, resolution: int) -> torch.Tensor:
    """Centre square of ``array`` (float ``C×H×W``) resized to ``C×R×R``, ``R = resolution`` (antialiased
    bilinear)."""
    top, left, size = center_square(array.shape[-2], array.shape[-1])
    square = array[None, :, top:top + size, left:left + size]
    if size == resolution:
        return square[0].clone()
    return F.interpolate(square, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def image_tensor(image: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 ``H×W×3`` RGB → float32 ``3×R×R`` in [-1, 1] (the VAE's input range), centre-cropped and resized."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    return (crop_resize(x, resolution) * 2 - 1).clamp(-1, 1)


def latent_mask(mask: np.ndarray, resolution: int, scale_factor: int, mode: str = "soft") -> torch.Tensor:
    """bool ``H×W`` mask → float32 ``1×(R/f)×(R/f)`` latent weights (rule in the module docstring).

    ``scale_factor`` ``f`` must divide ``resolution``.
    """
    if mode not in LATENT_MASK_MODES:
        raise InputError(f"unknown latent mask mode {mode!r}: use one of {', '.join(LATENT_MASK_MODES)}")
    if resolution % scale_factor:
        raise InputError(f"resolution {resolution} is not a multiple of the VAE scale factor {scale_factor}")
    pixels = crop_resize(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None], resolution).clamp(0, 1)
    cells = F.avg_pool2d(pixels[None], scale_factor)[0]
    return (cells >= 0.5).float() if mode == "binary" else cells
