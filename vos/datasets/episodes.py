"""Episodic sampling of the one-shot benchmarks (``shared/specs/benchmarks.md`` §0).

* the episode RNG (legacy ``numpy.random.RandomState`` seeded with 0, every draw a one-element choice without
  replacement, private to the episode generator so a model cannot consume it);
* the episode record and the evaluation resolution (images resized to ``size×size``, masks with legacy
  nearest-neighbour sampling exactly as ``torch.nn.functional.interpolate(mode="nearest")`` computes it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np
from PIL import Image

from vos.errors import DatasetError

EPISODE_SEED = 0


def check_fold_shot(benchmark: str, fold: int, folds: int, shot: int) -> None:
    """A :class:`DatasetError` for a fold outside ``0..folds-1`` or a shot below 1."""
    if not 0 <= fold < folds:
        valid = "a single fold (0)" if folds == 1 else f"folds 0-{folds - 1}"
        raise DatasetError(f"{benchmark} has {valid}, got fold {fold}")
    if shot < 1:
        raise DatasetError(f"shot must be at least 1, got {shot}")


def episode_rng() -> np.random.RandomState:
    """A fresh legacy generator in the state ``np.random.seed(0)`` leaves the global one in."""
    return np.random.RandomState(EPISODE_SEED)


def choose_index(rng: np.random.RandomState, n: int, what: str = "population") -> int:
    """Index drawn as ``rng.choice(population, 1, replace=False)[0]`` would draw it.

    A one-element choice without replacement permutes the whole population (it consumes the stream differently
    from an integer draw); drawing from ``range(n)`` consumes it exactly as drawing from any length-``n`` sequence.
    """
    if n <= 0:
        raise DatasetError(f"cannot draw from an empty {what}")
    return int(rng.choice(n, 1, replace=False)[0])


@dataclass(frozen=True)
class Episode:
    """One episode: the query and its supports (dataset-specific sample records, each with a string ``key``).

    ``class_index`` is the class's position in the fold's class list (the meter's key).
    """

    index: int
    class_index: int
    query: Any
    supports: Tuple[Any, ...]


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each destination index, ``int64 (out_size,)``: legacy nearest-neighbour sampling.

    ``floor(dst · (in/out))`` with the scale and the product in float32, as PyTorch's ``nearest`` mode computes
    it (HSNet and Matcher resize masks with it). This equals the exact ``floor(dst · in / out)`` for most sizes
    (e.g. 224 → 518) but not all (e.g. 21 → 518 differs at 4 indices); float32 is the reference behaviour.
    """
    if in_size == out_size:
        return np.arange(out_size, dtype=np.int64)
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def resize_mask_nearest(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize a ``H×W`` mask to ``size = (height, width)`` with legacy nearest-neighbour sampling."""
    mask = np.asarray(mask)
    rows = nearest_indices(mask.shape[0], size[0])
    cols = nearest_indices(mask.shape[1], size[1])
    return mask[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize an RGB ``uint8 H×W×3`` image to ``size = (height, width)``, ignoring aspect ratio.

    Pillow bilinear (antialiased when shrinking), as ``torchvision.transforms.Resize`` does on PIL images in
    HSNet / Matcher.
    """
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
