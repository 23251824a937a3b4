"""Clicks and boxes on the first frame → first-frame masks, with the model's own prompt decoder (the command line's
``--point`` / ``--box`` and the browser app).

Coordinates are pixels of the first frame in ``(x, y)`` order (x = column, y = row); a box is ``[x0, y0, x1, y1]``.
A point's label is 1 (the object) or 0 (background). Each family decodes them its own way (SAM: a single point with
no box takes the multimask output with the best predicted IoU, what ``SamPredictor`` recommends for one ambiguous
click, and anything else the single-mask output; SAM 2.1: as ``add_new_points_or_box``). Where two objects' masks
overlap, the larger logit wins (ties: the lower id).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from vos.errors import InputError, MaskError

Point = Tuple[float, float, int]
Box = Tuple[float, float, float, float]


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompts of one object: ``points`` ``((x, y, label), …)`` and an optional ``box`` ``(x0, y0, x1, y1)``."""

    obj_id: int
    points: Tuple[Point, ...] = ()
    box: Optional[Box] = None

    def check(self, size: Tuple[int, int], source: str = "the first frame") -> None:
        """A clear :class:`InputError` for an id outside 1..255, no prompt, a label other than 0/1, a point or box
        outside the frame of ``size`` = ``(height, width)``, or an empty box."""
        height, width = size
        if not 1 <= self.obj_id <= 255:
            raise InputError(f"object id {self.obj_id} is outside 1..255 (ids are palette indices)")
        if not self.points and self.box is None:
            raise InputError(f"object {self.obj_id} has no point and no box")
        for x, y, label in self.points:
            if label not in (0, 1):
                raise InputError(f"point ({x:g}, {y:g}) of object {self.obj_id}: label {label} is not 1 (object) "
                                 f"or 0 (background)")
            if not (0 <= x < width and 0 <= y < height):
                raise InputError(f"point ({x:g}, {y:g}) of object {self.obj_id} is outside {source} "
                                 f"({width}×{height}, W×H; points are (x, y) pixels)")
        if self.points and not any(label == 1 for _, _, label in self.points) and self.box is None:
            raise InputError(f"object {self.obj_id} has only background points: add a point on the object "
                             f"(label 1) or a box")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) of object {self.obj_id} is empty or outside "
                                 f"{source} ({width}×{height}, W×H; boxes are x0,y0,x1,y1 pixels)")


def _numbers(text: str, count: Sequence[int], what: str) -> List[float]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in count:
        raise InputError(f"{what} {text!r}: expected {' or '.join(str(c) for c in count)} comma-separated numbers")
    return values


def parse_point(text: str) -> Point:
    """``"x,y"`` or ``"x,y,label"`` → ``(x, y, label)`` (label 1 by default)."""
    values = _numbers(text, (2, 3), "--point")
    label = values[2] if len(values) == 3 else 1
    if label not in (0, 1):
        raise InputError(f"--point {text!r}: the label must be 1 (object) or 0 (background)")
    return values[0], values[1], int(label)


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` → a box."""
    x0, y0, x1, y1 = _numbers(text, (4,), "--box")
    return x0, y0, x1, y1


@dataclass
class PromptGroups:
    """Prompts in command-line order: ``--object-id N`` starts object N; the ``--point`` / ``--box`` options after it
    belong to it (before any ``--object-id``: object 1)."""

    current: int = 1
    objects: Dict[int, Dict] = field(default_factory=dict)

    def start(self, obj_id: int) -> None:
        self.current = obj_id

    def add_point(self, point: Point) -> None:
        self.objects.setdefault(self.current, {"points": [], "box": None})["points"].append(point)

    def add_box(self, box: Box) -> None:
        entry = self.objects.setdefault(self.current, {"points": [], "box": None})
        if entry["box"] is not None:
            raise InputError(f"object {self.current} has two boxes: give one box per object (--object-id N "
                             f"starts another object)")
        entry["box"] = box

    def prompts(self) -> Tuple[ObjectPrompt, ...]:
        return tuple(ObjectPrompt(i, tuple(e["points"]), e["box"]) for i, e in sorted(self.objects.items()))


def prompt_logits(model, frame: np.ndarray, prompts: Sequence[ObjectPrompt], features=None) -> List[torch.Tensor]:
    """Each object's logits ``float32 H×W`` on ``frame`` (RGB ``uint8 H×W×3``) from its prompts, with the prompt
    decoder of ``model``'s family (its backend's ``prompt_logits``). ``features``: the frame's features if already
    computed (``Tracker.features(frame)``), so the encoder does not run twice."""
    from vos.models.backend import backend_for, check_image

    check_image(frame, "first frame")
    for p in prompts:
        p.check(frame.shape[:2])
    backend = backend_for(model)
    return backend.prompt_logits(features if features is not None else backend.encode(frame), prompts)


@torch.no_grad()
def masks_from_prompts(model, frame: np.ndarray, prompts: Sequence[ObjectPrompt], features=None) -> np.ndarray:
    """The first-frame label map (``uint8 H×W``, 0 = background) of ``prompts``; an object whose prompts give an
    empty mask is a :class:`MaskError`. ``features``: as for :func:`prompt_logits`."""
    if not prompts:
        raise InputError("no prompt: give --point x,y or --box x0,y0,x1,y1 (or a mask)")
    ids = [p.obj_id for p in prompts]
    if len(set(ids)) != len(ids):
        raise InputError(f"object ids repeat in the prompts: {ids}")
    from vos.trackers.result import argmax_label_map

    label_map = argmax_label_map(torch.stack([t.float().cpu() for t in prompt_logits(model, frame, prompts,
                                                                                      features)]), ids)
    for p in prompts:
        if not (label_map == p.obj_id).any():
            raise MaskError(f"the prompts of object {p.obj_id} give an empty mask on the first frame: click on the "
                            f"object or draw a box around it")
    return label_map
