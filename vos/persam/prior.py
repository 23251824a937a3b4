"""Location prior of PerSAM (spec ``shared/specs/persam.md`` §1): reference grid mask, target vectors, location
confidence map, point selection, target-guided attention bias and box prompts.

Coordinate conventions: maps are row-major ``[y, x]`` arrays/tensors; points are ``(x, y)`` pixel coordinates of the
original image (x = column, y = row), as segment_anything expects; boxes are ``[x0, y0, x1, y1]``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from vos.errors import InputError, MaskError
from vos.models.backend import Backend, Features


def reference_mask_rgb(mask: np.ndarray, value: int = 128) -> np.ndarray:
    """A reference mask as the 3-channel ``uint8 H×W×3`` array the reference implementation feeds to SAM.

    A 3-channel array is returned unchanged (PerSeg annotations: foreground R = 128). A 2-D mask (bool or labels,
    non-zero = object) is painted ``(value, 0, 0)``: 128 is PerSeg's convention, 215 the video scripts'.
    """
    if mask.ndim == 3 and mask.shape[2] == 3:
        return np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise InputError(f"reference mask must be H×W or H×W×3, got shape {mask.shape}")
    out = np.zeros(mask.shape + (3,), np.uint8)
    out[..., 0] = np.where(mask != 0, value, 0)
    return out


@torch.no_grad()
def grid_mask(backend: Backend, mask_rgb: np.ndarray, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Reference mask pooled onto the embedding grid (§1.1): ``bool grid_h×grid_w`` tensor.

    Reproduces the reference exactly: the RGB mask is resized like the image, normalised **like an image**
    (:meth:`Backend.input_tensor`), padded, bilinearly reduced to the grid; a cell is foreground iff channel 0 > 0,
    i.e. iff the interpolated R value exceeds the pixel mean 123.675. Padding cells are never foreground.
    """
    pooled = F.interpolate(backend.input_tensor(mask_rgb), size=grid_hw, mode="bilinear")
    return pooled.squeeze()[0] > 0


def reference_cells(features: torch.Tensor, grid: torch.Tensor, what: str = "reference mask") -> torch.Tensor:
    """The embedding vectors under the grid mask: ``N×C`` (``features``: ``1×C×h×w``).

    Raises :class:`MaskError` if no cell is covered (the reference would produce NaN).
    """
    if not bool(grid.any()):
        raise MaskError(f"{what} is too small: it does not cover one {16}×{16}-pixel feature cell of the "
                        f"1024-pixel SAM input (a grid cell counts when about 3 of its 4 centre pixels lie inside "
                        f"the object); use a larger object or mask")
    return features.squeeze(0).permute(1, 2, 0)[grid]


def mean_target(cells: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Training-free PerSAM target (§1.2): raw mean embedding ``1×1×C`` (semantic prompt), its unit vector ``1×C``."""
    embedding = cells.mean(0).unsqueeze(0)
    return embedding.unsqueeze(0), embedding / embedding.norm(dim=-1, keepdim=True)


def max_mean_target(cells: torch.Tensor) -> torch.Tensor:
    """PerSAM-F / video target (§1.2): unit vector of ``(channel-wise max)/2 + mean/2``, shape ``1×C``."""
    target = (torch.max(cells, dim=0)[0] / 2 + cells.mean(0) / 2).unsqueeze(0)
    return target / target.norm(dim=-1, keepdim=True)


def normalized_cells(features: torch.Tensor) -> torch.Tensor:
    """Per-cell unit embeddings ``C×(h·w)`` of ``1×C×h×w`` features (normalised over channels, C-first layout)."""
    feat = features.squeeze(0)
    c, h, w = feat.shape
    return (feat / feat.norm(dim=0, keepdim=True)).reshape(c, h * w)


def normalized_cells_hwc(features: torch.Tensor) -> torch.Tensor:
    """The same unit embeddings computed in ``h×w×C`` layout, as PerSAM-F's reference self-location does."""
    feat = features.squeeze(0).permute(1, 2, 0)
    h, w, c = feat.shape
    return (feat / feat.norm(dim=-1, keepdim=True)).permute(2, 0, 1).reshape(c, h * w)


@torch.no_grad()
def similarity(backend: Backend, target: torch.Tensor, cells: torch.Tensor, emb: Features
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Location confidence (§1.3). ``target``: ``K×C`` unit vectors, ``cells``: ``C×(h·w)`` unit embeddings.

    Returns the grid map ``K×h×w`` and the full map ``K×H×W`` (×4 bilinear, then SAM's mask post-processing).
    """
    h, w = emb.features.shape[-2:]
    grid = (target @ cells).reshape(target.shape[0], 1, h, w)
    full = F.interpolate(grid, scale_factor=4, mode="bilinear")
    full = backend.postprocess(emb, full)
    return grid[:, 0], full[:, 0]


def top_points(sim: torch.Tensor, k: int, largest: bool = True) -> np.ndarray:
    """The ``k`` highest (or lowest) pixels of an ``H×W`` map as ``int k×2`` ``(x, y)`` points (§1.4, torch.topk)."""
    idx = sim.flatten().topk(k, largest=largest)[1]
    width = sim.shape[1]
    rows = idx // width
    return torch.stack((idx - rows * width, rows), dim=1).cpu().numpy()


def attention_bias(sim: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
    """Target-guided attention bias (§2 step 3): sigmoid of the z-scored ``H×W`` map (unbiased std), resized
    straight to the grid (ignoring padding, as the reference does), flattened to ``1×1×1×(h·w)``."""
    z = (sim - sim.mean()) / torch.std(sim)
    z = F.interpolate(z[None, None], size=grid_hw, mode="bilinear")
    return z.sigmoid().unsqueeze(0).flatten(3)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Inclusive extent ``[x_min, y_min, x_max, y_max]`` of a non-empty ``bool H×W`` mask (§1.5), from the rows and
    columns that hold a pixel (the extent of ``np.nonzero``'s coordinates, without listing every pixel)."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([xs[0], ys[0], xs[-1], ys[-1]])


def expand_box(box: np.ndarray, hw: Tuple[int, int], margin: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """Video box prompt (§5) from a tight box ``[x0, y0, x1, y1]``: expanded by ``margin`` px, lower ends clamped to
    0 and upper ends to W / H (one past the last pixel, as the reference does); plus the expanded box's centre
    ``(x, y)`` (integer floor)."""
    height, width = hw
    x0, y0, x1, y1 = (int(v) for v in box)
    x0 = 0 if x0 - margin <= 0 else x0 - margin
    y0 = 0 if y0 - margin <= 0 else y0 - margin
    x1 = width if x1 + margin >= width else x1 + margin
    y1 = height if y1 + margin >= height else y1 + margin
    return np.array([x0, y0, x1, y1]), np.array([(x0 + x1) // 2, (y0 + y1) // 2])


def label_boxes(label_map: np.ndarray, ids) -> dict:
    """Tight boxes ``{id: [x0, y0, x1, y1]}`` of the given ids in a ``uint8 H×W`` label map (``None`` if absent)."""
    boxes = {}
    for obj_id in ids:
        mask = label_map == obj_id
        boxes[obj_id] = mask_box(mask) if mask.any() else None
    return boxes
