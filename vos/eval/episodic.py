"""Shared conventions of the episodic one-shot benchmarks (``shared/specs/benchmarks.md`` §0).

* the pooled IoU meter (per-class background/foreground intersection and union sums, mIoU, FB-IoU, fold mean);
* the episode RNG (legacy ``numpy.random.RandomState`` seeded with 0, every draw a one-element choice without
  replacement, private to the episode generator so a model cannot consume it);
* the episode record and the evaluation resolution (query resized to ``size×size``, masks with legacy
  nearest-neighbour sampling exactly as ``torch.nn.functional.interpolate(mode="nearest")`` computes it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from vos.errors import DatasetError, EvaluationError

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


def episode_counts(gt: np.ndarray, pred: np.ndarray) -> Tuple[List[int], List[int]]:
    """``([I_bg, I_fg], [U_bg, U_fg])`` of one episode (``bool H×W`` masks of the same shape)."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    inter_fg = int(np.count_nonzero(gt & pred))
    union_fg = int(np.count_nonzero(gt | pred))
    inter_bg = int(np.count_nonzero(~gt & ~pred))
    union_bg = int(np.count_nonzero(~gt | ~pred))
    return [inter_bg, inter_fg], [union_bg, union_fg]


class PooledMeter:
    """Per-class background/foreground intersection and union sums over a fold's classes.

    Class IoU = ΣI / max(ΣU, 1) (a class never seen scores 0 and is kept); mIoU = mean foreground class IoU × 100;
    FB-IoU = mean over {bg, fg} of (ΣI over classes / ΣU over classes) × 100. Never a mean of per-episode IoU.
    """

    def __init__(self, num_classes: int):
        if num_classes <= 0:
            raise EvaluationError("a fold needs at least one class")
        self.intersection = np.zeros((2, num_classes), dtype=np.int64)
        self.union = np.zeros((2, num_classes), dtype=np.int64)
        self.episodes = np.zeros(num_classes, dtype=np.int64)

    def add(self, class_index: int, intersection: Sequence[int], union: Sequence[int]) -> None:
        """Add one episode's ``[bg, fg]`` counts to class ``class_index``."""
        if not 0 <= class_index < self.episodes.size:
            raise EvaluationError(f"class index {class_index} outside the fold's {self.episodes.size} classes")
        self.intersection[:, class_index] += np.asarray(intersection, dtype=np.int64)
        self.union[:, class_index] += np.asarray(union, dtype=np.int64)
        self.episodes[class_index] += 1

    def class_iou(self) -> np.ndarray:
        """``float64 (2, C)``: background and foreground IoU of every class."""
        return self.intersection / np.maximum(self.union, 1)

    def miou(self, seen_only: bool = False) -> float:
        """Mean foreground IoU × 100 over all classes (``seen_only``: over classes with at least one episode)."""
        iou = self.class_iou()[1]
        if seen_only:
            iou = iou[self.episodes > 0]
        return 100.0 * float(iou.mean()) if iou.size else 0.0

    def fb_iou(self) -> float:
        """Mean over {bg, fg} of pooled intersection / pooled union, × 100."""
        return 100.0 * float(np.mean(self.intersection.sum(1) / np.maximum(self.union.sum(1), 1)))


def fold_mean(values: Iterable[float]) -> float:
    """Headline number of a benchmark: the plain mean of its per-fold values (every fold weighs the same)."""
    values = list(values)
    if not values:
        raise EvaluationError("no fold was evaluated")
    return float(np.mean(values))


def summary(meter: PooledMeter, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Fold summary for reports: mIoU, FB-IoU, class and episode counts, per-class IoU."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(meter.episodes.size)]
    iou = meter.class_iou()
    return {"mIoU": meter.miou(), "FB-IoU": meter.fb_iou(), "classes": int(meter.episodes.size),
            "classes_with_episodes": int((meter.episodes > 0).sum()),
            "mIoU_classes_with_episodes": meter.miou(seen_only=True),
            "episodes": int(meter.episodes.sum()),
            "per_class": [{"class": n, "episodes": int(meter.episodes[i]), "IoU": 100.0 * float(iou[1, i]),
                           "intersection": int(meter.intersection[1, i]), "union": int(meter.union[1, i])}
                          for i, n in enumerate(names)]}
