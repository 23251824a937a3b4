"""Image IoU metrics: pooled per-object IoU / mAcc (PerSeg) and Boundary IoU (Cheng et al., CVPR 2021).

Masks are ``bool H×W`` arrays (row, col indexing); ground truth and prediction must have the same shape.
Spec: ``shared/specs/benchmarks.md`` §1 (PerSeg) and §2 (Boundary IoU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import cv2
import numpy as np

from vos.errors import EvaluationError

AGGREGATES = ("object", "image")


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    return gt, pred


def mask_counts(gt: np.ndarray, pred: np.ndarray) -> Tuple[int, int, int]:
    """``(intersection, union, |gt|)`` pixel counts of two ``bool H×W`` masks."""
    gt, pred = _check_pair(gt, pred)
    return int(np.count_nonzero(gt & pred)), int(np.count_nonzero(gt | pred)), int(np.count_nonzero(gt))


def boundary_distance(height: int, width: int, ratio: float) -> int:
    """Band width ``d = round(ratio · √(H² + W²))`` (Python ``round``: ties to even), at least 1."""
    if ratio <= 0:
        raise EvaluationError(f"boundary dilation ratio must be positive, got {ratio}")
    return max(1, int(round(ratio * math.sqrt(height * height + width * width))))


def boundary_band(mask: np.ndarray, d: int) -> np.ndarray:
    """Inner boundary band ``bool H×W``: mask pixels within chessboard distance ``d`` of a non-mask pixel.

    Pixels outside the image count as non-mask, so a mask touching the image edge has a band along that edge.
    Equivalent to padding one background pixel all round, eroding ``d`` times with a 3×3 square and subtracting.
    """
    mask = np.asarray(mask, dtype=bool)
    # One erosion with a (2d+1)² square equals d erosions with a 3×3 square (chessboard distance); the constant 0
    # border plays the role of the background padding.
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    eroded = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return mask & ~eroded


def boundary_counts(gt: np.ndarray, pred: np.ndarray, ratio: float = 0.02) -> Tuple[int, int]:
    """``(|band(G) ∩ band(P)|, |band(G) ∪ band(P)|)`` with ``d`` from the masks' own size (full diagonal)."""
    gt, pred = _check_pair(gt, pred)
    d = boundary_distance(gt.shape[0], gt.shape[1], ratio)
    bg, bp = boundary_band(gt, d), boundary_band(pred, d)
    return int(np.count_nonzero(bg & bp)), int(np.count_nonzero(bg | bp))


def boundary_iou(gt: np.ndarray, pred: np.ndarray, ratio: float = 0.02) -> float:
    """Per-image Boundary IoU. Both bands empty: 1.0; exactly one empty: 0.0."""
    gt, pred = _check_pair(gt, pred)
    d = boundary_distance(gt.shape[0], gt.shape[1], ratio)
    bg, bp = boundary_band(gt, d), boundary_band(pred, d)
    if not bg.any() and not bp.any():
        return 1.0
    if not bg.any() or not bp.any():
        return 0.0
    return float(np.count_nonzero(bg & bp) / np.count_nonzero(bg | bp))


@dataclass
class ObjectScore:
    """Counts of one object over its test images (pooled: sums of per-image pixel counts)."""

    name: str
    images: int = 0
    intersection: int = 0
    union: int = 0
    gt_area: int = 0
    boundary_intersection: int = 0
    boundary_union: int = 0
    image_biou: List[float] = field(default_factory=list)
    empty_band_images: int = 0      # images where the GT band or the predicted band is empty

    @property
    def iou(self) -> float:
        """ΣI / ΣU (0 when the union stays empty)."""
        return self.intersection / self.union if self.union else 0.0

    @property
    def acc(self) -> float:
        """ΣI / Σ|GT| (0 when the object never appears)."""
        return self.intersection / self.gt_area if self.gt_area else 0.0

    def biou(self, aggregate: str = "object") -> float:
        """Boundary IoU pooled over the images (``object``) or mean of per-image values (``image``)."""
        if aggregate == "object":
            return self.boundary_intersection / self.boundary_union if self.boundary_union else 0.0
        if aggregate == "image":
            return float(np.mean(self.image_biou)) if self.image_biou else 0.0
        raise EvaluationError(f"unknown bIoU aggregation {aggregate!r}: use one of {', '.join(AGGREGATES)}")


class PooledIoU:
    """PerSeg scoring: per-object pooled IoU, mAcc and bIoU, then the mean over objects.

    >>> meter = PooledIoU(biou_ratio=0.02)
    >>> meter.add("dog", gt_mask, pred_mask)      # bool H×W each, at the original resolution
    >>> meter.summary("object")["mIoU"]           # percent
    """

    def __init__(self, biou_ratio: float = 0.02):
        boundary_distance(1, 1, biou_ratio)  # validates the ratio
        self.biou_ratio = biou_ratio
        self.objects: Dict[str, ObjectScore] = {}

    def add(self, name: str, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one test image of object ``name``."""
        gt, pred = _check_pair(gt, pred)
        score = self.objects.setdefault(name, ObjectScore(name))
        inter, union, area = mask_counts(gt, pred)
        d = boundary_distance(gt.shape[0], gt.shape[1], self.biou_ratio)
        bg, bp = boundary_band(gt, d), boundary_band(pred, d)
        b_inter, b_union = int(np.count_nonzero(bg & bp)), int(np.count_nonzero(bg | bp))
        score.images += 1
        score.intersection += inter
        score.union += union
        score.gt_area += area
        score.boundary_intersection += b_inter
        score.boundary_union += b_union
        if not bg.any() or not bp.any():
            score.empty_band_images += 1
            score.image_biou.append(1.0 if not bg.any() and not bp.any() else 0.0)
        else:
            score.image_biou.append(b_inter / b_union)

    def summary(self, aggregate: str = "object") -> Dict[str, float]:
        """Means over objects, in percent: ``mIoU``, ``mAcc``, ``bIoU``; plus image/object/empty-band counts."""
        scores = list(self.objects.values())
        if not scores:
            raise EvaluationError("no test image was scored")
        return {"mIoU": 100.0 * float(np.mean([s.iou for s in scores])),
                "mAcc": 100.0 * float(np.mean([s.acc for s in scores])),
                "bIoU": 100.0 * float(np.mean([s.biou(aggregate) for s in scores])),
                "objects": len(scores),
                "images": sum(s.images for s in scores),
                "empty_band_images": sum(s.empty_band_images for s in scores)}
