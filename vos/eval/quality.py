"""Quality figures of a model on a DAVIS-layout root beyond DAVIS J&F: the image mode (PerSAM / PerSAM-F segmenting
every frame of a sequence from frame 0 as the one-shot reference, scored like PerSeg) and prompt segmentation (one
click or one box per object on frame 0).

:func:`perseg_layout` lays a DAVIS root out as PerSeg (one "object" per sequence and object id), so that
``vos eval-perseg`` scores the image mode with its own metrics (mIoU pooled per object, Boundary IoU).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from vos.datasets.davis import DavisDataset
from vos.eval.iou import mask_counts
from vos.eval.report import write_mask_png


def perseg_layout(davis_root, out, sequences: Sequence[str], resolution: str = "480p") -> List[str]:
    """Write ``out/Images/<seq>_<id>/<stem>.jpg`` (symbolic links to the DAVIS frames) and
    ``out/Annotations/<seq>_<id>/<stem>.png`` (the object's binary ground truth, 255 = object) for every object of
    every sequence; frame ``00000`` is each object's reference. Returns the object names."""
    out = Path(out)
    names = []
    for seq in DavisDataset(davis_root, resolution=resolution, only=sequences):
        for obj in seq.object_ids:
            name = f"{seq.name}_{obj}"
            images, annotations = out / "Images" / name, out / "Annotations" / name
            images.mkdir(parents=True, exist_ok=True)
            annotations.mkdir(parents=True, exist_ok=True)
            for index, stem in enumerate(seq.frame_names):
                link = images / f"{stem}.jpg"
                if not link.exists():
                    os.symlink((seq.image_dir / f"{stem}.jpg").resolve(), link)
                write_mask_png(annotations / f"{stem}.png", seq.label_map(index) == obj)
            names.append(name)
    return names


def inner_point(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of the pixel of ``mask`` (``bool H×W``) farthest from its boundary (the click a person aims at the
    middle of an object would make; deterministic)."""
    import cv2

    dist = cv2.distanceTransform(np.ascontiguousarray(mask, np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def tight_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` inclusive pixel box of ``mask``."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


@dataclass(frozen=True)
class PromptScore:
    """Frame-0 IoU of one object segmented from one click (its :func:`inner_point`; SAM's best of three outputs)
    and from its :func:`tight_box`."""

    sequence: str
    obj_id: int
    click_iou: float
    box_iou: float


def prompt_scores(backend, davis_root, sequences: Sequence[str], resolution: str = "480p") -> List[PromptScore]:
    """One click and one box per object on frame 0 of each sequence through ``backend.prompt_logits``."""
    from vos.prompts import ObjectPrompt

    scores = []
    for seq in DavisDataset(davis_root, resolution=resolution, only=sequences):
        frame = next(seq.frames())
        emb = backend.encode(frame)
        for obj in seq.object_ids:
            gt = seq.first_label_map == obj
            prompts = [ObjectPrompt(obj, points=((*inner_point(gt), 1),)), ObjectPrompt(obj, box=tight_box(gt))]
            ious = []
            for logits in backend.prompt_logits(emb, prompts):
                inter, union, _ = mask_counts(gt, logits.cpu().numpy() > 0)
                ious.append(inter / union)
            scores.append(PromptScore(seq.name, obj, *ious))
    return scores
