"""The pooled IoU meter of the episodic one-shot benchmarks (``shared/specs/benchmarks.md`` §0): per-class
background/foreground intersection and union sums, mIoU, FB-IoU, the fold mean. (Episode sampling and the evaluation
resolution are data preparation: :mod:`vos.datasets.episodes`.)
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from vos.errors import EvaluationError


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
